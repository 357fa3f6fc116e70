"""Benchmark of the automatic plan on torchvision models: planning time, what the plan does, the FLOPs and
parameters reached at a target, and the measured speed of the compressed network against the baseline.

For each model (num_classes=10, random weights: speed does not depend on the values): the automatic plan is
made and timed, the model is converted through the public API (model_hinge.Hinge), each sparsity-inducing
matrix is scaled by a random factor so that layers keep different fractions of their groups (as searched
networks do), and Hinge.compress() runs the threshold search to `--ratio`. Throughput (images/s) of the
baseline, of the compressed network (defaults; with coupled channels decomposed, the paper's choice, with and
without the folds of the pairs that do not pay) and of Torch-Pruning's network at the same MAC target, eager
and exported (torch.export), at each batch size; all variants timed in turn, medians of `--repeat` rounds.
The section `torchvision` of `--out` is rewritten.

    python scripts/benchmark_auto.py [--models resnet18 ...] [--size 128] [--ratio 0.5] [--batches 1 8 32]
                                     [--repeat 5] [--threads 2] [--out docs/any_cnn.md]
    python scripts/benchmark_auto.py --section plans [--models ...] [--size 128]   (what each plan does, section
                                                                                  `plans`; no timings)
"""

import argparse
import copy
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'scripts'))

from benchmark import machine_line, replace_section, timed  # noqa: E402

import model_hinge  # noqa: E402
from model_hinge.autoplan import summary  # noqa: E402

MODELS = ['resnet18', 'resnet50', 'resnext50_32x4d', 'wide_resnet50_2', 'vgg11_bn', 'densenet121', 'mobilenet_v2',
          'mobilenet_v3_small', 'efficientnet_b0', 'regnet_y_400mf', 'shufflenet_v2_x0_5', 'squeezenet1_1',
          'googlenet', 'mnasnet0_5', 'convnext_tiny']


def build(name: str) -> nn.Module:
    extra = {'aux_logits': False, 'init_weights': False} if name == 'googlenet' else {}
    torch.manual_seed(0)
    return torchvision.models.get_model(name, num_classes=10, **extra).eval()


def scatter_norms(hinge: model_hinge.Hinge, seed: int = 1) -> None:
    """Scale each matrix by a random factor in [e^-1.5, e^1.5]: layers then keep different fractions."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for group in hinge.hm.matrices():
            for a in group:
                a.mul_(float(torch.empty(1).uniform_(-1.5, 1.5, generator=generator).exp()))


def hinge_variant(baseline: nn.Module, plan, x: torch.Tensor, ratio: float, fold: str) -> tuple[nn.Module, dict]:
    """A copy of the baseline converted with `plan`, its matrices scattered, compressed to `ratio` with `fold`."""
    net = copy.deepcopy(baseline)
    hinge = model_hinge.Hinge(net, x, plan=plan, ratio=ratio)
    scatter_norms(hinge)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        hinge.compress(fold=fold)
    return net.eval(), {**hinge.report(), 'folded': len(hinge.hm.folded)}


def compressed(name: str, size: int, ratio: float) -> dict:
    """Baseline, plan time, Hinge's default (coupled channels pruned together; compress() folds the pairs that do
    not pay and the threshold search counts them folded), the paper's choice for coupled channels (decomposed)
    with those folds and with the plan's folds only, and Torch-Pruning's network; every variant's FLOPs and
    parameter ratios by this project's counter."""
    baseline = build(name)
    x = torch.zeros(1, 3, size, size)
    start = time.perf_counter()
    plan = model_hinge.auto_plan(baseline, x)
    plan_seconds = time.perf_counter() - start
    flops, params = model_hinge.count(baseline, x)
    nets, reports = {'baseline': baseline}, {}
    nets['hinge'], reports['hinge'] = hinge_variant(baseline, plan, x, ratio, 'cheaper')
    paper = model_hinge.auto_plan(baseline, x, prune_coupled=False)
    nets['decomposed'], reports['decomposed'] = hinge_variant(baseline, paper, x, ratio, 'cheaper')
    nets['paper'], reports['paper'] = hinge_variant(baseline, paper, x, ratio, 'plan')
    nets['torch-pruning'], peer_note = torch_pruning_variant(name, size, ratio)
    ratios = {key: tuple(n / d for n, d in zip(model_hinge.count(net, x), (flops, params), strict=True))
              for key, net in nets.items() if net is not None and key != 'baseline'}
    return {'nets': nets, 'ratios': ratios, 'plan_seconds': plan_seconds, 'reports': reports, 'peer_note': peer_note}


