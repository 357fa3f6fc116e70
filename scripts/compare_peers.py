"""Hinge against Torch-Pruning on the CIFAR-10 subset: same baseline, same epochs, same FLOPs target.

For every network (our CIFAR ResNets `resnetN`, N = 6n+2, option-A shortcuts; any torchvision classification
model by name, num_classes=10, 32x32 input) and seed, one baseline is trained with the budget and cached in --out;
then each method starts from a copy of it and gets the same number of epochs (--epochs) to reach half its FLOPs:

- `hinge`: model_hinge.Hinge in a plain training loop with the automatic plan (its default: coupled channels
  pruned together, on our ResNets the residual streams across the zero-padding shortcuts, which it cuts by index);
  the paper's flags (ResNet-56's on ResNet-56, ResNet-20's elsewhere) with the regularization factor scaled by
  300 / --epochs; search until the would-be ratio is within stop_limit of the target (at most half the budget),
  compress, fine-tune with the rest (lr 0.1, x0.1 at 50 % and 75 %). No distillation: no method distils.
- `hinge_paper`: the same with the hand-written plan Hinge_ResNet_Basic_SVD (the paper's plan for ResNet-20/56,
  scripts/hinge_resnet.sh: both convolutions of every block decomposed); our ResNets only (other networks have
  no hand-written plan: a row note).
- `tp_magnitude`: Torch-Pruning's BasePruner (alias MagnitudePruner) with MagnitudeImportance and its defaults
  (local pruning), 400 iterative steps towards a pruning ratio of 1.0 until half the FLOPs (its reproduce/main.py
  recipe), then fine-tuning for the whole budget (lr 0.01, momentum 0.9, weight decay 5e-4, x0.1 at 60 %, 80 %).
- `tp_groupnorm`: Torch-Pruning's GroupNormPruner (its CIFAR `group_sl` recipe: GroupMagnitudeImportance(p=2,
  normalizer='max'), reg 5e-4): sparse training with its regulariser for half the budget (lr 0.01, no weight
  decay), the same progressive pruning, fine-tuning with the rest. Its reg is the recipe's, not scaled to the budget.
- `hinge_tp_flops`: `hinge` searched to the FLOPs ratio `tp_magnitude` reached on the same seed (its
  progressive pruning stops at the first step below half, 0.47 on our ResNets): the two at equal FLOPs, for
  the question whether Hinge's network is as fast as Torch-Pruning's. Needs `tp_magnitude` in --methods.
- `baseline`: the cached baseline itself.
Every run's batch size is 64 (--batch-size), the paper's for ResNet-20/56. The rows of the automatic plan (`hinge`,
`hinge_tp_flops`) compress with --allocation (model_hinge's allocation; default fastest: the fastest of a few
rankings of the groups at the target FLOPs, timed at --batch-size on the CPU; norm: the paper's threshold on the
group norms); with --channel_multiple N they keep channel counts that are multiples of N (model_hinge's
channel_multiple; the report says so in its scope line).

Every FLOPs and parameter count, including the stopping test of the progressive pruning, is model_hinge.count.
Torch-Pruning does not see the zero-padding shortcut of option A (its width follows the input's), so on our
ResNets the convolutions that write the residual channels (the stem and every block's second convolution) are
left to it unpruned; it prunes the inner channels of every block. Throughput is timed once every seed ran, every
seed's network of every method taking turns in each round (a shared machine's slow and fast spells fall on every
row alike), every network channels last (weights and batch: the layout they train in here, whatever layout it was
left in); a method's speed against Torch-Pruning pairs each seed's network with Torch-Pruning's of that seed.
A method that fails on a network (Torch-Pruning on shufflenet_v2: ZeroDivisionError) becomes a row note.
Torch-Pruning is optional (requirements-bench.txt).

    python scripts/compare_peers.py [--nets resnet20 resnet56 resnet18 mobilenet_v2] [--seeds 0 1 2] [--epochs 3]
        [--methods baseline hinge hinge_paper tp_magnitude tp_groupnorm hinge_tp_flops] [--device cpu|cuda]
        [--threads N] [--channel_multiple N] [--allocation fastest|norm]
        [--out runs/peers] [--doc docs/peers.md] [--dry-run]
"""

import argparse
import copy
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark_original import cpu_name  # noqa: E402

import model_hinge  # noqa: E402
import option  # noqa: E402
from data import build_data  # noqa: E402
from model import resnet  # noqa: E402
from model_hinge.latency import paired_ratios  # noqa: E402
from utils.export import to_program  # noqa: E402

