"""Benchmark, side by side: the original Hinge code (ofsoundof/group_sparsity) and ours, on real CIFAR-10.

    python scripts/benchmark_original.py --original /path/to/group_sparsity --data ../shared/data/cifar10-subset \
        [--depths 20 56 164] [--batch_sizes 64 128] [--batches 20] [--warmup 3] [--repeats 3] [--threads N] \
        [--pylib DIR ...] [--device cpu|cuda] [--out FILE.md]

For each depth and batch size the same figures are measured for both codes, each through its own data
pipeline, model, trainer and optimizer (the flags are the paper's, scripts/hinge_resnet.sh):

* training images/s of the baseline stage, the search stage (proximal gradient, lr adjustment) and the
  converging stage (distillation), timed over --batches batches after --warmup batches, data loading
  included as each code does it (the original: torchvision's CIFAR10 through a DataLoader with --n_threads
  workers; ours: build_data's in-memory batches);
* ms per proximal step (original: proximal_operator; ours: SearchController.proximal_step);
* ms per would-be-FLOPs evaluation (original: calc_model_complexity_running; ours: SearchController.cost of
  the current group norms);
* s for the threshold search plus compression on a searched state (original: binary_search + compress;
  ours: search_threshold, and search_threshold_legacy, each + surgery.compress);
* for ResNet-20 at batch 64 (the paper's flags): one whole search epoch over the data, the training pass
  alone and with the test pass, the FLOPs ratio and the per-epoch checkpoint as each main loop does them.

Every measurement runs in a child process of this script (`--side original|ours`), one at a time, the two
sides alternating, so that `model`, `data`, `loss` and `util` mean the original's modules in one process and
ours in the other; the children report JSON and the parent prints and writes a Markdown table of the medians
over --repeats.

The original runs unchanged; `original_shims` applies, in its child process only and at run time (no file
of the original is modified or copied into this repository):

S1. `--device cpu` (the default) only: `torch.Tensor.cuda` and `nn.Module.cuda` return the object itself (the
    original moves index tensors to the GPU in compress), and both codes get `--cpu`. With `--device cuda` the
    original runs on the GPU as it is written, and ours on the same GPU.
S2. torchvision's CIFAR10 checksums are replaced by those of the files found in --data, so that its md5
    check accepts the subset (the check itself still runs).
S3. `sys.argv` is emptied while util.option_hinge and util.option_basis are imported (they parse the command
    line at import); the argument objects come from their parser with the flags given here, then
    util.template.set_template, as the original's entry points do.
S4. The original's extra packages (easydict, imageio, tensorboardX and its protobuf) come from --pylib
    directories put in front of sys.path, e.g. `pip install --no-deps --target /tmp/bench_pylib easydict
    imageio tensorboardX protobuf`; nothing is added to requirements.txt.

Measurement instrumentation (applied to both sides alike): the training loader is wrapped so that an epoch
stops after warm-up + timed batches and the time at which each batch is requested is recorded; the searched
state is made by scaling groups (40 % to zero, 30 % by log-uniform factors in [1e-4, 1e-2]), with the same
seeded draw per group family on both sides. On the GPU every time stamp waits for the device's queued work
(torch.cuda.synchronize), on both sides alike. Timings, not tests.
"""

import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# The paper's flags (scripts/hinge_resnet.sh, CIFAR-10 entries; ResNet-56 from its first entry).
HINGE_FLAGS = {
    20: '--template CIFAR10_ResNet20 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A --lr 0.1 '
        '--lr_ratio 0.01 --lr_factor 1 --decay hingestep-150-225 --optimizer PG --ratio 0.4516 '
        '--sparsity_regularizer l1 --regularization_factor 2e-4 --init_method svd2 --threshold 5e-3 '
        '--annealing_factor 2 --annealing_t1 20 --annealing_t2 15 --stop_limit 0.1 --p1_p2_same_ratio '
        '--layer_balancing --distillation',
    56: '--template ResNet --model Hinge_ResNet_Basic_SVD --depth 56 --downsample_type A --lr 0.1 --lr_ratio 0.01 '
        '--lr_factor 1 --decay hingestep-150-225 --optimizer PG --ratio 0.5 --sparsity_regularizer l1d2 '
        '--regularization_factor 4e-4 --init_method svd2 --threshold 5e-3 --annealing_factor 2 --stop_limit 0.1 '
        '--p1_p2_same_ratio --layer_balancing --distillation',
    164: '--template CIFAR10_ResNet164 --model Hinge_RESNET_BOTTLENECK --depth 164 --no_bias --lr 0.1 '
         '--lr_ratio 0.01 --lr_factor 1 --decay hingestep-150-225 --optimizer PG --ratio 0.5353 '
         '--sparsity_regularizer l1 --regularization_factor 2e-4 --threshold 1e-3 --annealing_factor 0 '
         '--stop_limit 0.1 --p1_p2_same_ratio --layer_balancing --distillation',
}
# The baseline each Hinge model starts from (and distils from): same template and architecture flags.
BASELINE_FLAGS = {
    20: '--template CIFAR10_ResNet20 --model ResNet --depth 20 --downsample_type A',
    56: '--template ResNet --model ResNet --depth 56 --downsample_type A',
    164: '--template CIFAR10_ResNet164 --model ResNet --depth 164 --no_bias',
}
# The original's classes: which dimension of the two weights of find_modules() the groups lie along.
ORIGINAL_GROUP_DIMS = {'hinge_resnet_basic_svd': (1, 1), 'hinge_resnet_bottleneck': (0, 1)}
MERGING_MODELS = ('hinge_resnet56', 'hinge_wide_resnet', 'hinge_densenet')  # the original's merge_flag list
EPOCH_DEPTH, EPOCH_BATCH = 20, 64
PROX_REPEATS, FLOPS_REPEATS = 30, 10