def torch_pruning_variant(name: str, size: int, ratio: float) -> tuple[nn.Module | None, str]:
    """The model pruned by Torch-Pruning (magnitude importance, its defaults, the classifier ignored) in small
    iterative steps until its own MAC count is at most `ratio` of the baseline's; (None, why) when it fails."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None, 'torch-pruning not installed'
    model, example = build(name), torch.randn(1, 3, size, size)
    base = tp.utils.count_ops_and_params(model, example)[0]
    ignored = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 10]
    try:
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=0.9, iterative_steps=45, ignored_layers=ignored)
        for _ in range(45):
            pruner.step()
            if tp.utils.count_ops_and_params(model, example)[0] <= ratio * base:
                break
    except Exception as err:  # noqa: BLE001 - the peer's failure is a result, reported in the table
        return None, f'fails ({type(err).__name__})'
    return model.eval(), ''


def runners(net: nn.Module, size: int) -> dict:
    example = torch.randn(2, 3, size, size)
    batch = torch.export.Dim('batch', min=1)
    program = torch.export.export(copy.deepcopy(net), (example,), dynamic_shapes=({0: batch},))
    return {'eager': net, 'exported': program.module()}


def throughputs(runs: dict, size: int, batch: int, repeat: int) -> dict:
    """Images/s of each run at `batch`, the runs timed in turn `repeat` times (medians), so that a load that
    comes and goes on the machine affects them alike."""
    x = torch.randn(batch, 3, size, size)
    times: dict = {key: [] for key in runs}
    with torch.inference_mode():
        for run in runs.values():
            run(x)
        for _ in range(repeat):
            for key, run in runs.items():
                times[key].append(timed(lambda run=run: run(x), torch.device('cpu'), repeat=1, warmup=0))
    return {key: batch / statistics.median(t) for key, t in times.items()}


def measure(name: str, opts: argparse.Namespace) -> dict:
    c = compressed(name, opts.size, opts.ratio)
    runs = {}
    for variant, net in c['nets'].items():
        if net is not None:
            for runtime, run in runners(net, opts.size).items():
                runs[(variant, runtime)] = run
    rates = {}
    for batch in opts.batches:
        rates.update({(*key, batch): rate for key, rate in throughputs(runs, opts.size, batch, opts.repeat).items()})
    return {**c, 'rates': rates}


VARIANTS = {'hinge': 'Hinge', 'decomposed': 'Hinge, coupled decomposed',
            'paper': 'Hinge, coupled decomposed, plan\'s folds only', 'torch-pruning': 'Torch-Pruning'}


def rows(name: str, m: dict, opts: argparse.Namespace) -> list[str]:
    """One row per compressed variant: what it is, FLOPs and parameter ratios, speed-ups over the baseline."""
    lines = []
    for variant, label in VARIANTS.items():
        if variant not in m['ratios']:
            lines.append(f'| {name} | {label} | {m["peer_note"]} |' + ' - |' * (2 + 2 * len(opts.batches)))
            continue
        speed = [f'{m["rates"][(variant, runtime, b)] / m["rates"][("baseline", runtime, b)]:.2f}x'
                 for runtime in ('eager', 'exported') for b in opts.batches]
        about = ''
        if variant in m['reports']:
            r = m['reports'][variant]
            layers = f'{len(r["pruned"])} / {len(r["decomposed"])} / {len(r["left alone"])}; '
            plan_time = f'plan {m["plan_seconds"]:.2f} s; ' if variant == 'hinge' else ''
            about = (plan_time + layers if variant in ('hinge', 'decomposed') else '') + f'{r["folded"]} pairs folded'
        flops, params = m['ratios'][variant]
        lines.append(f'| {name} | {label} | {about} | {flops:.3f} | {params:.3f} | ' + ' | '.join(speed) + ' |')
    return lines


def reasons(notes: list[str]) -> str:
    """The planner's notes grouped by reason (module paths left out), with counts."""
    counts: dict[str, int] = {}
    for note in notes:
        reason = note.split(': ', 1)[1].split(';')[0] if ': ' in note else note
        reason = reason.split(' (')[0] if reason.startswith('a grouped convolution') else reason
        reason = re.sub(r'convolution [\w.-]+\.\w+ ', 'convolution ', reason)
        counts[reason] = counts.get(reason, 0) + 1
    return '; '.join(f'{reason} ({n}x)' for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])) or 'none'


