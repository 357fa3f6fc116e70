"""Hinge: train or evaluate a baseline CNN, or compress it with group sparsity.

With a baseline --model (VGG, ResNet, DenseNet, ResNeXt, Wide_ResNet) this trains or, with --test_only,
evaluates the plain network. With a Hinge_* model it runs the method: search (proximal-gradient training
of the sparsity-inducing matrices), threshold search to the FLOPs target, compression, converging
(fine-tuning); --load resumes either stage, --test_only evaluates a (compressed) checkpoint. --model Hinge
--base NAME does the same with the automatic plan of the --base network (ours or torchvision:NAME).
"""

import copy
import json
import os
import shlex
import signal
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch
import torch.nn as nn

import option
from data import Data, build_data
from loss import Loss
from model import AUTO, BASE_NAMES, build_baseline, check_base, is_auto, is_baseline
from model_hinge import NAMES, adapter_for, auto_plan, is_hinge
from model_hinge.complexity import ComplexityModel
from model_hinge.core import HingeModel, convert
from model_hinge.errors import HingeError
from model_hinge.latency import LatencyModel, baseline_network
from model_hinge.plan import Plan
from model_hinge.search import (
    SearchController,
    compression_report,
    initial_layer_weights,
    search_param_groups,
)
from model_hinge.surgery import OPTIONAL_KEYS, load_state
from trainer import (
    FILES,
    History,
    Session,
    Trainer,
    describe_lrs,
    has_finished_epoch,
    hinge_stage_reached,
    log_evaluation,
    make_optimizer,
    resume_point,
    resume_stage,
    save_epoch,
    save_files,
    test_only,
    train_epochs,
)
from utils import distributed, plot, signals
from utils.board import Board, require_tensorboard
from utils.distributed import World, barrier, global_batchnorm
from utils.errors import Interrupted, NonFiniteError, UsageError
from utils.export import check_target, describe, export_network
from utils.io import Commit, load_torch, recover, save_json, save_torch
from utils.report import comparison_table, write_report
from utils.rundir import RunLog, SilentLog, remove_run_dir, resolve_run_dir
from utils.schedule import StepSchedule
from utils.steps import BatchHooks, ConvergingHooks, SearchHooks, set_learning_rates
from utils.target import (
    allocation_timing,
    candidate_measure,
    compressed_latency,
    epoch_ratio,
    export_merge,
    fold_for_export,
    save_times,
    search_latency,
    searched_ratios,
)

MAX_SEARCH_EPOCHS = 200
PLAN_FILE = 'plan.json'
MERGED_FILE = 'model_merge_latest.pt'
CONVERGING_STREAM = 100_000


def validate(args: Namespace) -> None:
    """Flag checks that need no files; everything here fails before anything is written."""
    if not is_baseline(args.model) and not compresses(args):
        raise UsageError(f'--model {args.model} is unknown; use VGG, ResNet, DenseNet, ResNeXt, Wide_ResNet, a '
                         f'Hinge model ({NAMES}) or {AUTO} --base NAME.')
    option.check(args)
    if is_auto(args.model):
        validate_base(args)
    if compresses(args) and args.optimizer not in ('PG', 'SGD'):
        raise UsageError(f'--optimizer {args.optimizer} cannot train a Hinge model; use PG (proximal gradient) or SGD.')
    if not compresses(args) and args.optimizer not in ('SGD', 'Adam', 'RMSprop'):
        raise UsageError(f'--optimizer {args.optimizer} does not apply to a baseline; use SGD, Adam or RMSprop.')
    if compresses(args) and not args.test_only and (args.distillation or args.load_original_param) \
            and not args.teacher:
        raise UsageError('--distillation and --load_original_param need --teacher BASELINE.pt (the uncompressed '
                         'network of the same family).')
    gpus = torch.cuda.device_count() if torch.cuda.is_available() and not args.cpu else 0
    if gpus:
        limit, room = gpus, f'this machine has {gpus} GPU(s)'
    else:
        limit = os.cpu_count() or 1
        room = f'without a GPU that many processes share this machine\'s {limit} CPU core(s)'
    if args.n_GPUs > limit:
        raise UsageError(f'--n_GPUs {args.n_GPUs}: {room}; use at most {limit}.')
    if args.export:
        if not args.test_only:
            raise UsageError('--export writes the evaluated network: add --test_only and the checkpoint '
                             '(--pretrain FILE or --load RUN).')
        check_target(args.export)
    elif args.export_merge is not None:
        raise UsageError('--export_merge chooses what --export folds; add --export DIR or drop it.')
    if args.csv:
        raise UsageError('--csv formats the --report table; add --report RUN [RUN ...] or drop it.')
    if args.precision == 'half' and (args.cpu or not torch.cuda.is_available()):
        raise UsageError('--precision half needs a GPU; use single (or bf16) on the CPU.')
    StepSchedule(args.decay, args.gamma, args.linear)
    Loss(args.loss)
    if args.summary:
        require_tensorboard()


