"""Benchmark of --target latency: does a latency ratio of 0.5 give half the baseline's measured time?

`python scripts/benchmark.py --section latency --target latency` runs this and writes the section
`latency-target` of docs/benchmark.md. For ResNet-20 and ResNet-56 compressed with Hinge_ResNet_Basic_SVD
(decomposition only), Hinge_ResNet_Basic (pruning and decomposition) and the automatic plan, and torchvision's
resnet18 and mobilenet_v2 (num_classes 10, 32x32) with the automatic plan, from random weights with random
per-layer norm scales as in the latency section, it compresses once with target 'flops' and once with target
'latency' at the same ratio (the latency model's search, then its measured passes: model_hinge.search), folds
the pairs that do not pay (by FLOPs, or by the latency model), exports
baseline and compressed network with torch.export, and times both programs at the latency batch (in turn, for
--repeat rounds). The latency model is built in the same process, on the same device and threads, in the
layout the exported programs run (contiguous), and times networks (its remainder, the measured passes) as
torch.export programs too. The measured ratio is paired: the median over the rounds of the compressed program's
time over the baseline program's in the same round (latency.paired_ratios). A row meets the issue's target when
that ratio is within 10 % of the target ratio.
"""

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

import option
from model import AUTO, build_baseline
from model_hinge import adapter_for, auto_plan
from model_hinge.complexity import ComplexityModel
from model_hinge.core import HingeModel
from model_hinge.latency import (
    CachedTimer,
    DeviceTimer,
    LatencyModel,
    candidate_ratio,
    fold_pairs,
    paired_ratios,
    round_seconds,
)
from model_hinge.search import SearchController
from utils.export import FILES, export_network, load_runner
from utils.rundir import ConsoleLog

INPUT = (3, 32, 32)
NETWORKS = (('Hinge_ResNet_Basic_SVD', 20), ('Hinge_ResNet_Basic', 20), ('Hinge', 'ResNet-20'),
            ('Hinge_ResNet_Basic_SVD', 56), ('Hinge_ResNet_Basic', 56), ('Hinge', 'ResNet-56'),
            ('Hinge', 'torchvision:resnet18'), ('Hinge', 'torchvision:mobilenet_v2'))
TOLERANCE = 0.10


class Quiet(ConsoleLog):
    def write(self, text: str) -> None:
        pass


def converted(model: str, depth: int | str, target: str) -> tuple[nn.Module, HingeModel, argparse.Namespace]:
    """(baseline, its converted copy, flags) from one seeded random baseline: a hand-written plan on our ResNet of
    `depth`, or (model 'Hinge') the automatic plan of the --base network `depth` names (ResNet-N: ours, option A)."""
    if model != AUTO:
        network = f'--depth {depth} --downsample_type A'
    elif str(depth).startswith('ResNet-'):
        network = f'--base ResNet --depth {depth[7:]} --downsample_type A'
    else:
        network = f'--base {depth}'
    args = option.parse_args(f'--template CIFAR10 --model {model} {network} --target {target}'.split())
    torch.manual_seed(0)
    baseline = build_baseline(args, args.base if model == AUTO else adapter_for(model).baseline).eval()
    net = copy.deepcopy(baseline)
    plan = auto_plan(net, torch.zeros(1, *INPUT)) if model == AUTO else adapter_for(model).plan(net)
    return baseline, HingeModel(net, plan, INPUT, args.init_method), args


def random_norms(controller: SearchController) -> dict:
    """The group norms scaled per layer by a random factor, so that layers keep different fractions."""
    generator = torch.Generator().manual_seed(1)
    return {f: n * float(torch.empty(1).uniform_(-1.5, 1.5, generator=generator).exp())
            for f, n in controller.family_norms().items()}


def compressed(model: str, depth: int, target: str, opts: argparse.Namespace,
               device: torch.device) -> tuple[nn.Module, nn.Module, dict]:
    """(baseline, deployable compressed network, numbers): searched to opts.ratio of the target, with the pairs
    that do not pay folded."""
    baseline, hm, args = converted(model, depth, target)
    latency, numbers = None, {}
    if target == 'latency':
        timer = CachedTimer(DeviceTimer(opts.latency_batch, device, exported=True))
        start = time.perf_counter()
        latency = LatencyModel(hm, timer)
        numbers.update(build_seconds=time.perf_counter() - start, timings=timer.measured)
    args.ratio = opts.ratio
    controller = SearchController(hm, args, None, latency)
    norms = random_norms(controller)
    passes: dict[tuple, list[float]] = {}

    def measure(kept: dict) -> float:
        ratio = candidate_ratio(hm, latency, kept, True)
        passes.setdefault(tuple(len(kept[f]) for f in hm.families), []).append(ratio)
        return ratio

    threshold = controller.threshold_for_ratio(norms, Quiet(), None if latency is None else measure)
    kept = controller.kept(norms, threshold)
    counts = torch.tensor([len(kept[f]) for f in hm.families])
    if latency is not None:
        numbers.update(minimum=controller.minimum_ratio(), predicted=float(latency.ratio(counts)),
                       passes=passes.get(tuple(counts.tolist()), []))
    pairs = latency.folds_that_pay(counts) if latency is not None else None
    hm.compress(kept)
    if pairs is None:
        hm.merge_where_cheaper()
    else:
        fold_pairs(hm, pairs)
    return baseline, hm.net, numbers


