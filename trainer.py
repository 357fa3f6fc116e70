"""Training epochs, evaluation, and the run directory's checkpoint/resume files.

The loop is plain (forward, loss, backward, step); stage-specific work (the Hinge search's penalty, lr
adjustment and proximal step) comes in through BatchHooks. Errors and losses are accumulated on the
device; the host synchronises only at log points and at the end of an epoch. A Session bundles what the
stages of one run share; save_epoch/restore_history/resume_point keep the original's file names.
"""

import contextlib
import gc
import json
import time
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from data import Data
from data.batches import TensorBatches
from loss import ErrorMeter, Loss, distillation
from utils import plot
from utils.board import Board
from utils.distributed import SINGLE, World, compiled, wrapped
from utils.errors import NonFiniteError
from utils.io import Commit, load_torch, save_json, save_torch
from utils.rundir import RunLog
from utils.schedule import StepSchedule
from utils.signals import stop_if_asked, stop_together
from utils.steps import BatchHooks, set_learning_rates

DISTILL_WEIGHT, TEMPERATURE = 0.4, 4.0


def describe_lrs(optimizer: torch.optim.Optimizer) -> str:
    lrs = [g['lr'] for g in optimizer.param_groups]
    if len(lrs) == 1:
        return f'Learning rate: {lrs[0]:.2}'
    return 'Learning rate: ' + ' / '.join(f'Group {i} - {lr:.2}' for i, lr in enumerate(lrs))


NONFINITE = ((1, 'the loss'), (2, 'the gradients'), (4, 'a sparsity-inducing matrix'))


def gradients_finite(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """A device flag: every gradient the optimizer holds is finite (their total norm is)."""
    grads = [p.grad for g in optimizer.param_groups for p in g['params'] if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool)
    return torch.isfinite(torch.nn.utils.get_total_norm(grads))


def nonfinite_code(loss: torch.Tensor, gradients_ok: torch.Tensor, matrices_bad: torch.Tensor | None) -> torch.Tensor:
    """Bits of NONFINITE for one batch, computed on the device."""
    code = (~torch.isfinite(loss.detach())).to(torch.uint8) | ((~gradients_ok).to(torch.uint8) << 1)
    return code | (matrices_bad.to(torch.uint8) << 2) if matrices_bad is not None else code


def autocast(device: torch.device, precision: str):
    """Mixed precision for --precision half/bf16; a no-op for single."""
    if precision == 'single':
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if precision == 'half' else torch.bfloat16)