NETS = ['resnet20', 'resnet56', 'resnet18', 'mobilenet_v2']
METHODS = ['baseline', 'hinge', 'hinge_paper', 'tp_magnitude', 'tp_groupnorm', 'hinge_tp_flops']
PAPER_PLAN = 'Hinge_ResNet_Basic_SVD'
RATIO, PAPER_EPOCHS, TP_STEPS, DRY_TP_STEPS = 0.5, 300, 400, 20
REFERENCE = 'tp_magnitude'   # the method every other network's speed is paired against
INPUT = (3, 32, 32)
# The paper's search flags (scripts/hinge_resnet.sh, CIFAR-10): ResNet-56's entry, ResNet-20's for every other net.
PAPER_FLAGS = {
    20: dict(sparsity_regularizer='l1', regularization_factor=2e-4, annealing_factor=2, annealing_t1=20,
             annealing_t2=15),
    56: dict(sparsity_regularizer='l1d2', regularization_factor=4e-4, annealing_factor=2),
}
COMMON_FLAGS = dict(init_method='svd2', threshold=5e-3, stop_limit=0.1, p1_p2_same_ratio=True, layer_balancing=True)
DRY = dict(images=16, batch=8, epochs=2)
# The default budget: one epoch of ResNet-20/56, resnet18, mobilenet_v2 took 23/123/52/35 s with one thread on the
# shared 2-core machine while others ran (load 3-7). With 4 trainings of E epochs per network and seed, the pruning
# loops, evaluations and throughput, E = 3 makes the default run (4 networks, 3 seeds) about 2.8 h at those speeds
# and, at about 3x (idle, 2 threads), about an hour on 2 idle cores: 63 and 75 min measured (2026-12-07, baselines
# cached, every seed's network timed in the second).
DEFAULT_EPOCHS = 3


# ----------------------------------------------------------------------------------------------------------------
# Networks and data


def our_depth(name: str) -> int | None:
    """The depth of one of our CIFAR ResNets (`resnetN`, N = 6n+2, not a torchvision name), else None."""
    found = re.fullmatch(r'resnet(\d+)', name)
    if not found or name in torchvision.models.list_models(module=torchvision.models):
        return None
    depth = int(found.group(1))
    return depth if depth >= 8 and (depth - 2) % 6 == 0 else None


def refuse(sentence: str) -> None:
    """Say why nothing runs, in one sentence, and exit with status 2."""
    print(f'compare_peers: {sentence}', file=sys.stderr)
    raise SystemExit(2)


def check_net(name: str) -> None:
    """Refuse a network that is neither one of our ResNets nor a torchvision classification model."""
    if our_depth(name) is None and name not in torchvision.models.list_models(module=torchvision.models):
        refuse(f'--nets {name} is neither resnetN (N = 6n+2, our CIFAR ResNet) nor a torchvision classification '
               'model (e.g. resnet18, mobilenet_v2).')


def build_net(name: str, seed: int) -> nn.Module:
    """A freshly initialised network (seeded): our ResNet with option-A shortcuts, or torchvision's."""
    torch.manual_seed(seed)
    depth = our_depth(name)
    if depth is None:
        return torchvision.models.get_model(name, num_classes=10)
    return resnet.build(option.parse_args(['--template', 'CIFAR10', '--model', 'ResNet', '--depth', str(depth),
                                           '--downsample_type', 'A']))


def shrink(batches, images: int, batch_size: int):
    """The first `images` images of a TensorBatches, in batches of `batch_size` (the dry run)."""
    small = copy.copy(batches)
    small.images, small.labels, small.batch_size = batches.images[:images], batches.labels[:images], batch_size
    return small


def load_data(opts: argparse.Namespace, seed: int, device: torch.device):
    """(train, test) batches of the CIFAR-10 subset on the device, shuffled with the seed."""
    args = option.parse_args(['--template', 'CIFAR10', '--dir_data', opts.data, '--batch_size',
                              str(opts.batch_size), '--seed', str(seed)])
    data = build_data(args)
    train, test = data.train.to(device), data.test.to(device)
    train.memory_format = test.memory_format = torch.channels_last      # the faster layout, as main_hinge trains
    if opts.dry_run:
        return shrink(train, DRY['images'], DRY['batch']), shrink(test, DRY['images'], DRY['batch'])
    return train, test


# ----------------------------------------------------------------------------------------------------------------
# Training


def step_factor(progress: float, milestones: tuple[float, ...]) -> float:
    """The lr factor at a fraction of a stage: x0.1 per milestone passed."""
    return 0.1 ** sum(progress >= m for m in milestones)


def train(net: nn.Module, batches, optimizer, epochs: int, milestones: tuple[float, ...], first_epoch: int,
          after_backward=None, step=None, per_epoch=None) -> None:
    """Plain cross-entropy training for `epochs` (channels-last), lrs stepped at fractions of the iterations;
    hooks for the methods (after backward, instead of optimizer.step, at the start of every epoch)."""
    base = [g['lr'] for g in optimizer.param_groups]
    total, done = max(1, epochs * len(batches)), 0
    net.to(memory_format=torch.channels_last).train()
    for epoch in range(first_epoch, first_epoch + epochs):
        batches.set_epoch(epoch)
        if per_epoch:
            per_epoch()
        for x, y in batches:
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                group['lr'] = lr * step_factor(done / total, milestones)
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward:
                after_backward()
            if step:
                step(optimizer)
            else:
                optimizer.step()
            done += 1


