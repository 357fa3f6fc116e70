"""Benchmark: at Torch-Pruning's FLOPs, how much faster than its network can another allocation of the channels be?

`python scripts/benchmark.py --section widths` runs this and writes the section `widths` of docs/benchmark.md.
On our CIFAR ResNets (option-A shortcuts) Torch-Pruning's magnitude pruning leaves the residual streams whole and
cuts the inner width of every block of the three stages to REFERENCE (7, 15 and 31 of 16, 32 and 64: its widths
in docs/peers.md, 0.47 of the FLOPs). Here every allocation that also keeps the streams whole and gives the blocks
of each stage one inner width from GRID is built (the automatic plan's network compressed to those widths and
merged, as Hinge compresses), the allocations within FLOPS_TOLERANCE of the reference's FLOPs ratio are kept, and
all of them and the reference are timed together: eager, channels last (weights and batch), at --latency_batch,
in turn in each of --repeat rounds (latency.round_seconds). A network's speed is the median over the rounds of the
reference's time over its own in the round. Hinge's allocation 'fastest' chooses among networks like these, so
the fastest of them bounds what an allocation that keeps the streams whole gains over Torch-Pruning's network at
its FLOPs on this machine.
"""

import argparse
import copy
import itertools
import re
import sys
import time

import torch
import torch.nn as nn
from compare_peers import build_net

from model_hinge import auto_plan, count
from model_hinge.core import HingeModel
from model_hinge.latency import paired_ratios, round_seconds

DEPTHS = (20, 56)
REFERENCE = (7, 15, 31)
GRID = ((4, 8, 12, 16), (8, 12, 16, 24, 32), (16, 24, 28, 32, 40, 48))
FLOPS_TOLERANCE = 0.015
INPUT = (3, 32, 32)
INNER = re.compile(r'features\.(\d)\.\d+\.body\.0\.1\.weight')   # A after a block's first convolution


def converted(depth: int) -> HingeModel:
    """Our ResNet of this depth with the automatic plan's matrices inserted (built once, copied per allocation)."""
    net = build_net(f'resnet{depth}', 0)
    return HingeModel(net, auto_plan(net, torch.zeros(1, *INPUT)), INPUT, 'p-identity')


def with_inner_widths(template: HingeModel, widths: tuple[int, ...]) -> nn.Module:
    """The network whose blocks in stage s keep the first widths[s - 1] inner channels, everything else whole,
    compressed and merged as Hinge compresses."""
    hm = copy.deepcopy(template)
    kept = {fam: torch.arange(fam.size) for fam in hm.families}
    for spec, fam in zip(hm.plan.families, hm.families, strict=True):
        stage = INNER.fullmatch(spec.members[0].tensor) if len(spec.members) == 1 else None
        if stage is not None:
            kept[fam] = torch.arange(widths[int(stage.group(1)) - 1])
    hm.compress(kept)
    hm.merge()
    return hm.net.eval()


def equal_flops_allocations(depth: int) -> dict[tuple[int, ...], tuple[nn.Module, float]]:
    """The reference and every GRID allocation within FLOPS_TOLERANCE of its FLOPs ratio: widths -> (network,
    FLOPs ratio)."""
    example = torch.zeros(1, *INPUT)
    baseline = count(build_net(f'resnet{depth}', 0), example)[0]
    template = converted(depth)
    found = {}
    for widths in [REFERENCE, *itertools.product(*GRID)]:
        net = with_inner_widths(template, widths)
        ratio = count(net, example)[0] / baseline
        if widths == REFERENCE or abs(ratio - found[REFERENCE][1]) <= FLOPS_TOLERANCE:
            found[widths] = (net.to(memory_format=torch.channels_last), ratio)
    return found


def speeds(nets: dict[tuple[int, ...], nn.Module], batch: int, rounds: int) -> dict[tuple[int, ...], float]:
    """Each network's speed against the reference's: the median over the rounds of the reference's time over its
    own, the networks called in turn in every round."""
    x = torch.randn(batch, *INPUT).contiguous(memory_format=torch.channels_last)
    keys = [REFERENCE] + [key for key in nets if key != REFERENCE]
    with torch.inference_mode():
        times = round_seconds([lambda net=nets[key]: net(x) for key in keys], torch.device('cpu'), rounds)
    return {key: 1 / ratio for key, ratio in zip(keys[1:], paired_ratios(times)[1:], strict=True)}


def widths_section(opts: argparse.Namespace, device: torch.device, machine: str) -> list[str]:
    """The section: per network, every equal-FLOPs allocation's FLOPs ratio and speed against the reference."""
    if device.type != 'cpu':
        print(f'benchmark.py: --section widths times on the CPU, not on {device.type}; pass --device cpu.',
              file=sys.stderr)
        raise SystemExit(2)
    lines = ['## Equal FLOPs: how much faster than Torch-Pruning can an allocation be?', '',
             f'{machine} Started {time.strftime("%H:%M")}.',
             f'Command: `python scripts/benchmark.py --section widths --device cpu --latency_batch {opts.latency_batch}'
             f' --repeat {opts.repeat}' + (f' --threads {opts.threads}`' if opts.threads else '`'), '',
             f'Inner widths per stage (the blocks of stage 1, 2, 3), kept within {FLOPS_TOLERANCE} of the FLOPs ratio '
             f'of {"/".join(map(str, REFERENCE))}, Torch-Pruning\'s widths; speed: the median over {opts.repeat} '
             f'rounds of that network\'s time over this one\'s, batch {opts.latency_batch}, eager, channels last '
             '(above 1 is faster). The method is in scripts/benchmark_widths.py.', '',
             '| network | inner widths | FLOPs ratio | speed against 7/15/31 |', '|---|---|---|---|']
    for depth in DEPTHS:
        found = equal_flops_allocations(depth)
        measured = speeds({key: net for key, (net, _) in found.items()}, opts.latency_batch, opts.repeat)
        measured[REFERENCE] = 1.0
        for widths in sorted(found, key=lambda key: -measured[key]):
            lines.append(f'| ResNet-{depth} | {"/".join(map(str, widths))} | {found[widths][1]:.3f} | '
                         f'{measured[widths]:.3f}x |')
    return lines