def compresses(args: Namespace) -> bool:
    """Whether --model runs the Hinge method: a Hinge_* model or --model Hinge (the automatic plan)."""
    return is_hinge(args.model) or is_auto(args.model)


def validate_base(args: Namespace) -> None:
    """--model Hinge needs a --base that names a network we can build."""
    if not args.base:
        raise UsageError(f'--model {args.model} compresses the network named by --base; add --base NAME ({BASE_NAMES}, '
                         'e.g. torchvision:resnet50).')
    check_base(args.base)


def checkpoint_file(path: str) -> Path:
    """A .pt file as given, or the latest model of a run directory (as the original resolves --pretrain)."""
    p = Path(path)
    return p / 'model' / 'model_latest.pt' if p.is_dir() else p


def open_session(args: Namespace, device: torch.device, data: Data, run_dir: Path, net: nn.Module, results: dict,
                 budget: int | None, fresh: bool, world: World) -> Session:
    """Create the run directory (after every check has passed; rank 0 only) and the objects shared by the
    stages."""
    if args.reset and fresh and world.main:
        remove_run_dir(run_dir, args.dir_save)
    barrier(world)
    log = RunLog(run_dir, args) if world.main else SilentLog()
    history = History(run_dir, results, Board(run_dir, args.summary and world.main))
    criterion = Loss(args.loss).to(device)
    global_batchnorm(net, world)
    for loader in (data.train, data.test):
        if loader is not None:
            loader.memory_format = torch.channels_last
            loader.to(device)
            loader.share(world)
    trainer = Trainer(args, net, criterion, data, log, device, world)
    return Session(args, device, data, run_dir, log, history, trainer, criterion, budget, world)


def describe_model(s: Session, net: nn.Module) -> None:
    """The network and its parameter/kernel counts at the top of log.txt, as the original writes them (the
    structure goes to the log only)."""
    s.log.write(str(net), console=False)
    s.log.write(f'{s.args.model}: the structure is in {s.run_dir / "log.txt"}')
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    kernels = {1: 0, 3: 0, 0: 0}
    for m in convs:
        size = m.kernel_size[0] if m.kernel_size[0] == m.kernel_size[1] and m.kernel_size[0] in (1, 3) else 0
        kernels[size] += m.in_channels * m.out_channels
    linear = sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Linear))
    s.log.write(f'# parameters: {sum(p.numel() for p in net.parameters()):,}')
    s.log.write(f'1x1: {kernels[1]:,}\n3x3: {kernels[3]:,}\nOthers: {kernels[0]:,}\nLinear:{linear:,}\n')


def base_results(args: Namespace, data: Data, run_dir: Path, flops: int, params: int,
                 flops_c: int, params_c: int) -> dict:
    return {'model': args.model, 'dataset': data.name, 'run_dir': str(run_dir), 'flops': flops, 'params': params,
            'flops_compressed': flops_c, 'params_compressed': params_c, 'flops_ratio': flops_c / flops,
            'params_ratio': params_c / params, 'threshold': None}


# ----------------------------------------------------------------------------------------------------------------
# Baselines