def plans_section(opts: argparse.Namespace) -> list[str]:
    """What the automatic plan does with each model (no timings): convolutions pruned, decomposed, left alone."""
    rows = []
    for name in opts.models:
        net = build(name)
        plan = model_hinge.auto_plan(net, torch.zeros(1, 3, opts.size, opts.size))
        layers = summary(plan, net)
        rows.append(f'| {name} | {sum(len(v) for v in layers.values())} | {len(layers["pruned"])} | '
                    f'{len(layers["decomposed"])} | {len(layers["left alone"])} | {reasons(plan.notes)} |')
        print(rows[-1], flush=True)
    return [f'Command: `python scripts/benchmark_auto.py --section plans --size {opts.size}`', '',
            'Convolutions of each model that the automatic plan prunes (rows of A: free output channels, and '
            'coupled ones together with the other convolutions they are coupled with), decomposes (columns of A: '
            'coupled output channels that cannot be cut together) and leaves alone, and why it left channels '
            'uncut (the plan\'s notes, grouped).', '',
            '| model | convolutions | pruned | decomposed | left alone | notes |', '|---|---|---|---|---|---|', *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=MODELS)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--ratio', type=float, default=0.5)
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 8, 32])
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=str(ROOT / 'docs' / 'any_cnn.md'))
    parser.add_argument('--section', choices=['speed', 'plans'], default='speed')
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    text = out.read_text() if out.is_file() else '# Hinge on any CNN: measurements\n'
    if opts.section == 'plans':
        out.write_text(replace_section(text, 'plans', plans_section(opts)))
        return
    load = os.getloadavg()
    table = []
    for name in opts.models:
        table += rows(name, measure(name, opts), opts)
        print('\n'.join(table[-len(VARIANTS):]), flush=True)
    heads = [f'{runtime} b{b}' for runtime in ('eager', 'exported') for b in opts.batches]
    command = 'python scripts/benchmark_auto.py ' + ' '.join(sys.argv[1:])
    lines = [f'Command: `{command.strip()}`', '', machine_line(torch.device('cpu')) +
             f' Load average before/after: {load[0]:.2f} / {os.getloadavg()[0]:.2f}.', '',
             f'Input {opts.size}x{opts.size}, target FLOPs ratio {opts.ratio}, random weights. Speed-up: throughput '
             'of the compressed network over the baseline\'s (same runtime and batch; medians of the rounds, all '
             'networks of a model timed in turn). Hinge: `Hinge(model, x, ratio=...)` then `compress()`, the '
             'defaults: the automatic plan prunes coupled channels together where they can be cut together, and '
             'compress() folds every (conv, A) pair that costs fewer FLOPs folded (the threshold search counts it '
             'folded). Coupled decomposed: the plan of `auto_plan(model, x, prune_coupled=False)` (the paper\'s '
             'choice: coupled channels decomposed), then `compress()`; with the plan\'s folds only: '
             '`compress(fold=\'plan\')`, the paper\'s behaviour. Hinge rows also give the convolutions pruned / '
             'decomposed / left alone and the pairs folded (the first, the planning time). Torch-Pruning: the same '
             'model pruned by torch-pruning (MagnitudeImportance, MetaPruner defaults, the classifier ignored) in '
             'steps until its MAC count is at most the target. FLOPs and '
             'parameter ratios of every row by this project\'s counter.', '',
             '| model | network | about | FLOPs ratio | params ratio | ' + ' | '.join(heads) + ' |',
             '|---' * (5 + len(heads)) + '|', *table]
    out.write_text(replace_section(text, 'torchvision', lines))


if __name__ == '__main__':
    main()