# ----------------------------------------------------------------------------------------------------------------
# Shared by both sides


def now() -> float:
    """The wall clock once the GPU's queued work, where CUDA is in use, has finished."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


class TimedBatches:
    """A training loader that stops after `limit` batches and records when each batch was asked for.

    Everything else (len, dataset, set_epoch, ...) is the wrapped loader's, so either trainer uses it as its
    own. `stamps[k]` is the time batch k was requested; `stamps[limit]` the time the next one was.
    """

    def __init__(self, loader, limit: int):
        if limit > len(loader):
            raise ValueError(f'{limit} batches requested; the loader has {len(loader)}')
        self.loader, self.limit = loader, limit
        self.stamps: list[float] = []
        self.sizes: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.__dict__['loader'], name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.stamps, self.sizes = [], []
        batches = iter(self.loader)
        for _ in range(self.limit):
            self.stamps.append(now())
            images, labels = next(batches)
            self.sizes.append(len(labels))
            yield images, labels
        self.stamps.append(now())

    def images_per_second(self, warmup: int) -> float:
        """Images of the batches after the warm-up divided by the time from requesting the first of them
        to requesting the batch after the last."""
        return sum(self.sizes[warmup:]) / (self.stamps[-1] - self.stamps[warmup])


def searched_factors(groups: int, generator: torch.Generator) -> torch.Tensor:
    """Per-group factors of a synthetic searched state: 40 % zero (at least max(2, 20 %) of the groups stay
    nonzero), 30 % log-uniform in [1e-4, 1e-2], the rest one."""
    zero = min(round(0.4 * groups), groups - max(2, int(0.2 * groups)))
    small = round(0.3 * groups)
    order = torch.randperm(groups, generator=generator)
    factors = torch.ones(groups)
    factors[order[:zero]] = 0.0
    factors[order[zero:zero + small]] = 10.0 ** (-4.0 + 2.0 * torch.rand(small, generator=generator))
    return factors


def median_seconds(fn, repeat: int, warmup: int = 2) -> float:
    """Median wall time of `fn` over `repeat` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = now()
        fn()
        times.append(now() - start)
    return statistics.median(times)


def common_flags(batch_size: int, opts: argparse.Namespace, work: Path, name: str, hinge: bool) -> list[str]:
    """Flags both codes take: the device, data, run directory, batch size, loader workers and, for a Hinge model,
    the baseline it starts from and distils from."""
    flags = ['--batch_size', str(batch_size), '--dir_data', str(opts.data), '--dir_save', str(work), '--save', name,
             '--n_threads', str(opts.n_threads), '--epochs', '300'] + (['--cpu'] if opts.device == 'cpu' else [])
    baseline = str(work / 'baseline.pt')
    return flags + (['--pretrain', baseline, '--teacher', baseline] if hinge else [])


# ----------------------------------------------------------------------------------------------------------------
# The original's side (child process only)