def programs(nets: list[nn.Module], folder: Path, device: torch.device) -> list:
    """The networks exported with torch.export and loaded back as a user would."""
    runs = []
    for i, net in enumerate(nets):
        export_network(copy.deepcopy(net).eval(), INPUT, folder / str(i), {}, ('pt2',))
        runs.append(load_runner('pt2', folder / str(i) / FILES['pt2'], device))
    return runs


def alternating_rounds(runs: list, device: torch.device, batch: int, repeat: int) -> list[list[float]]:
    """Seconds per batch of each callable in every round, timed in turn (latency.round_seconds), after two more
    warm-up calls each."""
    x = torch.randn(batch, *INPUT, device=device)
    with torch.inference_mode():
        for run in runs:
            run(x)
            run(x)
        return round_seconds([lambda r=r: r(x) for r in runs], device, repeat)


def row(model: str, depth: int, target: str, opts: argparse.Namespace, device: torch.device) -> list[str]:
    """One table row: search, compression, export and timing of one network for one target."""
    baseline, small, numbers = compressed(model, depth, target, opts, device)
    flops = ComplexityModel.trace(small, INPUT).flops() / ComplexityModel.trace(baseline, INPUT).flops()
    with tempfile.TemporaryDirectory() as tmp:
        rounds = alternating_rounds(programs([baseline, small], Path(tmp), device), device, opts.latency_batch,
                                    opts.repeat)
    base_s, small_s = (statistics.median(seconds) for seconds in rounds)
    measured = paired_ratios(rounds)[1]
    within = abs(measured / opts.ratio - 1) <= TOLERANCE
    latency = target == 'latency'
    cells = [f'{depth} (automatic plan)' if model == AUTO else f'{model} (ResNet-{depth})', target, f'{flops:.3f}',
             f'{numbers["minimum"]:.3f}' if latency else '–', f'{numbers["predicted"]:.3f}' if latency else '–',
             ' / '.join(f'{r:.3f}' for r in numbers['passes']) if latency else '–',
             f'{base_s * 1e3:.1f}', f'{small_s * 1e3:.1f}', f'{measured:.3f}', 'yes' if within else 'no',
             f'{numbers["predicted"] / measured - 1:+.1%}' if latency else '–',
             f'{numbers["build_seconds"]:.1f} ({numbers["timings"]})' if latency else '–']
    print(' | '.join(cells), flush=True)
    return cells


def target_section(opts: argparse.Namespace, device: torch.device, machine: str) -> list[str]:
    """The section `latency-target`: both targets on every network of NETWORKS."""
    load_before = os.getloadavg()
    rows = [row(model, depth, target, opts, device) for model, depth in NETWORKS for target in ('flops', 'latency')]
    load_after = os.getloadavg()
    command = (f'python scripts/benchmark.py --section latency --target latency --device {device.type} '
               f'--latency_batch {opts.latency_batch} --repeat {opts.repeat} --ratio {opts.ratio} '
               f'--threads {opts.threads}')
    return [f'## Target latency: ratio {opts.ratio} of the measured time, torch.export, batch {opts.latency_batch}',
            '', machine, f'Command: `{command}`',
            f'Load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f}.', '',
            f'Each network is compressed from random weights (random per-layer norm scales) to {opts.ratio} of its '
            'FLOPs (target flops: the threshold search counts FLOPs, the pairs that cost fewer FLOPs folded are '
            'folded) or of its latency (target latency: the latency model of model_hinge/latency.py, built here, '
            'the pairs it finds faster folded are folded); baseline and compressed network are exported with '
            f'torch.export and timed at batch {opts.latency_batch}, in turn, median of {opts.repeat} rounds; the '
            'measured ratio is the median over the rounds of the ratio within a round. '
            f'"Within 10 %": the compressed program took {opts.ratio} x the baseline program\'s time, +-10 %. '
            '"Minimum": the smallest latency ratio the plan can reach (every layer at --remain_percentage). '
            '"Search timed": the measured passes\' timings of the chosen network (model_hinge.search: its ratio to '
            'the baseline, both exported in memory and timed in turn, paired as here, 16 rounds). '
            '"Prediction error": the model\'s predicted ratio against the measured ratio (both relative to a baseline '
            'timed with the network: the model\'s times and this table\'s are minutes apart, and the machine\'s speed '
            'drifts in between). '
            '"Model": seconds to build the latency model (its timings).', '',
            '| network | target | FLOPs ratio | minimum (model) | predicted ratio | search timed | baseline ms | '
            'compressed ms | measured ratio | within 10 % | prediction error | model s (timings) |', '|' + '---|' * 12]\
        + ['| ' + ' | '.join(r) + ' |' for r in rows]