def run_baseline(args: Namespace, device: torch.device, budget: int | None, world: World) -> dict:
    data = build_data(args)
    net = build_baseline(args)
    run_dir = resolve_run_dir(args)
    recover_run(run_dir, world)
    resuming = bool(args.load) and (has_finished_epoch(run_dir, 'baseline') or args.test_only)
    if resuming:
        model_file = resume_point(run_dir, 'baseline', args.resume)[0]
        load_state(net, load_torch(model_file, '--load'), f'--load {model_file}', adapt=False)
    elif args.pretrain:
        path = checkpoint_file(args.pretrain)
        load_state(net, load_torch(path, '--pretrain'), f'--pretrain {path}', adapt=False)
    elif args.test_only:
        raise UsageError('--test_only needs a checkpoint: pass --pretrain FILE (or --load RUN_DIR).')
    counter = ComplexityModel.trace(net, data.input_dim)
    flops, params = counter.flops(), counter.params()
    net.to(device)
    s = open_session(args, device, data, run_dir, net, base_results(args, data, run_dir, flops, params, flops, params),
                     budget, not resuming, world)
    describe_model(s, net)
    s.log.write(f'Flops: {flops / 1e9:.4f} [G] counted analytically; Params: {params / 1e3:.2f} [k]\n')
    if args.test_only:
        export_evaluated(s, net)
        return test_only(s)
    optimizer = make_optimizer(args, [{'params': [p for p in net.parameters() if p.requires_grad]}], args.lr)
    train_epochs(s, 'baseline', optimizer, resume_stage(s, 'baseline', optimizer), args.epochs, BatchHooks())
    s.close()
    return s.history.results


# ----------------------------------------------------------------------------------------------------------------
# Hinge models


def hinge_phase(args: Namespace, run_dir: Path) -> str:
    """test (evaluate), converging (resume after compression), search (resume) or fresh."""
    if args.test_only:
        return 'test'
    if not args.load:
        return 'fresh'
    stage = hinge_stage_reached(run_dir)
    return 'fresh' if stage == 'search' and not has_finished_epoch(run_dir, 'search') else stage


def load_teacher(args: Namespace, family: str, device: torch.device) -> nn.Module:
    """The baseline of the same family, loaded strictly from --teacher, in eval mode."""
    teacher = build_baseline(args, family)
    path = checkpoint_file(args.teacher)
    load_state(teacher, load_torch(path, '--teacher'), f'--teacher {path}', adapt=False)
    teacher.to(device, memory_format=torch.channels_last).eval()
    return teacher


def read_run_plan(args: Namespace, run_dir: Path) -> tuple[Plan, list[float] | None] | None:
    """The plan and layer weights saved by a run (plan.json), if this run has one."""
    path = run_dir / PLAN_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        plan, weights = Plan.from_dict(saved['plan']), saved.get('layer_weights')
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UsageError(f'--load: {path} is not a compression plan ({err}); delete it to plan again.') from None
    if plan.model.lower() != args.model.lower():
        raise UsageError(f'--load: the run {run_dir} compresses {plan.model}, not --model {args.model}; '
                         f'pass --model {plan.model}.')
    base = saved.get('base')
    if base is not None and base.lower() != args.base.lower():
        raise UsageError(f'--load: the run {run_dir} compresses --base {base}, not --base {args.base}; '
                         f'pass --base {base}.')
    return plan, weights


def base_of(args: Namespace) -> str:
    """The uncompressed network a Hinge model compresses: --base for --model Hinge, else its adapter's family."""
    return args.base if is_auto(args.model) else adapter_for(args.model).baseline


def plan_for(args: Namespace, net: nn.Module, input_dim: tuple) -> Plan:
    """The hand-written plan of a Hinge_* model, or the automatic plan of the --base network (--model Hinge)."""
    if not is_auto(args.model):
        return adapter_for(args.model).plan(net)
    try:
        return auto_plan(net, torch.zeros(1, *input_dim), decompose_free=args.decompose_free,
                         prune_coupled=not args.decompose_coupled)
    except HingeError as err:
        raise UsageError(f'--base {args.base}: {err}') from None


def build_hinge(args: Namespace, data: Data, run_dir: Path, phase: str) -> tuple[HingeModel, list[float] | None]:
    """The converted network with the state of its phase loaded, and the layer-balancing weights of its search
    (computed at the start of a fresh search; read back from plan.json when resuming)."""
    net = build_baseline(args, base_of(args))
    fresh = phase == 'fresh'
    if fresh and args.pretrain:
        path = checkpoint_file(args.pretrain)
        load_state(net, load_torch(path, '--pretrain'), f'--pretrain {path}', adapt=False)
    saved = None if fresh or (phase == 'test' and not args.load) else read_run_plan(args, run_dir)
    plan = saved[0] if saved else plan_for(args, net, data.input_dim)
    hm = HingeModel(net, plan, data.input_dim, args.init_method if fresh else None)
    weights = saved[1] if saved else None
    if phase == 'test':
        path = (checkpoint_file(args.pretrain) if args.pretrain
                else resume_point(run_dir, hinge_stage_reached(run_dir), args.resume)[0])
        state = load_torch(path, '--pretrain')
        if is_merged_checkpoint(hm, state):
            hm.merge()
        load_state(net, state, f'--pretrain {path}', adapt=True)
    elif phase in ('search', 'converging'):
        path = resume_point(run_dir, phase, args.resume)[0]
        load_state(net, load_torch(path, '--load'), f'--load {path}', adapt=phase == 'converging')
    try:
        if phase in ('test', 'converging'):
            hm.compressed()
        else:
            hm.retrace()
    except RuntimeError as err:
        raise UsageError(f'the loaded tensors do not fit together ({str(err).splitlines()[0]}); '
                         'is the checkpoint of this --model and --depth?') from None
    if weights is None and phase in ('fresh', 'search'):
        weights = initial_layer_weights(hm.families)
    return hm, weights