def original_shims(original: Path, pylib: list[str], data: Path, device: str) -> None:
    """Make the original importable and runnable here (S1 on the CPU, S2, S4 of the module docstring; S3 is in
    `original_args`). Call once, in a process that never imports our packages."""
    for path in [*reversed(pylib), str(original)]:
        sys.path.insert(0, path)
    if device == 'cpu':
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    import torchvision.datasets as tv

    folder = data / tv.CIFAR10.base_folder

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    tv.CIFAR10.train_list = [[name, md5(name)] for name, _ in tv.CIFAR10.train_list]
    tv.CIFAR10.test_list = [[name, md5(name)] for name, _ in tv.CIFAR10.test_list]
    tv.CIFAR10.meta = dict(tv.CIFAR10.meta, md5=md5(tv.CIFAR10.meta['filename']))


def original_args(argv: list[str]) -> argparse.Namespace:
    """The original's argument object for `argv` (S3): its option modules are imported with an empty command
    line, then its parser reads `argv` and the templates apply."""
    saved = sys.argv
    sys.argv = [saved[0]]
    try:
        import util.option_basis  # noqa: F401  (adds the baseline flags to util.option.parser)
        import util.option_hinge  # noqa: F401  (adds the Hinge flags)
        from util import template
        from util.option import parser
    finally:
        sys.argv = saved
    args = parser.parse_args(argv)
    template.set_template(args)
    return args


def scale_original_groups(net, model_name: str) -> None:
    """The synthetic searched state on the original's model, group family by group family."""
    generator = torch.Generator().manual_seed(1)
    dims = ORIGINAL_GROUP_DIMS[model_name.lower()]
    with torch.no_grad():
        for module in net.find_modules():
            for param, dim in zip(net.sparse_param(module), dims, strict=True):
                shape = [1] * param.dim()
                shape[dim] = -1
                param.data.mul_(searched_factors(param.shape[dim], generator).view(shape))


def original_hinge_trainer(args: argparse.Namespace):
    """(model, data, trainer) of the original's Hinge search with distillation, as its main_hinge builds them."""
    from util import utility
    from util.trainer_hinge import Trainer

    from data import Data
    from loss import Loss
    from model_hinge import Model

    ckp = utility.checkpoint(args)
    model = Model(args, ckp)
    teacher = Model(args, ckp, teacher=True)
    loader = Data(args)
    return model, loader, Trainer(args, loader, model, Loss(args, ckp), ckp, None, False, teacher)


def measure_original(original: Path, depth: int, batch_size: int, opts: argparse.Namespace, work: Path) -> dict:
    """The stage figures of the original code for one depth and batch size (see the module docstring)."""
    original_shims(original, opts.pylib, Path(opts.data), opts.device)
    from util import utility
    from util.trainer_clean import Trainer as BaselineTrainer

    from data import Data
    from loss import Loss
    from model import Model as BaselineModel
    from model_hinge.hinge_utility import binary_search, calc_model_complexity_running

    limit = opts.warmup + opts.batches
    result = {'threads': torch.get_num_threads()}

    torch.manual_seed(1)
    args = original_args(BASELINE_FLAGS[depth].split() + common_flags(batch_size, opts, work, 'baseline', False))
    ckp = utility.checkpoint(args)
    net = BaselineModel(args, ckp)
    torch.save(net.get_model().state_dict(), work / 'baseline.pt')
    loader = Data(args)
    trainer = BaselineTrainer(args, loader, net, Loss(args, ckp), ckp)
    trainer.loader_train = timed = TimedBatches(loader.loader_train, limit)
    trainer.train()
    result['baseline_ips'] = timed.images_per_second(opts.warmup)

    torch.manual_seed(1)
    args = original_args(HINGE_FLAGS[depth].split() + common_flags(batch_size, opts, work, 'hinge', True))
    model, loader, trainer = original_hinge_trainer(args)
    trainer.loader_train = timed = TimedBatches(loader.loader_train, limit)
    trainer.train()
    result['search_ips'] = timed.images_per_second(opts.warmup)

    net = model.get_model()
    lr, reg = trainer.scheduler.get_lr()[-1], args.regularization_factor
    result['prox_ms'] = 1e3 * median_seconds(lambda: net.proximal_operator(lr, 1, reg), PROX_REPEATS)
    result['matrices'] = 2 * len(net.find_modules())

    scale_original_groups(net, args.model)
    merge = args.model.lower() in MERGING_MODELS
    result['flops_eval_ms'] = 1e3 * median_seconds(lambda: calc_model_complexity_running(model, merge),
                                                   FLOPS_REPEATS)
    start = now()
    binary_search(model, args.ratio, merge)
    net.compress()
    result['threshold_compress_s'] = now() - start
    result['threshold'] = float(args.threshold)
    result['searched_ratio'] = float(net.flops_compress / net.flops)

    trainer.reset_after_optimization(epoch_continue=2)
    trainer.loader_train = timed = TimedBatches(loader.loader_train, limit)
    trainer.train()
    result['converging_ips'] = timed.images_per_second(opts.warmup)
    return result