def top1_error(net: nn.Module, batches) -> float:
    """Top-1 error (percent) on the test batches, in eval mode."""
    net.eval()
    wrong = total = 0
    with torch.no_grad():
        for x, y in batches:
            wrong += int((net(x).argmax(1) != y).sum())
            total += len(y)
    return 100.0 * wrong / total


def clock(device: torch.device) -> float:
    """The wall clock once the device's queued work has finished."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter()


def sgd(params, lr: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum 0.9, as every recipe here uses."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def baseline(name: str, seed: int, ctx: dict) -> tuple[nn.Module, dict]:
    """The trained baseline of a network and seed, from the cache in --out or trained (lr 0.1, weight decay 1e-4,
    x0.1 at 50 % and 75 %) and cached; with its error and training seconds."""
    opts = ctx['opts']
    tag = f'{name}_seed{seed}_e{opts.epochs}_b{opts.batch_size}' + ('_dry' if opts.dry_run else '')
    path = Path(opts.out) / 'baselines' / f'{tag}.pt'
    net = build_net(name, seed).to(ctx['device'])
    if path.is_file():
        saved = torch.load(path, map_location=ctx['device'], weights_only=True)
        net.load_state_dict(saved['state_dict'])
        return net, {'top1_err': saved['top1_err'], 'seconds': saved['seconds'], 'cached': True}
    start = clock(ctx['device'])
    train(net, ctx['train'], sgd(net.parameters(), 0.1, 1e-4), opts.epochs, (0.5, 0.75), 1)
    info = {'seconds': clock(ctx['device']) - start, 'top1_err': top1_error(net, ctx['test'])}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': net.state_dict(), **info}, path)
    return net, dict(info, cached=False)


# ----------------------------------------------------------------------------------------------------------------
# The methods: each takes a copy of the baseline and returns (compressed network, details)


def hinge_options(name: str, epochs: int) -> dict:
    """The paper's search flags for the network, with the regularization factor scaled to the budget."""
    flags = dict(PAPER_FLAGS[56 if our_depth(name) == 56 else 20], **COMMON_FLAGS)
    flags['regularization_factor'] *= PAPER_EPOCHS / epochs
    return flags


def run_hinge(net: nn.Module, name: str, ctx: dict, plan: str | None = None,
              ratio: float = RATIO) -> tuple[nn.Module, dict]:
    """Search (at most half the budget) until the would-be ratio is within stop_limit of the target, compress,
    fine-tune for the rest of the budget. `plan`: a hand-written plan's name (None: the automatic plan)."""
    epochs, example = ctx['opts'].epochs, ctx['example']
    opts = ctx['opts']
    automatic = {} if plan else {'channel_multiple': opts.channel_multiple, 'allocation': opts.allocation,
                                 'latency_batch': opts.batch_size}
    hinge = model_hinge.Hinge(net, example, plan=plan, ratio=ratio, **hinge_options(name, epochs), **automatic)
    optimizer = sgd(hinge.param_groups(lr=0.1, lr_ratio=0.01), 0.1, 1e-4)
    searched, would_be = 0, hinge.ratio()
    while searched < max(1, epochs // 2) and would_be - ratio > hinge.config.stop_limit:
        searched += 1
        train(net, ctx['train'], optimizer, 1, (), epochs + searched, step=hinge.step)
        would_be = hinge.ratio()
    small = hinge.compress()
    compressed_err = top1_error(small, ctx['test'])
    train(small, ctx['train'], sgd(small.parameters(), 0.1, 1e-4), epochs - searched, (0.5, 0.75),
          epochs + searched + 1)
    chosen = {key: hinge.report()[key] for key in ('allocation', 'allocations') if key in hinge.report()}
    return small, {'search_epochs': searched, 'would_be_ratio': would_be, 'threshold': hinge.threshold,
                   'compressed_top1_err': compressed_err, **chosen}


def ignored_layers(net: nn.Module) -> list[nn.Module]:
    """What Torch-Pruning must not prune: the classifier (its recipe) and, on our option-A ResNets, the
    convolutions that write the residual channels (the zero-padding shortcut fixes their widths)."""
    ignored = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == 10]
    if any(isinstance(m, resnet.DownSampleA) for m in net.modules()):
        ignored += [net.features[0][0]] + [block.body[3] for stage in net.features[1:4] for block in stage]
    return ignored