def is_merged_checkpoint(hm: HingeModel, state: dict) -> bool:
    """Whether a checkpoint holds the merged structure (conv and A folded), judged by its keys."""
    if not hm.plan.merges:
        return False
    keys = set(state) - set(OPTIONAL_KEYS)
    if keys == set(hm.net.state_dict()):
        return False
    merged = copy.deepcopy(hm)
    merged.merge()
    return keys == set(merged.net.state_dict())


def save_run_plan(s: Session, hm: HingeModel, layer_weights: list[float] | None) -> None:
    """plan.json: what rebuilds this run's network without re-planning, and its search's layer weights."""
    base = {'base': s.args.base} if is_auto(s.args.model) else {}
    save_json({'plan': hm.plan.to_dict(), 'layer_weights': layer_weights, **base}, s.run_dir / PLAN_FILE)


def run_hinge(args: Namespace, device: torch.device, budget: int | None, world: World) -> dict:
    data = build_data(args)
    run_dir = resolve_run_dir(args)
    recover_run(run_dir, world)
    phase = hinge_phase(args, run_dir)
    if args.test_only and not args.pretrain and not args.load:
        raise UsageError('--test_only needs a checkpoint: pass --pretrain FILE (or --load RUN_DIR).')
    hm, layer_weights = build_hinge(args, data, run_dir, phase)
    latency = search_latency(args, hm, run_dir, device, world) if phase in ('fresh', 'search') else None
    if phase in ('fresh', 'search'):
        reachable = SearchController(hm, args, None, latency).minimum_ratio()
        if args.ratio < reachable:
            what = 'FLOPs' if latency is None else 'measured latency'
            raise UsageError(f'--ratio {args.ratio} cannot be reached: keeping --remain_percentage '
                             f'{args.remain_percentage} of every layer leaves {reachable:.4f} of the {what}; use a '
                             f'--ratio of at least {reachable:.4f} or a smaller --remain_percentage.')
    teacher = None
    if phase != 'test' and (args.distillation or args.load_original_param):
        teacher = load_teacher(args, base_of(args), device)
    flops_c, params_c = hm.cost()
    hm.net.to(device)
    results = base_results(args, data, run_dir, hm.baseline_flops, hm.baseline_params, flops_c, params_c)
    if is_auto(args.model):
        results['base'] = args.base
    s = open_session(args, device, data, run_dir, hm.net, results, budget, phase == 'fresh', world)
    save_times(latency, world)
    describe_model(s, hm.net)
    if phase in ('fresh', 'search') and not (run_dir / PLAN_FILE).is_file() and world.main:
        save_run_plan(s, hm, layer_weights)
    if phase == 'fresh' and not args.pretrain:
        s.log.write('Warning: no --pretrain given; compressing a randomly initialised network.')
    s.log.write(complexity_line(hm.baseline_flops, hm.baseline_params, flops_c, params_c))
    if phase == 'test':
        export_evaluated(s, hm.net, hm)
        return test_only(s, {'flops_ratio': flops_c / hm.baseline_flops})
    if phase == 'converging':
        info = load_torch(run_dir / 'compression_information.pt', '--load')
        s.history.results['threshold'] = info.get('threshold')
        epoch_continue = int(info['epoch_continue'])
    else:
        epoch_continue, controller = search_stage(s, hm, layer_weights, phase, latency)
        if epoch_continue is None:
            s.close()
            return s.history.results
        compress_stage(s, hm, controller, teacher, epoch_continue)
    converging_stage(s, hm, teacher, epoch_continue)
    s.close()
    return s.history.results