def measure_original_epoch(original: Path, opts: argparse.Namespace, work: Path) -> dict:
    """One whole search epoch of the original (ResNet-20, the paper's flags): t.train(), then t.test() and
    calc_model_complexity_running as its main_hinge loop runs them."""
    original_shims(original, opts.pylib, Path(opts.data), opts.device)
    from util import utility

    from model import Model as BaselineModel
    from model_hinge.hinge_utility import calc_model_complexity_running

    torch.manual_seed(1)
    args = original_args(BASELINE_FLAGS[EPOCH_DEPTH].split() + common_flags(EPOCH_BATCH, opts, work, 'baseline',
                                                                            False))
    torch.save(BaselineModel(args, utility.checkpoint(args)).get_model().state_dict(), work / 'baseline.pt')
    torch.manual_seed(1)
    args = original_args(HINGE_FLAGS[EPOCH_DEPTH].split() + common_flags(EPOCH_BATCH, opts, work, 'epoch', True))
    model, loader, trainer = original_hinge_trainer(args)
    start = now()
    trainer.train()
    trained = now()
    trainer.test()
    calc_model_complexity_running(model, args.model.lower() in MERGING_MODELS)
    done = now()
    images = len(loader.loader_train.dataset)
    return {'threads': torch.get_num_threads(), 'epoch_train_s': trained - start,
            'epoch_ips': images / (trained - start), 'epoch_total_s': done - start}


# ----------------------------------------------------------------------------------------------------------------
# Our side (child process only)


def ours_setup(argv: list[str], work: Path, device: torch.device):
    """Our parsed flags, data and a Session of main_hinge (log, history, trainer) in a run directory under
    `work`, for a Hinge model built as main_hinge builds a fresh one, on the device."""
    sys.path.insert(0, str(ROOT))
    import main_hinge
    import option
    from data import build_data
    from utils.distributed import SINGLE
    from utils.rundir import resolve_run_dir

    args = option.parse_args(argv)
    main_hinge.validate(args)
    data = build_data(args)
    run_dir = resolve_run_dir(args)
    hm, weights = main_hinge.build_hinge(args, data, run_dir, 'fresh')
    hm.net.to(device)
    flops, params = hm.cost()
    results = main_hinge.base_results(args, data, run_dir, hm.baseline_flops, hm.baseline_params, flops, params)
    session = main_hinge.open_session(args, device, data, run_dir, hm.net, results, None, True, SINGLE)
    return args, data, hm, weights, session


def ours_search_objects(args: argparse.Namespace, hm, weights):
    """Controller, optimizer, lr factor and hooks of the first search epoch, as main_hinge.search_stage makes
    them."""
    from model_hinge.search import SearchController, search_param_groups
    from trainer import make_optimizer
    from utils.schedule import StepSchedule
    from utils.steps import SearchHooks, set_learning_rates

    controller = SearchController(hm, args, weights if args.layer_balancing else None)
    optimizer = make_optimizer(args, search_param_groups(hm, args.lr, args.lr_ratio, args.legacy_search), args.lr,
                               tensor_lrs=hm.policy.separate_roles)
    factor = StepSchedule(args.decay, args.gamma, args.linear).factor(1)
    hooks = SearchHooks(controller)
    set_learning_rates(optimizer, factor,
                       controller.lr_multipliers(len(optimizer.param_groups), controller.grad_ratio)
                       if hm.policy.separate_roles else None)
    return controller, optimizer, factor, hooks


def scale_our_groups(hm) -> None:
    """The synthetic searched state on our model, group family by group family."""
    from model_hinge.groups import GroupBank

    generator = torch.Generator().manual_seed(1)
    for fam in hm.families:
        GroupBank([fam]).scale_(searched_factors(fam.size, generator))


def threshold_and_compress(hm, args: argparse.Namespace, weights, legacy: bool) -> tuple[float, float]:
    """(seconds, threshold) of our threshold search + compression, as main_hinge.compress_stage runs them. The
    complexity model is re-traced after the clock stops, as the original counts the compressed network after its
    timed binary_search + compress (main_hinge's calc_model_complexity)."""
    from model_hinge.search import SearchController
    from model_hinge.surgery import compress
    from utils.rundir import SilentLog

    controller = SearchController(hm, args, weights if args.layer_balancing else None)
    start = now()
    norms = controller.family_norms()
    search = controller.search_threshold_legacy if legacy else controller.search_threshold
    threshold = search(norms, args.ratio, SilentLog())
    kept = controller.kept(norms, threshold)
    compress(hm.families, kept, hm.net, legacy)
    seconds = now() - start
    hm.retrace()
    return seconds, threshold