def progressive_pruning(net: nn.Module, pruner, example: torch.Tensor) -> dict:
    """Torch-Pruning's iterative steps until the network has at most RATIO of its FLOPs (model_hinge.count)."""
    net.zero_grad(set_to_none=True)
    net.eval()
    base = model_hinge.count(net, example)[0]
    flops = base
    while flops > RATIO * base and pruner.current_step < pruner.iterative_steps:
        pruner.step()
        flops = model_hinge.count(net, example)[0]
    return {'pruning_steps': pruner.current_step}


def tp_finetune(net: nn.Module, ctx: dict, epochs: int, first_epoch: int) -> None:
    """Torch-Pruning's fine-tuning recipe (reproduce/main.py): lr 0.01, weight decay 5e-4, x0.1 at 60 % and 80 %."""
    train(net, ctx['train'], sgd(net.parameters(), 0.01, 5e-4), epochs, (0.6, 0.8), first_epoch)


def run_tp_magnitude(net: nn.Module, name: str, ctx: dict) -> tuple[nn.Module, dict]:
    """BasePruner (MagnitudePruner and MetaPruner are its aliases in 1.6) with MagnitudeImportance, its defaults
    (local pruning), progressive pruning, fine-tuning for the whole budget."""
    import torch_pruning as tp

    pruner = tp.pruner.BasePruner(net, ctx['example'], importance=tp.importance.MagnitudeImportance(),
                                  iterative_steps=ctx['tp_steps'], pruning_ratio=1.0,
                                  ignored_layers=ignored_layers(net))
    details = progressive_pruning(net, pruner, ctx['example'])
    tp_finetune(net, ctx, ctx['opts'].epochs, ctx['opts'].epochs + 1)
    return net, details


def run_tp_groupnorm(net: nn.Module, name: str, ctx: dict) -> tuple[nn.Module, dict]:
    """GroupNormPruner: sparse training with its regulariser (half the budget), progressive pruning, fine-tuning."""
    import torch_pruning as tp

    epochs = ctx['opts'].epochs
    importance = tp.importance.GroupMagnitudeImportance(p=2, normalizer='max')
    pruner = tp.pruner.GroupNormPruner(net, ctx['example'], importance=importance, reg=5e-4,
                                       iterative_steps=ctx['tp_steps'], pruning_ratio=1.0,
                                       ignored_layers=ignored_layers(net))
    sparse = epochs // 2
    train(net, ctx['train'], sgd(net.parameters(), 0.01, 0.0), sparse, (0.6, 0.8), epochs + 1,
          after_backward=lambda: pruner.regularize(net), per_epoch=pruner.update_regularizer)
    details = dict(progressive_pruning(net, pruner, ctx['example']), sparse_epochs=sparse)
    tp_finetune(net, ctx, epochs - sparse, epochs + sparse + 1)
    return net, details


def run_hinge_paper(net: nn.Module, name: str, ctx: dict) -> tuple[nn.Module, dict]:
    """run_hinge with the paper's hand-written plan."""
    return run_hinge(net, name, ctx, PAPER_PLAN)


def run_hinge_tp_flops(net: nn.Module, name: str, ctx: dict) -> tuple[nn.Module, dict]:
    """run_hinge (automatic plan) to the FLOPs ratio tp_magnitude reached on this seed."""
    return run_hinge(net, name, ctx, ratio=ctx['reached']['tp_magnitude'])


RUNNERS = {'hinge': run_hinge, 'hinge_paper': run_hinge_paper, 'tp_magnitude': run_tp_magnitude,
           'tp_groupnorm': run_tp_groupnorm, 'hinge_tp_flops': run_hinge_tp_flops}


# ----------------------------------------------------------------------------------------------------------------
# Measuring


def forward_seconds(run, x: torch.Tensor, calls: int) -> float:
    """Seconds per forward pass of `run` on `x`, averaged over `calls` passes."""
    start = time.perf_counter()
    for _ in range(calls):
        run(x)
    return (time.perf_counter() - start) / calls


def channels_last_batch(batch: int) -> torch.Tensor:
    """A random CPU batch of CIFAR-sized images, laid out channels last."""
    return torch.randn(batch, *INPUT).contiguous(memory_format=torch.channels_last)