def complexity_line(flops: int, params: int, flops_c: int, params_c: int) -> str:
    return (f'FLOPs ratio {flops_c / flops * 100:.2f} = {flops_c / 1e9:.4f} [G] / {flops / 1e9:.4f} [G]; '
            f'Parameter ratio {params_c / params * 100:.2f} = {params_c / 1e3:.2f} [k] / {params / 1e3:.2f} [k].')


def search_stage(s: Session, hm: HingeModel, layer_weights: list[float] | None,
                 phase: str, latency: LatencyModel | None = None) -> tuple[int | None, SearchController]:
    """Train until the would-be FLOPs ratio (with --target latency, the latency model's ratio) is within
    --stop_limit of --ratio (at most 200 epochs).

    Returns the epoch the converging stage continues from (None when the epoch budget ran out first) and the
    controller, whose group norms decide the compression.
    """
    args = s.args
    controller = SearchController(hm, args, layer_weights if args.layer_balancing else None, latency)
    optimizer = make_optimizer(args, search_param_groups(hm, args.lr, args.lr_ratio, args.legacy_search), args.lr,
                               tensor_lrs=hm.policy.separate_roles)
    schedule = StepSchedule(args.decay, args.gamma, args.linear)
    hooks = SearchHooks(controller)
    epoch, ratios = resume_stage(s, 'search', optimizer), []
    if phase == 'search':
        ratios = searched_ratios(s.history.results['history'], latency)[:epoch]
    else:
        test = s.trainer.evaluate()
        s.history.results['baseline_top1_err'] = test[1]
        s.log.write(f'Before the search (the converted baseline): Loss: {test[0]:.3f}, Top1 error: {test[1]:.3f}, '
                    f'Top5 error: {test[2]:.3f}')
    if args.legacy_search and epoch > 0:
        controller.freeze_compressible()
    ratio = ratios[-1] if ratios else 1.0
    while ratio - args.ratio > args.stop_limit and epoch < MAX_SEARCH_EPOCHS:
        if not s.spend_epoch():
            return None, controller
        epoch += 1
        factor = schedule.factor(epoch)
        set_learning_rates(optimizer, factor,
                           controller.lr_multipliers(len(optimizer.param_groups), controller.grad_ratio)
                           if hm.policy.separate_roles else None)
        s.log.write(f'[Epoch {epoch}]\t{describe_lrs(optimizer)}\tSearching Stage')
        stats = s.trainer.train_epoch(epoch, optimizer, factor, hooks, epoch)
        test = s.trainer.evaluate()
        flops_c, params_c = controller.cost(controller.family_norms(), args.threshold)
        ratio, target_fields = epoch_ratio(controller, args.threshold)
        ratios.append(ratio)
        s.history.add_epoch('search', epoch, stats, test,
                            {'lr': float(optimizer.param_groups[-1]['lr']),
                             'flops_ratio': flops_c / hm.baseline_flops, 'flops_compressed': flops_c,
                             'params_compressed': params_c,
                             'params_ratio': params_c / hm.baseline_params, 'threshold': args.threshold,
                             'test_seconds': s.trainer.eval_seconds, **target_fields})
        log_evaluation(s, test, 'search')
        s.log.write(f'Time: {stats["seconds"]:.2f}s\n')
        s.log.write(complexity_line(hm.baseline_flops, hm.baseline_params, flops_c, params_c))
        save_epoch(s, 'search', epoch, optimizer,
                   lambda directory: plot.compression_ratio(ratios, directory / 'compression_ratio.png', args.ratio))
        if args.legacy_search and not controller.frozen:
            controller.freeze_compressible()
    return epoch + 1, controller


def reset_to_teacher(hm: HingeModel, teacher: nn.Module, args: Namespace) -> None:
    """--load_original_param: the converted network's values become those of the converted teacher."""
    fresh = copy.deepcopy(teacher).cpu()
    convert(fresh, hm.plan, args.init_method)
    own = hm.net.state_dict()
    with torch.no_grad():
        for key, value in fresh.state_dict().items():
            own[key].copy_(value)