def measure_ours(depth: int, batch_size: int, opts: argparse.Namespace, work: Path) -> dict:
    """The stage figures of our code for one depth and batch size (see the module docstring)."""
    sys.path.insert(0, str(ROOT))
    import option
    from data import Data, build_data
    from loss import Loss
    from main_hinge import CONVERGING_STREAM, load_teacher
    from model import build_baseline
    from model_hinge import adapter_for
    from model_hinge.search import SearchController
    from trainer import Trainer, make_optimizer
    from utils.rundir import ConsoleLog
    from utils.steps import BatchHooks, ConvergingHooks

    limit = opts.warmup + opts.batches
    device = torch.device(opts.device)
    result = {'threads': torch.get_num_threads()}

    torch.manual_seed(1)
    args = option.parse_args(BASELINE_FLAGS[depth].split() + common_flags(batch_size, opts, work, 'baseline', False))
    net = build_baseline(args)
    torch.save(net.state_dict(), work / 'baseline.pt')
    net.to(device)
    data = build_data(args)
    data.train.memory_format = torch.channels_last      # as main_hinge.open_session sets it
    data.train.to(device)
    data.test.to(device)
    timed = TimedBatches(data.train, limit)
    trainer = Trainer(args, net, Loss(args.loss).to(device), Data(timed, data.test, data.name, data.input_dim),
                      ConsoleLog(), device)
    optimizer = make_optimizer(args, [{'params': [p for p in net.parameters() if p.requires_grad]}], args.lr)
    trainer.train_epoch(1, optimizer, 1.0, BatchHooks(), 1)
    result['baseline_ips'] = timed.images_per_second(opts.warmup)

    torch.manual_seed(1)
    args, data, hm, weights, session = ours_setup(
        HINGE_FLAGS[depth].split() + common_flags(batch_size, opts, work, 'hinge', True), work, device)
    teacher = load_teacher(args, adapter_for(args.model).baseline, device)
    controller, optimizer, factor, hooks = ours_search_objects(args, hm, weights)
    trainer = session.trainer
    trainer.data = Data(TimedBatches(data.train, limit), data.test, data.name, data.input_dim)
    trainer.train_epoch(1, optimizer, factor, hooks, 1)
    result['search_ips'] = trainer.data.train.images_per_second(opts.warmup)

    lrs, reg = controller.prox_lrs(optimizer), controller.regularization(controller.penalty[0])
    result['prox_ms'] = 1e3 * median_seconds(lambda: controller.proximal_step(lrs, reg), PROX_REPEATS)
    result['matrices'] = len({id(m.param) for fam in hm.families for m in fam.members})

    scale_our_groups(hm)
    result['flops_eval_ms'] = 1e3 * median_seconds(
        lambda: controller.cost(controller.family_norms(), args.threshold), FLOPS_REPEATS)
    legacy_args = copy.copy(args)
    legacy_args.legacy_search = True
    result['threshold_compress_legacy_s'], result['threshold_legacy'] = threshold_and_compress(
        copy.deepcopy(hm), legacy_args, weights, True)
    result['threshold_compress_s'], result['threshold'] = threshold_and_compress(hm, args, weights, False)
    result['searched_ratio'] = hm.cost()[0] / hm.baseline_flops

    trainer.set_network(hm.net)
    optimizer = make_optimizer(args, [{'params': [p for p in hm.net.parameters() if p.requires_grad]}],
                               args.lr * args.lr_factor)
    trainer.teacher = teacher
    trainer.data = Data(TimedBatches(data.train, limit), data.test, data.name, data.input_dim)
    trainer.train_epoch(1, optimizer, 1.0, ConvergingHooks(SearchController(hm, args, None)), CONVERGING_STREAM + 1)
    result['converging_ips'] = trainer.data.train.images_per_second(opts.warmup)
    session.close()
    return result