def interleaved_throughput(nets: dict[tuple[str, int], nn.Module], dry: bool) -> tuple[dict, dict]:
    """Images/s on the CPU of each (method, seed) network at batch 1 and 64, eager and as a torch.export program
    (dynamic batch), and each network's speed against the REFERENCE method's network of the same seed (when it
    ran) in the same way. Every network runs channels last (its weights and the batch; the layout they trained in
    and the faster one here, whereas a cached baseline loads contiguous). The networks take turns within every
    round, so a slow or fast spell of a shared machine falls on all rows alike; a rate is the median over the
    rounds, a speed against the reference the median of the ratios within a round."""
    programs = {}
    example = channels_last_batch(2)
    for key, net in nets.items():
        net = copy.deepcopy(net).cpu().eval().to(memory_format=torch.channels_last)
        programs[key, 'eager'] = net
        programs[key, 'export'] = to_program(net, example).module()
    rounds, calls = (1, 2) if dry else (15, 10)
    rates = {key: {} for key in nets}
    against = {key: {} for key in nets if key[0] != REFERENCE and (REFERENCE, key[1]) in nets}
    with torch.inference_mode():
        for batch in (1, 64):
            x, n = channels_last_batch(batch), calls if batch == 1 else max(1, calls // 5)
            times = {key: [] for key in programs}
            for run in programs.values():
                run(x)
            for _ in range(rounds):
                for key, run in programs.items():
                    times[key].append(forward_seconds(run, x, n))
            for (key, kind), seconds in times.items():
                rates[key][f'{kind}_b{batch}'] = batch / statistics.median(seconds)
                if key in against:
                    reference = times[(REFERENCE, key[1]), kind]
                    against[key][f'{kind}_b{batch}'] = paired_ratios([seconds, reference])[1]
    return rates, against


def over_seeds(runs: list[dict], key: str) -> tuple[dict, dict]:
    """The median over the runs that hold `key` of each of its values, and their [min, max]."""
    values = [run[key] for run in runs if key in run]
    if not values:
        return {}, {}
    medians = {name: statistics.median(v[name] for v in values) for name in values[0]}
    ranges = {name: [min(v[name] for v in values), max(v[name] for v in values)] for name in values[0]}
    return medians, ranges


def one_run(name: str, method: str, seed: int, ctx: dict, base: nn.Module, base_info: dict) -> tuple[nn.Module, dict]:
    """One method on one network and seed: the compressed network and its row values (with the output channels of
    its convolutions in module order, which say where each method cut)."""
    flops0, params0 = model_hinge.count(base, ctx['example'])
    if method == 'baseline':
        net, details = base, dict(base_info)
    else:
        torch.manual_seed(seed)
        start = clock(ctx['device'])
        net, details = RUNNERS[method](copy.deepcopy(base), name, ctx)
        details['seconds'] = clock(ctx['device']) - start
        details['top1_err'] = top1_error(net, ctx['test'])
    flops, params = model_hinge.count(net, ctx['example'])
    widths = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    return net, dict(details, seed=seed, flops=flops, params=params, baseline_flops=flops0, baseline_params=params0,
                     flops_ratio=flops / flops0, params_ratio=params / params0, conv_widths=widths)


def summarise(runs: list[dict]) -> dict:
    """Means (and the top-1 error's sample standard deviation) over the seeds that ran."""
    if not runs:
        return {}
    mean = {k: statistics.fmean(r[k] for r in runs) for k in ('flops_ratio', 'params_ratio', 'top1_err', 'seconds')}
    mean['top1_err_std'] = statistics.stdev(r['top1_err'] for r in runs) if len(runs) > 1 else 0.0
    return mean


def first_line(err: Exception) -> str:
    """The first line of an exception's message (empty for none)."""
    return (str(err).splitlines() or [''])[0]


def compare_net(name: str, ctx: dict) -> list[dict]:
    """Every method on one network over the seeds; a method that fails stops there and becomes a row note."""
    opts = ctx['opts']
    rows = {m: {'net': name, 'method': m, 'runs': [], 'note': ''} for m in opts.methods}
    if 'hinge_paper' in rows and not our_depth(name):
        rows['hinge_paper']['note'] = f'no hand-written plan ({PAPER_PLAN} is for our ResNets)'
    timed = {}  # every seed's network of each method, timed together once every seed ran
    for seed in opts.seeds:
        ctx['train'], ctx['test'] = load_data(opts, seed, ctx['device'])
        ctx['test_images'] = ctx['test'].num_samples
        base, base_info = baseline(name, seed, ctx)
        ctx['reached'] = {}  # FLOPs ratio per method on this seed
        for method in opts.methods:
            row = rows[method]
            if method == 'hinge_tp_flops' and 'tp_magnitude' not in ctx['reached']:
                row['note'] = row['note'] or f'tp_magnitude did not run on seed {seed}: no FLOPs ratio to match'
            if row['note']:
                continue
            print(f'{name} seed {seed} {method} ...', end=' ', flush=True)
            try:
                net, values = one_run(name, method, seed, ctx, base, base_info)
            except Exception as err:  # any failure of a method is a finding, not a crash
                row['note'] = f'failed on seed {seed}: {type(err).__name__}: {first_line(err)}'
                print(row['note'], flush=True)
                continue
            print(f'ratio {values["flops_ratio"]:.3f}, top-1 error {values["top1_err"]:.2f} %', flush=True)
            row['runs'].append(values)
            ctx['reached'][method] = values['flops_ratio']
            timed[method, seed] = net
    rates, against = interleaved_throughput(timed, opts.dry_run)
    for method, row in rows.items():
        for run in row['runs']:
            run['throughput'] = rates[method, run['seed']]
            if (method, run['seed']) in against:
                run['speed_vs_reference'] = against[method, run['seed']]
        row['summary'] = summarise(row['runs'])
        row['throughput'] = over_seeds(row['runs'], 'throughput')[0]
        speed, spread = over_seeds(row['runs'], 'speed_vs_reference')
        if speed:
            row['speed_vs_reference'], row['speed_vs_reference_range'] = speed, spread
    return list(rows.values())


# ----------------------------------------------------------------------------------------------------------------
# Report


def machine(opts: argparse.Namespace, device: torch.device) -> str:
    """The machine in one line: CPU, cores, OS, Python, torch, threads, training device."""
    gpu = f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''
    return (f'{cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; Python '
            f'{platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}; '
            f'{torch.get_num_threads()} torch threads; training on {device.type}{gpu}')


def cell(row: dict, key: str, fmt: str) -> str:
    """A summary value formatted, or a dash."""
    value = row['summary'].get(key)
    return '–' if value is None else format(value, fmt)


def table_line(row: dict) -> str:
    """One Markdown row: ratios, error (mean ± std), seconds, CPU throughput, note."""
    speed = row.get('throughput', {})
    rates = [f'{speed[k]:,.0f}' if k in speed else '–' for k in ('eager_b1', 'export_b1', 'eager_b64', 'export_b64')]
    error = (f'{cell(row, "top1_err", ".2f")} ± {cell(row, "top1_err_std", ".2f")}' if row['summary'] else '–')
    return (f'| {row["net"]} | {row["method"]} | {len(row["runs"])} | {cell(row, "flops_ratio", ".3f")} | '
            f'{cell(row, "params_ratio", ".3f")} | {error} | {cell(row, "seconds", ".0f")} | {" | ".join(rates)} | '
            f'{row["note"]} |')


def report(result: dict) -> str:
    """docs/peers.md: command, machine, load, budget, the table and what each method did."""
    lines = ['# Hinge and its peers on the CIFAR-10 subset', '',
             'Written by `scripts/compare_peers.py` (its docstring describes the methods and their recipes).', '',
             f'- Command: `{result["command"]}`', f'- Date: {result["date"]}; total run time '
             f'{result["seconds"] / 60:.0f} min', f'- Machine: {result["machine"]}',
             f'- Load average (1/5/15 min) before: {loads(result["load_before"])}; after: '
             f'{loads(result["load_after"])}; cores busy with other processes at the start: {busy_text(result)}. '
             f'{load_verdict(result)}',
             f'- Budget: every baseline {result["epochs"]} epochs; every method {result["epochs"]} more epochs from '
             f'that baseline, target {RATIO} of the FLOPs; batch {result["batch_size"]}; seeds {result["seeds"]}',
             f'- Torch-Pruning {result["torch_pruning"]}', f'- {result["scope"]}', '',
             f'FLOPs and parameter ratios: model_hinge.count, against the baseline. Error: top-1 on the '
             f'{result["test_images"]:,} test images after the budget, mean ± sample standard deviation over the '
             f'seeds; {result["epochs"]} epochs leave every network far from converged, so the rows compare the '
             'methods at an equal budget, not with published errors. Wall time: the method (training, search or '
             'sparse training, pruning, fine-tuning; the baseline: its training), mean over seeds. Throughput: '
             'images/s on the CPU, batch 1 and 64, eager and as a torch.export program, every network channels last '
             "(weights and batch); every seed's network takes turns with all the others in every round, each "
             "network's rate is the median over the rounds, and the table gives the median over the seeds' "
             'networks.', '',
             '| network | method | seeds | FLOPs ratio | params ratio | top-1 error (%) | wall time (s) | '
             'b=1 eager | b=1 export | b=64 eager | b=64 export | note |', '|' + '---|' * 12]
    lines += [table_line(row) for row in result['rows']]
    lines += speed_table(result['rows'])
    lines += ['', f'Per seed ({result["results_file"]} in --out has every value):', '']
    lines += [f'- {r["net"]} {r["method"]} seed {run["seed"]}: {detail_text(run)}'
              for r in result['rows'] for run in r['runs'] if r['method'] != 'baseline']
    return '\n'.join(lines) + '\n'


def speed_table(rows: list[dict]) -> list[str]:
    """The speed of each method's networks against the REFERENCE method's network of the same seed, paired within
    rounds: the median over the seeds, and their range (none when the reference did not run)."""
    paired = [row for row in rows if 'speed_vs_reference' in row]
    if not paired:
        return []
    lines = ['', f'Speed against {REFERENCE} (the same timing rounds as the table; in every round, the time of its '
             "network of the same seed over the network's, then the median over the rounds: above 1 is faster, and "
             'a slow spell of the machine that spans a round cancels out; the median over the seeds, their range '
             'in parentheses):', '', '| network | method | b=1 eager | b=1 export | b=64 eager | b=64 export |',
             '|' + '---|' * 6]
    for row in paired:
        speed, spread = row['speed_vs_reference'], row['speed_vs_reference_range']
        several = sum('speed_vs_reference' in run for run in row['runs']) > 1
        cells = [f'{speed[k]:.2f}x' + (f' ({spread[k][0]:.2f}–{spread[k][1]:.2f})' if several else '')
                 for k in ('eager_b1', 'export_b1', 'eager_b64', 'export_b64')]
        lines.append(f'| {row["net"]} | {row["method"]} | {" | ".join(cells)} |')
    return lines


def busy_text(result: dict) -> str:
    """The cores other processes kept busy at the start, as text."""
    busy = result.get('busy_before')
    return 'not measured' if busy is None else f'{busy:.2f} of {result["cpus"]}'


def loads(values: list[float]) -> str:
    """Load averages as text."""
    return ', '.join(f'{v:.2f}' for v in values)


def cpu_jiffies() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, iowait, ...) from /proc/stat."""
    with open('/proc/stat') as stat:
        return [int(v) for v in stat.readline().split()[1:]]


def busy_cores(cpus: int, seconds: float = 2.0) -> float | None:
    """How many cores other processes keep busy, measured over `seconds` while this one sleeps (None without
    /proc/stat): unlike the load average it does not remember a job that just ended."""
    try:
        first = cpu_jiffies()
        time.sleep(seconds)
        second = cpu_jiffies()
    except OSError:
        return None
    delta = [b - a for a, b in zip(first, second, strict=True)]
    idle, total = sum(delta[3:5]), sum(delta)
    return cpus * (1 - idle / total) if total > 0 else 0.0


def load_verdict(result: dict) -> str:
    """Whether other jobs shared the CPU (more than half a core busy when the run started, by /proc/stat, else
    a 1-minute load above half the cores; or a load above that plus this run's threads after): then the wall
    times and throughputs are provisional."""
    cores, threads = result['cpus'], result['threads']
    busy = result.get('busy_before')
    before = busy > 0.5 if busy is not None else result['load_before'][0] > cores / 2
    if before or result['load_after'][0] > cores / 2 + threads:
        return ('**Provisional timings**: other jobs were running on the CPU, so the wall times and throughputs '
                'are disturbed (rows with the same architecture can differ); the ratios and errors are not.')
    return 'The machine was otherwise idle.'


def detail_text(run: dict) -> str:
    """What a method did on one seed, in a few words."""
    words = [f'FLOPs ratio {run["flops_ratio"]:.4f}', f'error {run["top1_err"]:.2f} %', f'{run["seconds"]:.0f} s']
    if 'search_epochs' in run:
        words.append(f'{run["search_epochs"]} search epochs (would-be ratio {run["would_be_ratio"]:.3f}), error '
                     f'{run["compressed_top1_err"]:.2f} % right after compression')
    if 'allocation' in run:
        fastest = run['allocations'][run['allocation']]
        words.append(f'allocation {run["allocation"]} (the fastest of {len(run["allocations"])} timed: '
                     f'{fastest[1]:.3f} of the baseline\'s time at FLOPs ratio {fastest[0]:.3f})')
    if 'pruning_steps' in run:
        words.append(f'{run["pruning_steps"]} pruning steps')
    if 'speed_vs_reference' in run:
        words.append(f'{run["speed_vs_reference"]["export_b64"]:.2f}x the speed of {REFERENCE} on this seed '
                     '(b=64 export)')
    return ', '.join(words)


# ----------------------------------------------------------------------------------------------------------------


def scope(opts: argparse.Namespace) -> str:
    """Whether this is the default comparison, and what a smaller run left out."""
    if opts.dry_run:
        return 'Dry run: a smoke test of the code paths, no measurement.'
    missing = [f'{what} {", ".join(map(str, sorted(set(default) - set(given), key=str)))}'
               for what, given, default in (('networks', opts.nets, NETS), ('seeds', opts.seeds, [0, 1, 2]),
                                            ('methods', opts.methods, METHODS)) if set(default) - set(given)]
    if opts.epochs != DEFAULT_EPOCHS:
        missing.append(f'the default budget ({DEFAULT_EPOCHS} epochs; this run {opts.epochs})')
    if opts.channel_multiple != 1:
        missing.append(f"the paper's channel counts (the automatic-plan rows keep multiples of "
                       f'{opts.channel_multiple})')
    if opts.allocation != 'fastest':
        missing.append(f'the default allocation of the automatic-plan rows (fastest; this run {opts.allocation})')
    return ('Reduced run, without ' + '; '.join(missing) + '.') if missing else 'The default run.'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nets', nargs='+', default=NETS, help='resnetN (ours, N = 6n+2) or torchvision names')
    parser.add_argument('--methods', nargs='+', default=METHODS, choices=METHODS)
    parser.add_argument('--seeds', nargs='+', type=int, default=None, help='default 0 1 2 (the dry run: 0)')
    parser.add_argument('--epochs', type=int, default=None,
                        help=f'budget per method and per baseline (default {DEFAULT_EPOCHS}: the default run in '
                             'about an hour and a quarter on 2 idle cores; the dry run: '
                             f'{DRY["epochs"]}, one per stage)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--channel_multiple', type=int, default=1,
                        help='the automatic-plan Hinge rows (hinge, hinge_tp_flops) keep channel counts that are '
                             'multiples of this (model_hinge: channel_multiple; default 1, the paper\'s rule)')
    parser.add_argument('--allocation', default='fastest', choices=['norm', 'fastest'],
                        help="the automatic-plan Hinge rows' allocation (model_hinge: allocation; default fastest: "
                             'the fastest of a few rankings at the same FLOPs, timed at --batch-size; norm: the '
                             "paper's threshold on the group norms)")
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--threads', type=int, default=None,
                        help="torch CPU threads (default: torch's, one for the dry run, which must bear a busy CPU)")
    parser.add_argument('--data', default=str(Path(os.environ.get('HINGE_SHARED', ROOT.parent / 'shared'))
                                              / 'data' / 'cifar10-subset'))
    parser.add_argument('--out', default=str(ROOT / 'runs' / 'peers'),
                        help='cached baselines and the values of every run (named after --doc)')
    parser.add_argument('--doc', default=None, help='the report (default docs/peers.md; none for --dry-run)')
    parser.add_argument('--dry-run', action='store_true',
                        help=f'{DRY["images"] // DRY["batch"]} batches of {DRY["batch"]} images, one epoch per stage, '
                             f'{DRY_TP_STEPS} pruning steps')
    return parser


def torch_pruning_version(methods: list[str]) -> str:
    """Torch-Pruning's version, 'not used', or exit 2 with one sentence when a method needs it and it is missing."""
    if not any(m.startswith('tp_') for m in methods):
        return 'not used'
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        refuse('Torch-Pruning is not installed; pip install -r requirements-bench.txt, or leave its methods out '
               'with --methods baseline hinge.')
    return importlib.metadata.version('torch-pruning')


def results_file(out: Path, doc: str | None) -> Path:
    """Where a run's values go: named after its report (docs/peers_channel_multiple.md: peers_channel_multiple.json),
    so that runs of other scopes keep theirs; results.json for a run without a report."""
    return out / (f'{Path(doc).stem}.json' if doc else 'results.json')


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    opts = build_parser().parse_args(argv)
    opts.methods = [m for m in METHODS if m in opts.methods]   # hinge_tp_flops after the tp_magnitude it matches
    for name in opts.nets:
        check_net(name)
    if opts.channel_multiple < 1:
        refuse(f'--channel_multiple {opts.channel_multiple} must be at least 1 (1 keeps any channel count).')
    tp_version = torch_pruning_version(opts.methods)
    opts.epochs = opts.epochs or (DRY['epochs'] if opts.dry_run else DEFAULT_EPOCHS)
    opts.seeds = opts.seeds or ([0] if opts.dry_run else [0, 1, 2])
    opts.threads = opts.threads or (1 if opts.dry_run else torch.get_num_threads())
    torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    ctx = {'opts': opts, 'device': device, 'example': torch.randn(1, *INPUT, device=device),
           'tp_steps': DRY_TP_STEPS if opts.dry_run else TP_STEPS}
    busy = None if opts.dry_run else busy_cores(os.cpu_count())   # a dry run measures nothing
    start, load_before = time.perf_counter(), os.getloadavg()
    result = {'command': shlex.join(['python', 'scripts/compare_peers.py', *argv]), 'scope': scope(opts),
              'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'), 'machine': machine(opts, device),
              'load_before': [round(v, 2) for v in load_before], 'cpus': os.cpu_count(), 'threads': opts.threads,
              'busy_before': None if busy is None else round(busy, 2),
              'epochs': opts.epochs,
              'batch_size': opts.batch_size, 'seeds': opts.seeds, 'torch_pruning': tp_version, 'rows': []}
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = opts.doc or (None if opts.dry_run else str(ROOT / 'docs' / 'peers.md'))
    values = results_file(out, doc)
    result['results_file'] = values.name
    for name in opts.nets:
        result['rows'] += compare_net(name, ctx)
        result.update(seconds=time.perf_counter() - start, test_images=ctx['test_images'],
                      load_after=[round(v, 2) for v in os.getloadavg()])
        values.write_text(json.dumps(result, indent=1))
    text = report(result)
    print(text)
    if doc:
        Path(doc).parent.mkdir(parents=True, exist_ok=True)
        Path(doc).write_text(text)
    return result


if __name__ == '__main__':
    main()