def compress_stage(s: Session, hm: HingeModel, controller: SearchController, teacher: nn.Module | None,
                   epoch_continue: int) -> None:
    """Threshold search to --ratio, the compression report, and the physical compression."""
    args, start = s.args, time.perf_counter()
    norms = controller.family_norms()
    device = next(hm.net.parameters()).device
    allocation = controller.allocate(norms, s.log, candidate_measure(args, hm, controller.latency, s.world),
                                     allocation_timing(args, hm, device, s.world))
    threshold = allocation.threshold
    kept = allocation.kept
    flops_c, params_c = controller.cost_of_kept(kept)
    lines, info, per_layer = compression_report(hm, norms, kept, threshold, epoch_continue, flops_c, params_c)
    for line in lines:
        s.log.write(line)
    if args.load_original_param:
        reset_to_teacher(hm, teacher, args)
    timed = controller.latency is not None and s.world.main
    baseline = baseline_network(hm) if timed else None
    hm.compress(kept, args.legacy_search)
    if timed:
        numbers, line = compressed_latency(args, controller.latency, hm, kept, baseline)
        s.history.results.update(numbers)
        s.log.write(line)
    s.trainer.set_network(hm.net)
    flops_now, params_now = hm.cost()
    test = s.trainer.evaluate()
    s.log.write(complexity_line(hm.baseline_flops, hm.baseline_params, flops_now, params_now))
    s.log.write(f'After compression, before converging: Loss: {test[0]:.3f}, Top1 error: {test[1]:.3f}, '
                f'Top5 error: {test[2]:.3f}\n')
    s.history.results.update(flops_compressed=flops_now, params_compressed=params_now,
                             flops_ratio=flops_now / hm.baseline_flops, params_ratio=params_now / hm.baseline_params,
                             threshold=threshold, compressed_top1_err=test[1], search_epochs=epoch_continue - 1,
                             compression_seconds=time.perf_counter() - start)
    if allocation.timed:
        s.history.results.update(allocation=allocation.name, allocations=allocation.timed)
    if s.world.main:
        commit = Commit(s.run_dir)
        s.history.write_results(commit.pending)
        plot.per_layer_ratio(per_layer, commit.path('per_layer_compression_ratio.png'))
        searched = [h['flops_ratio'] for h in s.history.results['history'] if h['stage'] == 'search']
        plot.compression_ratio(searched, commit.path('compression_ratio.png'), args.ratio,
                               flops_now / hm.baseline_flops)
        save_files(commit.pending, {f'model/{FILES["converging"][0]}': hm.net.state_dict(),
                                    FILES['converging'][4]: 0, 'compression_information.pt': info})
        commit.done()


def converging_stage(s: Session, hm: HingeModel, teacher: nn.Module | None, epoch_continue: int) -> None:
    """Fine-tune the compressed network for --epochs at lr x lr_factor (distilling from --teacher); where the
    plan merges, the finished network is merged and saved as model_merge_latest.pt."""
    args = s.args
    optimizer = make_optimizer(args, [{'params': [p for p in hm.net.parameters() if p.requires_grad]}],
                               args.lr * args.lr_factor)
    start = resume_stage(s, 'converging', optimizer)
    s.trainer.teacher = teacher if args.distillation else None
    hooks = ConvergingHooks(SearchController(hm, args, None) if hm.families else None)
    last = train_epochs(s, 'converging', optimizer, start, args.epochs, hooks,
                        f'\tConverging Stage (Searching Epoch {epoch_continue})', CONVERGING_STREAM)
    if hm.plan.merges and last >= args.epochs:
        hm.merge()
        if s.world.main:
            save_torch(hm.net.state_dict(), s.run_dir / 'model' / MERGED_FILE)
        s.log.write(f'Merged every (conv, A) pair the plan merges; saved model/{MERGED_FILE}.')
    summary(s, hm)


def summary(s: Session, hm: HingeModel) -> None:
    """The closing lines: complexity and error before/after, and where everything is."""
    r = s.history.results
    flops_c, params_c = hm.cost()
    fmt = lambda v: 'n/a' if v is None else f'{v:.2f}%'  # noqa: E731
    s.log.write('Summary')
    s.log.write(f'  FLOPs:  {hm.baseline_flops / 1e6:.2f}M -> {flops_c / 1e6:.2f}M '
                f'(ratio {flops_c / hm.baseline_flops:.4f})')
    s.log.write(f'  Params: {hm.baseline_params / 1e3:.2f}k -> {params_c / 1e3:.2f}k '
                f'(ratio {params_c / hm.baseline_params:.4f})')
    searched = [e['top1_err'] for e in r.get('history', []) if e['stage'] == 'search']
    s.log.write(f'  Top-1 error: baseline {fmt(r.get("baseline_top1_err"))}, end of the search '
                f'{fmt(searched[-1] if searched else None)}, right after compression '
                f'{fmt(r.get("compressed_top1_err"))}, after converging {fmt(r.get("top1_err"))} '
                f'(best {fmt(r.get("best_top1_err"))})')
    s.log.write(f'  Run directory: {s.run_dir}')