def forward(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits; 5-D input (batch, crops, C, H, W) averages the logits over the crops."""
    if images.dim() == 5:
        b, n = images.shape[:2]
        return net(images.flatten(0, 1)).view(b, n, -1).mean(1)
    return net(images)


class Trainer:
    """Trains and evaluates one network on one data set, logging in the original format. With several
    processes each trains on its share of every batch through DDP, and every metric covers all of them."""

    def __init__(self, args: Namespace, net: nn.Module, criterion: nn.Module, data: Data, log: RunLog,
                 device: torch.device, world: World = SINGLE):
        self.args, self.criterion = args, criterion
        self.data, self.log, self.device, self.world = data, log, device, world
        self.teacher: nn.Module | None = None
        self.eval_images_per_second = self.eval_seconds = 0.0
        self.set_network(net)

    def set_network(self, net: nn.Module) -> None:
        """Train `net` from now on (again after compression changed its shapes): DDP and torch.compile are
        applied to it here. A previous DDP wrapper is destroyed first: it holds the gradient accumulators of
        the parameters at their old shapes (a full collection, so only where there is a wrapper: not in one process
        without --compile). Channels-last: the faster layout for convolutions on CPU and GPU."""
        wrapper, self.model = getattr(self, 'model', None), None
        if wrapper is not None and wrapper is not self.net:
            del wrapper
            gc.collect()
        self.net = net.to(memory_format=torch.channels_last)
        self.model = compiled(wrapped(net, self.world, self.device), self.args.compile, self.log)

    def train_epoch(self, epoch: int, optimizer: torch.optim.Optimizer, lr_factor: float,
                    hooks: BatchHooks, stream: int) -> dict:
        """One pass over the training set; returns mean loss, errors, throughput."""
        args, net, loader, world = self.args, self.net, self.data.train, self.world
        torch.manual_seed(args.seed * 1_000_003 + stream)
        loader.set_epoch(stream)
        net.train()
        hooks.begin_epoch(lr_factor)
        meter = ErrorMeter(self.device)
        bad = torch.zeros(len(loader), dtype=torch.uint8, device=self.device)
        start = last_print = fetched = time.perf_counter()
        seen, data_time = 0.0, 0.0
        bar = tqdm(loader, total=len(loader), ncols=80, leave=False, disable=None if world.main else True,
                   desc=f'epoch {epoch}')
        for batch, (images, labels) in enumerate(bar):
            data_time += time.perf_counter() - fetched
            hooks.zero_grad(optimizer)
            with autocast(self.device, args.precision):
                logits = forward(self.model, images)
                nll = self.criterion(logits.float(), labels)
            kd = None
            if self.teacher is not None:
                with torch.no_grad(), autocast(self.device, args.precision):
                    teacher_logits = self.teacher(images)
                kd = distillation(logits.float(), teacher_logits.float(), TEMPERATURE)
            share = loader.share_weight(batch, labels.shape[0])
            loss = (nll if kd is None else kd * DISTILL_WEIGHT + nll * (1 - DISTILL_WEIGHT)) * share
            extra = hooks.extra_loss()
            if extra is not None:
                loss = loss + extra
            loss.backward()
            gradients_ok = gradients_finite(optimizer)
            hooks.after_backward(optimizer, lr_factor)
            hooks.step(optimizer)
            hooks.after_step(batch, optimizer)
            meter.update(nll, logits, labels)
            bad[batch] = nonfinite_code(loss, gradients_ok, hooks.nonfinite())
            seen += labels.shape[0] * world.size / share
            where = f'epoch {epoch}, batch {batch + 1} of {len(loader)}'
            if not world.distributed:
                stop_if_asked(where)
            if (batch + 1) % args.print_every == 0:
                self._check_finite(bad, hooks, epoch)
                stop_together(where, world)
                now = time.perf_counter()
                self._log_progress(seen, loss, kd, meter, hooks, now - last_print - data_time, data_time)
                last_print, data_time = now, 0.0
            fetched = time.perf_counter()
        bar.close()
        self._check_finite(bad, hooks, epoch)
        stop_together(f'epoch {epoch}', world)
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        train_loss, top1, top5 = meter.result(world)
        return {'train_loss': train_loss, 'train_top1_err': top1, 'train_top5_err': top5,
                'images_per_second': seen / max(seconds, 1e-9), 'seconds': seconds}

    def _check_finite(self, bad: torch.Tensor, hooks: BatchHooks, epoch: int) -> None:
        """Stop at the first batch whose loss, gradients or matrices were not finite on any process (one host
        read)."""
        if self.world.distributed:
            bad = bad.clone()
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bool(bad.any()):
            first = int(bad.nonzero()[0])
            code = int(bad[first])
            what = ' and '.join(name for bit, name in NONFINITE if code & bit)
            raise NonFiniteError(f'{what} became NaN/inf in epoch {epoch}, batch {first + 1}; the run stopped and '
                                 'its last finished epoch is kept; lower --lr or --regularization_factor.')

    def _log_progress(self, seen: float, loss: torch.Tensor, kd, meter: ErrorMeter, hooks: BatchHooks,
                      model_seconds: float, data_seconds: float) -> None:
        total = self.data.train.num_samples * (1 if isinstance(self.data.train, TensorBatches) else self.world.size)
        nll, top1, top5 = meter.result(self.world)
        seen = round(seen)
        line = f'{seen}/{total} ({100.0 * seen / total:.0f}%)\t'
        if hooks.hinge_format:
            line += f'Total: {float(loss.detach()):.3f}' + hooks.status()
            if kd is not None:
                line += f' / Dis: {float(kd):.3f}'
            line += f' / NLL: {nll:.3f}'
        else:
            line += f'NLL: {nll:.3f}'
        line += f'\tTop1: {top1:.2f} / Top5: {top5:.2f}\tTime: {model_seconds:.1f}+{data_seconds:.1f}s'
        self.log.write(line)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """(loss, top-1 error %, top-5 error %) on the test set, in eval mode (the mode is restored)."""
        training = self.net.training
        self.net.eval()
        meter = ErrorMeter(self.device)
        start = time.perf_counter()
        for images, labels in tqdm(self.data.test, ncols=80, leave=False, disable=None if self.world.main else True,
                                   desc='test'):
            if not self.world.distributed:
                stop_if_asked('the evaluation')
            with autocast(self.device, self.args.precision):
                logits = forward(self.net, images)
            meter.update(self.criterion(logits.float(), labels), logits, labels)
        result = meter.result(self.world)
        self.eval_seconds = time.perf_counter() - start
        self.eval_images_per_second = meter.count * self.world.size / max(self.eval_seconds, 1e-9)
        self.net.train(training)
        return result


class History:
    """train_log.pt / test_log.pt (rows: loss, top-1, top-5), loss plots and results.json."""

    def __init__(self, run_dir: Path, results: dict, board: Board):
        self.dir, self.board = run_dir, board
        self.log_train = torch.zeros(0, 3)
        self.log_test = torch.zeros(0, 3)
        self.results = dict(results, history=[])

    def restore(self, results: dict) -> None:
        """Continue an earlier run: its history (and the logs derived from it) and its extra results."""
        self.results.update({k: v for k, v in results.items() if k not in self.results or k == 'history'})
        trained = [h for h in self.results['history'] if h['stage'] != 'test']
        self.log_test = torch.tensor([[h['loss'], h['top1_err'], h['top5_err']] for h in trained]).view(-1, 3)
        self.log_train = torch.tensor([[h['train_loss'], h['train_top1_err'], h['train_top5_err']]
                                       for h in trained if 'train_loss' in h]).view(-1, 3)

    def add_epoch(self, stage: str, epoch: int, train: dict | None, test: tuple, extra: dict) -> None:
        loss, top1, top5 = test
        if train is not None:
            row = torch.tensor([[train['train_loss'], train['train_top1_err'], train['train_top5_err']]])
            self.log_train = torch.cat([self.log_train, row])
        self.log_test = torch.cat([self.log_test, torch.tensor([[loss, top1, top5]])])
        entry = {'stage': stage, 'epoch': epoch, 'loss': loss, 'top1_err': top1, 'top5_err': top5}
        entry.update(train or {})
        entry.update(extra)
        self.results['history'].append(entry)
        self.board.add_epoch(entry)
        stage_rows = [h for h in self.results['history'] if h['stage'] == stage]
        self.results.update(stage=stage, epoch=epoch, loss=loss, top1_err=top1, top5_err=top5,
                            best_top1_err=min(h['top1_err'] for h in stage_rows),
                            images_per_second=(train or {}).get('images_per_second'))
        self.results.update({k: v for k, v in extra.items() if k in self.results})

    def is_best(self, stage: str, column: int) -> bool:
        """Whether the last test row is the best of its stage (--top 1: top-1 error, -1: top-5 error)."""
        key = 'top1_err' if column == 1 else 'top5_err'
        rows = [h[key] for h in self.results['history'] if h['stage'] == stage]
        return rows[-1] <= min(rows)

    def best_of_stage(self, stage: str, key: str) -> tuple[float, int]:
        """(best value, its epoch number) of a history column within one stage."""
        rows = [(h[key], h['epoch']) for h in self.results['history'] if h['stage'] == stage]
        return min(rows, key=lambda row: row[0])

    def files(self) -> dict:
        return {'train_log.pt': self.log_train, 'test_log.pt': self.log_test}

    def write_results(self, directory: Path | None = None) -> None:
        save_json(self.results, (directory or self.dir) / 'results.json')

    def write_plots(self, test_only: bool, directory: Path) -> None:
        plot.loss_curves(directory, self.log_train, self.log_test, test_only)


def save_files(directory: Path, files: dict) -> None:
    """Write several torch files under `directory` (normally a commit's pending folder)."""
    for name, obj in files.items():
        save_torch(obj, directory / name)


FILES = {
    'baseline': ('model_latest.pt', 'model_best.pt', 'model_{}.pt', 'optimizer.pt', 'epochs.pt'),
    'search': ('model_latest.pt', 'model_best.pt', 'model_{}.pt', 'optimizer.pt', 'epochs.pt'),
    'converging': ('model_converging_latest.pt', 'model_converging_best.pt', 'model_converging_{}.pt',
                   'optimizer_converging.pt', 'epochs_converging.pt'),
}


@dataclass
class Session:
    """What every stage of a run shares."""

    args: Namespace
    device: torch.device
    data: Data
    run_dir: Path
    log: RunLog
    history: History
    trainer: Trainer
    criterion: Loss
    budget: int | None
    world: World = SINGLE

    def close(self) -> None:
        self.history.board.close()
        self.log.close()

    def spend_epoch(self) -> bool:
        """Whether this process may train one more epoch (`budget` epochs per call, None: unlimited)."""
        if self.budget is None:
            return True
        if self.budget <= 0:
            return False
        self.budget -= 1
        return True


MEASURES = (('Loss', 'loss'), ('Top1 error', 'top1_err'), ('Top5 error', 'top5_err'))


def log_evaluation(s: Session, test: tuple, stage: str) -> None:
    """The original's evaluation block; the best values are those of the stage, with its epoch numbers as the
    log shows them (and, while converging, the best of the search)."""
    s.log.write('\nEvaluation:')
    for value, (name, key) in zip(test, MEASURES, strict=True):
        best, at = s.history.best_of_stage(stage, key)
        s.log.write(f'{name}: {value:.3f} (Best: {best:.3f} from epoch {at})')
    if stage == 'converging' and any(h['stage'] == 'search' for h in s.history.results['history']):
        s.log.write('\nBest during searching')
        for name, key in MEASURES:
            best, at = s.history.best_of_stage('search', key)
            s.log.write(f'{name}: {best:.3f} from epoch {at}')


def save_epoch(s: Session, stage: str, epoch: int, optimizer: torch.optim.Optimizer,
               write_more: Callable[[Path], None] | None = None) -> None:
    """Checkpoint, logs, plots and results.json after an epoch (and what `write_more` writes into the given
    folder), committed together: a kill leaves the run at this epoch or at the previous one. Rank 0 only."""
    if not s.world.main:
        return
    latest, best, numbered, optimizer_file, epochs_file = FILES[stage]
    state = s.trainer.net.state_dict()
    files = {f'model/{latest}': state}
    if s.history.is_best(stage, s.args.top):
        files[f'model/{best}'] = state
    if s.args.save_models:
        files[f'model/{numbered.format(epoch)}'] = state
    files.update(s.history.files())
    files['loss.pt'] = s.criterion.state_dict()
    files[optimizer_file] = optimizer.state_dict()
    files[epochs_file] = epoch
    commit = Commit(s.run_dir)
    save_files(commit.pending, files)
    s.history.write_plots(s.args.test_only, commit.pending)
    s.history.write_results(commit.pending)
    if write_more is not None:
        write_more(commit.pending)
    commit.done()


def restore_history(s: Session, stage: str, finished: int) -> None:
    """Bring back the history of the run being resumed, up to its last finished epoch of `stage`; the
    loss/error logs are rebuilt from it, so an epoch interrupted half-way is simply done again."""
    results_file = s.run_dir / 'results.json'
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    order = ('test', 'baseline', 'search', 'converging')
    kept = [h for h in results.get('history', [])
            if order.index(h['stage']) < order.index(stage) or (h['stage'] == stage and h['epoch'] <= finished)]
    s.history.restore(dict(results, history=kept))


def resume_point(run_dir: Path, stage: str, resume: int) -> tuple[Path, int]:
    """The model file and finished-epoch count to resume a stage from (--resume N: epoch N's file)."""
    latest, _, numbered, _, epochs_file = FILES[stage]
    epochs = load_torch(run_dir / epochs_file, '--load') if (run_dir / epochs_file).is_file() else 0
    if resume > 0:
        return run_dir / 'model' / numbered.format(resume), resume
    return run_dir / 'model' / latest, int(epochs)


def has_finished_epoch(run_dir: Path, stage: str) -> bool:
    """Whether a run directory holds a committed epoch of `stage` (a run killed before it has none)."""
    return (run_dir / FILES[stage][4]).is_file()


def hinge_stage_reached(run_dir: Path) -> str:
    """The last stage a Hinge run directory reached: converging once compression_information.pt exists."""
    return 'converging' if (run_dir / 'compression_information.pt').is_file() else 'search'


def resume_stage(s: Session, stage: str, optimizer: torch.optim.Optimizer) -> int:
    """Continue a stage of a --load run: the finished epochs (--resume N: N), its history up to them, and its
    optimizer state when one was saved. Returns the finished-epoch count (0 for a run without --load)."""
    if not s.args.load:
        return 0
    epoch = resume_point(s.run_dir, stage, s.args.resume)[1]
    restore_history(s, stage, epoch)
    optimizer_file = s.run_dir / FILES[stage][3]
    if epoch > 0 and optimizer_file.is_file():
        optimizer.load_state_dict(load_torch(optimizer_file, '--load'))
        match_parameter_layouts(optimizer)
    return epoch


def match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state (saved contiguous) the memory layout of its parameter, which trains
    channels-last: the fused update then computes what an uninterrupted run did."""
    for group in optimizer.param_groups:
        for p in group['params']:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def make_optimizer(args: Namespace, groups: list[dict], lr: float, tensor_lrs: bool = False) -> torch.optim.Optimizer:
    """SGD (or Adam/RMSprop for baselines) with each group's base lr kept as 'initial_lr'. `tensor_lrs`: the
    lrs will be device tensors (the gradient-ratio adjustment), which the fused SGD uses without a host sync."""
    for g in groups:
        g.setdefault('lr', lr)
        g.setdefault('initial_lr', g['lr'])
    if args.optimizer == 'Adam':
        return torch.optim.Adam(groups, lr=lr, betas=args.betas, eps=args.epsilon, weight_decay=args.weight_decay)
    if args.optimizer == 'RMSprop':
        return torch.optim.RMSprop(groups, lr=lr, eps=args.epsilon, weight_decay=args.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=args.momentum, nesterov=args.nesterov,
                           weight_decay=args.weight_decay, fused=True if tensor_lrs else None)


def train_epochs(s: Session, stage: str, optimizer: torch.optim.Optimizer, start: int, last: int,
                 hooks: BatchHooks, stage_text: str = '', stream_offset: int = 0) -> int:
    """Epochs start+1..last of a stage (baseline or converging); returns the last finished epoch."""
    schedule = StepSchedule(s.args.decay, s.args.gamma, s.args.linear)
    epoch = start
    while epoch < last and s.spend_epoch():
        epoch += 1
        factor = schedule.factor(epoch)
        set_learning_rates(optimizer, factor)
        s.log.write(f'[Epoch {epoch}]\t{describe_lrs(optimizer)}{stage_text}')
        stats = s.trainer.train_epoch(epoch, optimizer, factor, hooks, stream_offset + epoch)
        test = s.trainer.evaluate()
        s.history.add_epoch(stage, epoch, stats, test, {'lr': float(optimizer.param_groups[0]['lr']),
                                                        'test_seconds': s.trainer.eval_seconds})
        log_evaluation(s, test, stage)
        s.log.write(f'Time: {stats["seconds"]:.2f}s\n')
        save_epoch(s, stage, epoch, optimizer)
    return epoch


def test_only(s: Session, extra: dict | None = None) -> dict:
    """Evaluate once. A fresh run directory gets the log, test_log.pt, plots and results.json; evaluating a
    --load run appends the evaluation to its log and results.json and leaves its other files alone."""
    if s.args.load:
        restore_history(s, 'converging', 10 ** 9)
    test = s.trainer.evaluate()
    s.history.add_epoch('test', 0, None, test, dict(extra or {}, images_per_second=s.trainer.eval_images_per_second,
                                                    test_seconds=s.trainer.eval_seconds))
    log_evaluation(s, test, 'test')
    if s.world.main:
        commit = Commit(s.run_dir)
        if not s.args.load:
            save_files(commit.pending, {'test_log.pt': s.history.log_test})
        s.history.write_results(commit.pending)
        commit.done()
    s.close()
    return s.history.results