def measure_ours_epoch(opts: argparse.Namespace, work: Path) -> dict:
    """One whole search epoch of ours (ResNet-20, the paper's flags): the body of main_hinge.search_stage's
    loop (train_epoch, evaluate, FLOPs ratio, history, checkpoint)."""
    sys.path.insert(0, str(ROOT))
    import option
    from model import build_baseline
    from trainer import log_evaluation, save_epoch

    torch.manual_seed(1)
    args = option.parse_args(BASELINE_FLAGS[EPOCH_DEPTH].split()
                             + common_flags(EPOCH_BATCH, opts, work, 'baseline', False))
    torch.save(build_baseline(args).state_dict(), work / 'baseline.pt')
    torch.manual_seed(1)
    args, data, hm, weights, s = ours_setup(
        HINGE_FLAGS[EPOCH_DEPTH].split() + common_flags(EPOCH_BATCH, opts, work, 'epoch', True), work,
        torch.device(opts.device))
    controller, optimizer, factor, hooks = ours_search_objects(args, hm, weights)
    start = now()
    stats = s.trainer.train_epoch(1, optimizer, factor, hooks, 1)
    trained = now()
    test = s.trainer.evaluate()
    flops, params = controller.cost(controller.family_norms(), args.threshold)
    s.history.add_epoch('search', 1, stats, test, {'lr': float(optimizer.param_groups[-1]['lr']),
                                                   'flops_ratio': flops / hm.baseline_flops})
    log_evaluation(s, test, 'search')
    save_epoch(s, 'search', 1, optimizer)
    done = now()
    s.close()
    return {'threads': torch.get_num_threads(), 'epoch_train_s': trained - start,
            'epoch_ips': data.train.num_samples / (trained - start), 'epoch_total_s': done - start}


# ----------------------------------------------------------------------------------------------------------------
# The parent: children, medians, the table

# (label, key of the original, key of ours, higher is better, 'batch': per depth and batch size, 'depth': per
# depth (batch sizes pooled), 'epoch': the ResNet-20 epoch)
FIGURES = [
    ('baseline training, images/s', 'baseline_ips', 'baseline_ips', True, 'batch'),
    ('search training (PG, prox step, lr adjustment), images/s', 'search_ips', 'search_ips', True, 'batch'),
    ('converging training (distillation), images/s', 'converging_ips', 'converging_ips', True, 'batch'),
    ('proximal step, ms', 'prox_ms', 'prox_ms', False, 'depth'),
    ('would-be FLOPs evaluation, ms', 'flops_eval_ms', 'flops_eval_ms', False, 'depth'),
    ('threshold search + compression, s (ours: bisection)', 'threshold_compress_s', 'threshold_compress_s', False,
     'depth'),
    ('threshold search + compression, s (ours: legacy walk)', 'threshold_compress_s', 'threshold_compress_legacy_s',
     False, 'depth'),
    ('search epoch: training pass, s', 'epoch_train_s', 'epoch_train_s', False, 'epoch'),
    ('search epoch: training pass, images/s', 'epoch_ips', 'epoch_ips', True, 'epoch'),
    ('search epoch: + test, FLOPs ratio, checkpoint, s', 'epoch_total_s', 'epoch_total_s', False, 'epoch'),
]
SIDES = ('original', 'ours')


def run_child(side: str, task: str, depth: int, batch_size: int, opts: argparse.Namespace, scratch: Path) -> dict:
    """Run one measurement in a fresh process; its output goes to a log file in its own work directory."""
    work = Path(tempfile.mkdtemp(prefix=f'{side}-{task}-{depth}-{batch_size}-', dir=scratch))
    out = work / 'result.json'
    command = [sys.executable, str(Path(__file__).resolve()), '--side', side, '--task', task, '--depth', str(depth),
               '--batch_size', str(batch_size), '--json', str(out), '--work', str(work), '--original',
               str(opts.original), '--data', str(opts.data), '--batches', str(opts.batches), '--warmup',
               str(opts.warmup), '--n_threads', str(opts.n_threads), '--device', opts.device, '--pylib', *opts.pylib]
    env = dict(os.environ)
    if opts.threads:
        env.update(OMP_NUM_THREADS=str(opts.threads), MKL_NUM_THREADS=str(opts.threads))
    print(f'  {side:8} {task:6} ResNet-{depth} batch {batch_size} ...', end=' ', flush=True)
    start = time.perf_counter()
    with open(work / 'child.log', 'w') as log:
        done = subprocess.run(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f'{time.perf_counter() - start:.0f} s' + ('' if done.returncode == 0 else f' (failed, {work}/child.log)'))
    if done.returncode != 0:
        tail = (work / 'child.log').read_text(errors='replace').strip().splitlines()[-1:]
        return {'error': f'{side} {task} ResNet-{depth} batch {batch_size}: {" ".join(tail)}'}
    return json.loads(out.read_text())