def export_evaluated(s: Session, net: nn.Module, hm: HingeModel | None = None) -> None:
    """--export DIR: the evaluated network as standalone artefacts (utils/export.py). A Hinge model is exported
    with its plan's merges folded and, with --export_merge cheaper (the default), every other pair that does not
    pay (utils/target.py)."""
    args, r = s.args, s.history.results
    if not args.export or not s.world.main:
        return
    folded = []
    if hm is None:
        net = copy.deepcopy(net)
    else:
        hm = copy.deepcopy(hm)
        folded = fold_for_export(args, hm, s.run_dir, s.device)
        net = hm.net
    counter = ComplexityModel.trace(net, s.data.input_dim)
    flops, params = counter.flops(), counter.params()
    metadata = {'model': args.model, 'dataset': r['dataset'], 'checkpoint': args.pretrain or args.load,
                'export_merge': export_merge(args), 'target': args.target,
                'folded_beyond_plan': [i.conv for i in folded],
                'flops_baseline': r['flops'], 'params_baseline': r['params'], 'flops': flops, 'params': params,
                'flops_ratio': flops / r['flops'], 'params_ratio': params / r['params']}
    content = export_network(net, s.data.input_dim, Path(args.export), metadata)
    s.log.write(f'Exported the network ({flops / 1e6:.2f}M FLOPs, {params / 1e3:.2f}k parameters) to {args.export}:')
    for line in describe(content):
        s.log.write(line)


# ----------------------------------------------------------------------------------------------------------------


def recover_run(run_dir: Path, world: World) -> None:
    """Finish or drop the step a kill interrupted (rank 0), before anything reads the run directory."""
    if world.main:
        recover(run_dir)
    barrier(world)


def run(args: Namespace, epoch_budget: int | None = None) -> dict:
    """Run what the flags ask for; `epoch_budget` stops cleanly after that many training epochs (resume with
    --load). Returns the content of results.json. Under torchrun every process runs this."""
    validate(args)
    use_cuda = torch.cuda.is_available() and not args.cpu
    world = distributed.start(use_cuda)
    try:
        torch.manual_seed(args.seed)
        device = torch.device('cuda', world.local_rank) if use_cuda else torch.device('cpu')
        run_stages = run_baseline if is_baseline(args.model) else run_hinge
        results = run_stages(args, device, epoch_budget, world)
        if world.main:
            defaults = {name: str(value) for name, value in vars(option.parse_args([])).items()}
            write_report(Path(results['run_dir']), defaults)
    except BaseException:
        distributed.finish(world, together=False)
        raise
    distributed.finish(world)
    return results


def relaunch_with_torchrun(processes: int, argv: list[str]) -> None:
    """--n_GPUs N outside torchrun: become `torchrun --standalone --nproc_per_node N main_hinge.py ...`."""
    os.execv(sys.executable, [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                              f'--nproc_per_node={processes}', str(Path(__file__).resolve()), *argv])


def resume_command(argv: list[str], run_name: str) -> str:
    """The command line that continues this run: the same flags with --load instead of --save/--reset."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in ('--save', '--load'):
            skip = True
        elif word != '--reset':
            kept.append(word)
    return shlex.join(['python', 'main_hinge.py', *kept, '--load', run_name])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        with signals.caught():
            args = option.parse_args(argv)
            if args.report:
                print(comparison_table(args.report, args.dir_save, args.csv), end='')
                return 0
            if args.n_GPUs > 1 and not distributed.launched_by_torchrun():
                validate(args)
                relaunch_with_torchrun(args.n_GPUs, argv)
            run(args)
    except HingeError as err:
        print(f'main_hinge.py: error: {err}', file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f'main_hinge.py: stopped: {err}', file=sys.stderr)
        return 3
    except Interrupted as err:
        name = signal.Signals(err.signum).name
        print(f'main_hinge.py: {name} in {err.where}: stopped after the current batch; the run is kept up to its '
              f'last finished epoch. Resume with:\n  {resume_command(argv, args.load or args.save)}', file=sys.stderr)
        return 128 + err.signum
    return 0


if __name__ == '__main__':
    sys.exit(main())