def collect(opts: argparse.Namespace, scratch: Path) -> dict:
    """{(side, task, depth, batch): [result per repeat]}; the sides alternate, each starting every other
    repeat, so that a drift of the machine's load affects both alike."""
    jobs = [('stages', d, b) for d in opts.depths for b in opts.batch_sizes]
    if not opts.no_epoch:
        jobs.append(('epoch', EPOCH_DEPTH, EPOCH_BATCH))
    runs: dict = {}
    for repeat in range(opts.repeats):
        print(f'repeat {repeat + 1} of {opts.repeats}', flush=True)
        for task, depth, batch in jobs:
            for side in (SIDES if repeat % 2 == 0 else SIDES[::-1]):
                runs.setdefault((side, task, depth, batch), []).append(
                    run_child(side, task, depth, batch, opts, scratch))
    return runs


def suite_seconds() -> float:
    """Wall time of our default test suite (the README's test command) in a fresh process."""
    print('  ours     pytest (the default suite) ...', end=' ', flush=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider'], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    print(f'{seconds:.0f} s' + ('' if done.returncode == 0 else ' (some tests failed)'))
    return seconds


def median_of(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else None


def compare(runs: dict, depths: list[int], batch_sizes: list[int]) -> list[dict]:
    """Rows {figure, depth, batch, original, ours, ratio, better} of the medians; ratio = ours / original."""
    rows = []
    for label, key_original, key_ours, higher, per in FIGURES:
        if per == 'epoch':
            cells = [(EPOCH_DEPTH, EPOCH_BATCH, [('epoch', EPOCH_DEPTH, EPOCH_BATCH)])]
        elif per == 'depth':
            cells = [(d, None, [('stages', d, b) for b in batch_sizes]) for d in depths]
        else:
            cells = [(d, b, [('stages', d, b)]) for d in depths for b in batch_sizes]
        for depth, batch, keys in cells:
            pooled = {side: [r for k in keys for r in runs.get((side, *k), [])] for side in SIDES}
            if not pooled['original'] and not pooled['ours']:
                continue
            original, ours = median_of(pooled['original'], key_original), median_of(pooled['ours'], key_ours)
            ratio = ours / original if original and ours is not None else None
            rows.append({'figure': label, 'depth': depth, 'batch': batch, 'original': original, 'ours': ours,
                         'ratio': ratio, 'higher_is_better': higher})
    return rows


def _number(value: float | None) -> str:
    if value is None:
        return '–'
    return f'{value:,.0f}' if abs(value) >= 100 else f'{value:.3g}'


def _verdict(row: dict) -> str:
    ratio = row['ratio']
    if ratio is None or ratio <= 0:
        return '–'
    speedup = ratio if row['higher_is_better'] else 1 / ratio
    return f'{speedup:.2f}x faster' if speedup >= 1 else f'{1 / speedup:.2f}x slower'


def markdown_table(rows: list[dict]) -> list[str]:
    """The comparison as Markdown table lines."""
    lines = ['| figure | ResNet | batch | original | ours | ours/original | ours is |', '|---|---|---|---|---|---|---|']
    for r in rows:
        batch = '–' if r['batch'] is None else str(r['batch'])
        ratio = '–' if r['ratio'] is None else f'{r["ratio"]:.3f}'
        lines.append(f'| {r["figure"]} | {r["depth"]} | {batch} | {_number(r["original"])} | {_number(r["ours"])} | '
                     f'{ratio} | {_verdict(r)} |')
    return lines


def details(runs: dict) -> list[str]:
    """What each side compressed to and with how many threads, and the failures, as Markdown lines."""
    lines = ['| side | ResNet | batch | threads | A matrices | threshold reached | FLOPs ratio reached |',
             '|---|---|---|---|---|---|---|']
    errors = []
    for (side, task, depth, batch), results in sorted(runs.items(), key=lambda item: (item[0][2], item[0][3],
                                                                                       item[0][1], item[0][0])):
        errors += [r['error'] for r in results if 'error' in r]
        good = [r for r in results if 'error' not in r]
        if task != 'stages' or not good:
            continue
        threshold = median_of(good, 'threshold')
        lines.append(f'| {side} | {depth} | {batch} | {good[0]["threads"]} | {good[0]["matrices"]} | '
                     f'{threshold:.6g} | {median_of(good, "searched_ratio"):.4f} |')
    return lines + ([''] + [f'Failed: {e}' for e in errors] if errors else [])


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """'CPU', or the GPU's name."""
    return torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU'


def report(runs: dict, opts: argparse.Namespace, command: str, load: tuple[float, float], seconds: float,
           suite: float | None) -> str:
    threads = opts.threads or os.environ.get('OMP_NUM_THREADS') or f'torch default ({torch.get_num_threads()})'
    lines = ['## Side by side with the original code (real CIFAR-10 subset)', '',
             f'- Date: {datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}; total run time {seconds / 60:.0f} min',
             f'- Machine: {cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; '
             f'Python {platform.python_version()}, torch {torch.__version__}; device: {device_name(opts.device)}',
             f'- Threads per process: {threads}; data-loader workers of the original: {opts.n_threads}',
             f'- Load average (1 min) at the start / end: {load[0]:.2f} / {load[1]:.2f}',
             f'- Data: {opts.data}',
             f'- Stages timed over {opts.batches} batches after {opts.warmup} warm-up batches; medians of '
             f'{opts.repeats} repeats, every figure from a fresh process, the two codes alternating',
             f'- Command: `{command}`', '',
             'ours/original: for images/s above 1 means ours is faster; for times below 1 means ours is faster.',
             'Per-depth figures pool both batch sizes.', '']
    lines += markdown_table(compare(runs, opts.depths, opts.batch_sizes))
    if suite is not None:
        lines += ['', f'Our default test suite (`python -m pytest -q`, the original has none): {suite:.0f} s wall '
                  'time, in the same run.']
    lines += ['', '## Searched state, compressed', ''] + details(runs)
    return '\n'.join(lines) + '\n'


def child(opts: argparse.Namespace) -> None:
    """`--side original|ours`: measure one task and write its JSON."""
    work, original = Path(opts.work), Path(opts.original).resolve()
    if opts.side == 'original':
        result = (measure_original_epoch(original, opts, work) if opts.task == 'epoch'
                  else measure_original(original, opts.depth, opts.batch_size, opts, work))
    else:
        result = (measure_ours_epoch(opts, work) if opts.task == 'epoch'
                  else measure_ours(opts.depth, opts.batch_size, opts, work))
    Path(opts.json).write_text(json.dumps(result, indent=1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--original', required=True, help='checkout of ofsoundof/group_sparsity (read only)')
    parser.add_argument('--data', required=True, help='folder holding cifar-10-batches-py/')
    parser.add_argument('--depths', type=int, nargs='+', default=[20, 56, 164], choices=sorted(HINGE_FLAGS))
    parser.add_argument('--batch_sizes', type=int, nargs='+', default=[64, 128])
    parser.add_argument('--batches', type=int, default=20, help='timed batches per stage')
    parser.add_argument('--warmup', type=int, default=3, help='untimed batches before them')
    parser.add_argument('--repeats', type=int, default=3, help='runs of every measurement (medians are reported)')
    parser.add_argument('--threads', type=int, default=0, help='OMP/MKL threads per process (0: torch default)')
    parser.add_argument('--n_threads', type=int, default=6, help="data-loader workers (both codes' default: 6)")
    parser.add_argument('--pylib', nargs='*', default=[], help="folders with the original's extra packages")
    parser.add_argument('--no_epoch', action='store_true', help='skip the whole ResNet-20 search epoch')
    parser.add_argument('--no_suite', action='store_true', help='skip timing our test suite')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'],
                        help='where both codes train (cpu: the original gets --cpu and shim S1)')
    parser.add_argument('--out', default='', help='also write the Markdown report here')
    parser.add_argument('--side', choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument('--task', choices=['stages', 'epoch'], help=argparse.SUPPRESS)
    parser.add_argument('--depth', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--batch_size', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--json', help=argparse.SUPPRESS)
    parser.add_argument('--work', help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None, script: str = 'scripts/benchmark_original.py') -> str:
    """Measure (or, with --side, be one measurement's child process) and return the Markdown report."""
    argv = sys.argv[1:] if argv is None else argv
    opts = build_parser().parse_args(argv)
    opts.data = str(Path(opts.data).resolve())
    opts.pylib = [str(Path(p).resolve()) for p in opts.pylib]
    if opts.side:
        child(opts)
        return ''
    prefix = f'OMP_NUM_THREADS={os.environ["OMP_NUM_THREADS"]} ' if 'OMP_NUM_THREADS' in os.environ else ''
    command = prefix + shlex.join(['python', script, *argv])
    start, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix='bench-original-') as scratch:
        runs = collect(opts, Path(scratch))
    suite = None if opts.no_suite else suite_seconds()
    text = report(runs, opts, command, (load, os.getloadavg()[0]), time.perf_counter() - start, suite)
    print(text)
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.out).write_text(text)
    return text


if __name__ == '__main__':
    main()
