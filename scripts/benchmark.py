"""Benchmark: the method's own costs, and the real speed of compressed networks.

Two sections, each written between its markers in the output file (default docs/benchmark.md; the other
sections are kept as they were; the latency section exists once per --size):

- `stages`: images/s per stage, proximal-step cost, complexity evaluation and threshold search, against
  per-layer and copy-and-forward equivalents of the original code's approach (ResNet-`--depth`).
- `latency`: for every Hinge model, the baseline and the network compressed to about half its FLOPs, eager
  and exported (torch.export, TorchScript, ONNX Runtime when installed): latency at batch 1 and throughput at
  `--latency_batch`, next to the FLOPs and parameter ratios, with and without folding every (conv, A) pair
  that is cheaper as one convolution. The compressed networks come from random weights (speed does not depend
  on the values): each layer's group norms are scaled by a random factor so that layers keep different
  fractions of their channels, as searched networks do, and the threshold search picks the ratio.

Timings, not tests; medians of several repeats, because the machine may be shared.

With `--target latency`, the latency section instead compresses ResNet-20/56 with target 'latency' and with
target 'flops' at --ratio and times the exported programs at --latency_batch against the baselines'
(scripts/benchmark_target.py; section `latency-target`).

`--section widths` (not part of `all`) times, at Torch-Pruning's FLOPs on our ResNet-20/56, every allocation of
the blocks' inner widths from a grid against Torch-Pruning's network (scripts/benchmark_widths.py; section
`widths`).

With `--original PATH` (a checkout of the original code, ofsoundof/group_sparsity) the script instead measures
both codes side by side on real data (scripts/benchmark_original.py: its options, shims and method) and writes
the section `original`.

    python scripts/benchmark.py [--section stages|latency|widths|all] [--device cpu|cuda] [--out docs/benchmark.md]
    python scripts/benchmark.py --original PATH --data DIR [--depths 20 56 164] [--batch_sizes 64 128] ...
      stages:  [--depth 56] [--batch_size 128] [--precision single|bf16]
      latency: [--size paper|small] [--models NAME ...] [--latency_batch 256] [--repeat 5] [--ratio 0.5]
               [--target flops|latency]
      widths:  --device cpu [--latency_batch 64] [--repeat 25] [--threads N]
"""

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import option  # noqa: E402
from loss import Loss  # noqa: E402
from main_hinge import make_optimizer  # noqa: E402
from model import build_baseline  # noqa: E402
from model_hinge import adapter_for  # noqa: E402
from model_hinge.complexity import ComplexityModel  # noqa: E402
from model_hinge.core import HingeModel  # noqa: E402
from model_hinge.search import SearchController, search_param_groups  # noqa: E402
from model_hinge.surgery import compress, kept_groups  # noqa: E402
from trainer import autocast  # noqa: E402
from utils.export import FILES, export_network, load_runner, onnx_missing  # noqa: E402
from utils.io import save_text  # noqa: E402
from utils.rundir import ConsoleLog  # noqa: E402
from utils.steps import SearchHooks  # noqa: E402

INPUT = (3, 32, 32)
# The networks of the paper's scripts (scripts/hinge_*.sh), and small ones of the same structure.
NETWORKS = {
    'paper': {
        'Hinge_ResNet_Basic_SVD': ('ResNet-56', '--template CIFAR10 --depth 56 --downsample_type A'),
        'Hinge_ResNet_Basic': ('ResNet-56', '--template CIFAR10 --depth 56 --downsample_type A'),
        'Hinge_RESNET_BOTTLENECK': ('ResNet-164', '--template CIFAR10 --depth 164 --no_bias'),
        'Hinge_RESNEXT': ('ResNeXt-20 (32x1)', '--template CIFAR10 --depth 20 --cardinality 32 --bottleneck_width 1'),
        'Hinge_DENSENET_SVD': ('DenseNet-40 (k=12)', '--template DenseNet --depth 40'),
        'Hinge_DenseNet': ('DenseNet-40 (k=12)', '--template DenseNet --depth 40'),
        'Hinge_VGG': ('VGG-16', '--template linear3_CIFAR10_VGG --vgg_type 16'),
        'Hinge_WIDE_RESNET': ('WRN-16-10', '--template CIFAR100_Wide_ResNet --depth 16 --widen_factor 10'),
    },
    'small': {
        'Hinge_ResNet_Basic_SVD': ('ResNet-20', '--template CIFAR10 --depth 20 --downsample_type A'),
        'Hinge_ResNet_Basic': ('ResNet-20', '--template CIFAR10 --depth 20 --downsample_type A'),
        'Hinge_RESNET_BOTTLENECK': ('ResNet-29 (bottleneck)', '--template CIFAR10 --depth 29 --bottleneck'),
        'Hinge_RESNEXT': ('ResNeXt-11 (8x2)', '--template CIFAR10 --depth 11 --cardinality 8 --bottleneck_width 2'),
        'Hinge_DENSENET_SVD': ('DenseNet-22 (k=8)', '--template DenseNet --depth 22 --k 8'),
        'Hinge_DenseNet': ('DenseNet-22 (k=8)', '--template DenseNet --depth 22 --k 8'),
        'Hinge_VGG': ('VGG-ef', '--template CIFAR10 --vgg_type ef'),
        'Hinge_WIDE_RESNET': ('WRN-10-2', '--template CIFAR100 --depth 10 --widen_factor 2'),
    },
}
RUNTIMES = ('eager', 'pt2', 'torchscript', 'onnx')


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int, warmup: int = 2, inner: int = 1) -> float:
    """Median over `repeat` runs of the mean seconds of `inner` consecutive calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------------------------
# Section 'stages'


def hinge(argv: str, device: torch.device):
    args = option.parse_args(argv.split())
    adapter = adapter_for(args.model)
    net = build_baseline(args, adapter.baseline)
    hm = HingeModel(net, adapter.plan(net), INPUT, args.init_method)
    hm.net.to(device, memory_format=torch.channels_last)           # as the trainer runs it
    return hm, args


def training_step_rate(net, device, batch_size, hooks=None, optimizer=None, precision='single') -> float:
    """Images per second of forward + backward + step (+ the search hooks) on random CIFAR-sized data."""
    criterion = Loss('1*CE').to(device)
    net.to(memory_format=torch.channels_last)                      # as the trainer runs it
    x = torch.randn(batch_size, *INPUT, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    optimizer = optimizer or torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()

    def step():
        if hooks:
            hooks.zero_grad(optimizer)
        else:
            optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = criterion(net(x).float(), y)
        extra = hooks.extra_loss() if hooks else None
        (loss if extra is None else loss + extra).backward()
        if hooks:
            hooks.after_backward(optimizer, 1.0)
            hooks.step(optimizer)
            hooks.after_step(0, optimizer)
        else:
            optimizer.step()

    seconds = timed(step, device, repeat=10 if device.type == 'cuda' else 4)
    return batch_size / seconds


def eval_rate(net, device, batch_size=500) -> float:
    net.to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, *INPUT, device=device).contiguous(memory_format=torch.channels_last)
    net.eval()

    def run():
        with torch.no_grad():
            net(x)

    return batch_size / timed(run, device, repeat=10 if device.type == 'cuda' else 4)


def per_layer_prox(hm: HingeModel, lam: float) -> None:
    """The original's way: a loop over blocks, several small kernels per matrix."""
    with torch.no_grad():
        for fam in hm.families:
            for member in fam.members:
                p = member.param
                mat = p.squeeze().t() if member.dim == 1 else p.squeeze()
                n = torch.norm(mat, p=2, dim=1)
                scale = torch.max(1 - lam / (n + 1e-8), torch.zeros_like(n))
                shaped = scale.view(1, -1) if member.dim == 1 else scale.view(-1, 1)
                p.data = (p.squeeze() * shaped).view(p.shape)


def copy_and_forward_ratio(hm: HingeModel, controller: SearchController, threshold: float) -> float:
    """The original's way: deep-copy, compress, count with a forward pass."""
    norms = controller.family_norms()
    kept = kept_groups(hm.families, norms, threshold, 0.2, False)
    clone = copy.deepcopy(hm)
    compress(clone.families, {fc: kept[f] for fc, f in zip(clone.families, hm.families, strict=True)}, clone.net)
    return ComplexityModel.trace(clone.net, INPUT).flops() / hm.baseline_flops


def stages_section(opts: argparse.Namespace, device: torch.device) -> list[str]:
    torch.manual_seed(0)
    argv = f'--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth {opts.depth} --downsample_type A --optimizer PG'
    rows = []
    baseline = build_baseline(option.parse_args(argv.replace('Hinge_ResNet_Basic_SVD', 'ResNet').split())).to(device)
    rows.append(('baseline training, images/s', training_step_rate(baseline, device, opts.batch_size,
                                                                    precision=opts.precision)))
    rows.append(('baseline evaluation, images/s', eval_rate(baseline, device)))

    hm, args = hinge(argv, device)
    controller = SearchController(hm, args, None)
    optimizer = make_optimizer(args, search_param_groups(hm, 0.1, 0.01, False), 0.1)
    hooks = SearchHooks(controller)
    rows.append(('search training (PG, lr adjustment), images/s',
                 training_step_rate(hm.net, device, opts.batch_size, hooks, optimizer, opts.precision)))

    lam = torch.tensor(1e-5, device=device)
    vectorised = timed(lambda: controller.proximal_step([0.1] * controller.roles, lam), device, repeat=50)
    looped = timed(lambda: per_layer_prox(hm, 1e-6), device, repeat=50)
    rows.append((f'proximal step, {len(hm.families)} matrices: vectorised, ms', vectorised * 1e3))
    rows.append(('proximal step: per-layer loop (original style), ms', looped * 1e3))

    norms = controller.family_norms()
    analytic = timed(lambda: controller.ratio_at(norms, 5e-3), device, repeat=20)
    original = timed(lambda: copy_and_forward_ratio(hm, controller, 5e-3), device, repeat=3, warmup=1)
    rows.append(('would-be FLOPs ratio: from channel counts, ms', analytic * 1e3))
    rows.append(('would-be FLOPs ratio: deep copy + compress + forward (original style), ms', original * 1e3))
    rows.append(('threshold search to ratio 0.5 (bisection), ms',
                 timed(lambda: controller.search_threshold(norms, 0.5, _Quiet()), device, repeat=3) * 1e3))

    kept = kept_groups(hm.families, norms, controller.search_threshold(norms, 0.5, _Quiet()), 0.2, True)
    compress(hm.families, kept, hm.net)
    rows.append(('converging training (compressed to ~0.5 FLOPs), images/s',
                 training_step_rate(hm.net, device, opts.batch_size, precision=opts.precision)))

    lines = [f'## Stages: ResNet-{opts.depth} (CIFAR-sized inputs), batch {opts.batch_size}, precision '
             f'{opts.precision}', '', machine_line(device),
             f'Command: `python scripts/benchmark.py --section stages --device {device.type} --depth {opts.depth} '
             f'--batch_size {opts.batch_size} --precision {opts.precision} --threads {opts.threads}`', '',
             '| measurement | value |', '|---|---|']
    return lines + [f'| {label} | {value:,.2f} |' for label, value in rows]


# ----------------------------------------------------------------------------------------------------------------
# Section 'latency'


def compressed_variants(model: str, flags: str, ratio: float) -> tuple[nn.Module, HingeModel, HingeModel, int]:
    """(baseline, compressed with the plan's merges folded, compressed with every cheaper pair folded too, number
    of extra folds) from one random baseline; the compression keeps about `ratio` of the FLOPs."""
    args = option.parse_args(f'--model {model} {flags}'.split())
    adapter = adapter_for(args.model)
    torch.manual_seed(0)
    baseline = build_baseline(args, adapter.baseline).eval()
    net = copy.deepcopy(baseline)
    hm = HingeModel(net, adapter.plan(net), INPUT, args.init_method)
    controller = SearchController(hm, args, None)
    generator = torch.Generator().manual_seed(1)
    norms = {f: n * float(torch.empty(1).uniform_(-1.5, 1.5, generator=generator).exp())
             for f, n in controller.family_norms().items()}
    threshold = controller.search_threshold(norms, ratio, _Quiet())
    hm.compress(kept_groups(hm.families, norms, threshold, args.remain_percentage, False))
    cheaper = copy.deepcopy(hm)
    hm.merge()
    extra = cheaper.merge_where_cheaper()
    return baseline, hm, cheaper, len(extra)


def runners(net: nn.Module, device: torch.device, folder: Path, wanted: tuple[str, ...]) -> dict:
    """Callables per runtime: the eager network and its exported artefacts loaded as a user would."""
    result = {}
    if 'eager' in wanted:
        eager = copy.deepcopy(net).to(device).eval()
        result['eager'] = eager
    formats = tuple(f for f in ('pt2', 'torchscript', 'onnx') if f in wanted)
    if device.type == 'cuda':
        formats = tuple(f for f in formats if f != 'onnx')
    if formats:
        export_network(copy.deepcopy(net), INPUT, folder, {}, formats)
        for fmt in formats:
            if not (fmt == 'onnx' and onnx_missing()):
                result[fmt] = load_runner(fmt, folder / FILES[fmt], device)
    return result


def speed(run, device: torch.device, batch: int, repeat: int) -> tuple[float, float]:
    """(latency at batch 1 in ms, images/s at `batch`)."""
    one = torch.randn(1, *INPUT, device=device)
    many = torch.randn(batch, *INPUT, device=device)
    with torch.inference_mode():
        latency = timed(lambda: run(one), device, repeat=repeat, warmup=3, inner=10)
        seconds = timed(lambda: run(many), device, repeat=repeat, warmup=3)
    return latency * 1e3, batch / seconds


def latency_section(opts: argparse.Namespace, device: torch.device) -> list[str]:
    networks = NETWORKS[opts.size]
    models = opts.models or list(networks)
    wanted = tuple(r for r in opts.runtimes.split(',') if r)
    load_before = os.getloadavg()
    rows, notes = [], []
    for model in models:
        label, flags = networks[model]
        baseline, compressed, cheaper, folds = compressed_variants(model, flags, opts.ratio)
        base_flops = ComplexityModel.trace(baseline, INPUT)
        variants = [('baseline', baseline), ('compressed', compressed.net)]
        if folds:
            variants.append((f'compressed, {folds} cheaper pairs folded', cheaper.net))
        else:
            notes.append(f'{model}: no (conv, A) pair is cheaper folded')
        reference = {}
        with tempfile.TemporaryDirectory() as tmp:
            for i, (variant, net) in enumerate(variants):
                counter = ComplexityModel.trace(net, INPUT)
                flops_ratio = counter.flops() / base_flops.flops()
                params_ratio = counter.params() / base_flops.params()
                for runtime, run in runners(net, device, Path(tmp) / str(i), wanted).items():
                    latency, rate = speed(run, device, opts.latency_batch, opts.repeat)
                    if variant == 'baseline':
                        reference[runtime] = (latency, rate)
                    base_latency, base_rate = reference[runtime]
                    rows.append([f'{model} ({label})', variant, f'{counter.flops() / 1e6:,.1f} M',
                                 f'{flops_ratio:.3f}', f'{params_ratio:.3f}', runtime, f'{latency:.2f}',
                                 f'{base_latency / latency:.2f}x', f'{rate:,.0f}', f'{rate / base_rate:.2f}x'])
                    print(' | '.join(rows[-1]), flush=True)
    load_after = os.getloadavg()
    command = (f'python scripts/benchmark.py --section latency --device {device.type} --size {opts.size} '
               f'--latency_batch {opts.latency_batch} --repeat {opts.repeat} --ratio {opts.ratio} '
               f'--runtimes {opts.runtimes} --threads {opts.threads}')
    if opts.models:
        command += f' --models {" ".join(opts.models)}'
    busy = load_before[0] > 0.5 * (os.cpu_count() or 1)          # the 'after' value includes this benchmark
    status = (f'**Provisional**: other jobs were running ({os.cpu_count()} cores); repeat on a quiet machine.'
              if busy else 'The machine was otherwise idle.')
    lines = [f'## Latency and throughput: baseline vs compressed ({opts.size} networks)', '', machine_line(device),
             f'Command: `{command}`',
             f'Load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f}. {status}', '',
             f'Latency: batch 1, median of {opts.repeat} repeats of 10 forward passes (after 3 warm-up passes). '
             f'Throughput: batch {opts.latency_batch}, median of {opts.repeat} forward passes (after 3). Speed-ups '
             'are against the baseline in the same runtime. FLOPs as the original counts them '
             '(multiply-accumulates). Runtimes: eager PyTorch; pt2, the torch.export program '
             '(torch.export.load(...).module()); torchscript (torch.jit.load); onnx, ONNX Runtime on the CPU.', '',
             '| network | variant | FLOPs | FLOPs ratio | params ratio | runtime | latency b=1 (ms) | speed-up | '
             f'images/s b={opts.latency_batch} | speed-up |', '|' + '---|' * 10]
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    if 'onnx' in opts.runtimes.split(',') and onnx_missing():
        notes.append('ONNX Runtime is not installed here, so there are no onnx rows (README, Dependencies)')
    if notes:
        lines += [''] + [f'- {n}.' for n in notes]
    return lines


# ----------------------------------------------------------------------------------------------------------------


def machine_line(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'CPU'
    return (f'Device: {device.type} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads; '
            f'measured {datetime.date.today().isoformat()}.')


def replace_section(text: str, name: str, lines: list[str]) -> str:
    """The document with the section `name` (between its markers) replaced, or appended when absent."""
    begin, end = f'<!-- section: {name} -->', f'<!-- end: {name} -->'
    block = '\n'.join([begin, *lines, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip('\n') + '\n\n' + block + '\n'


def side_by_side(argv: list[str]) -> None:
    """`--original PATH ...`: the comparison with the original code (scripts/benchmark_original.py takes the
    options), written as the section 'original' of --out (default docs/benchmark.md)."""
    import benchmark_original

    out, forwarded = ROOT / 'docs' / 'benchmark.md', list(argv)
    if '--out' in forwarded:
        at = forwarded.index('--out')
        out = Path(forwarded[at + 1])
        del forwarded[at:at + 2]
    lines = benchmark_original.main(forwarded, 'scripts/benchmark.py').splitlines()
    text = out.read_text() if out.is_file() else '# Benchmarks\n'
    save_text(replace_section(text, 'original', lines), out)


def main() -> None:
    if '--original' in sys.argv[1:]:
        side_by_side(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--section', default='all', choices=['stages', 'latency', 'widths', 'all'])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--depth', type=int, default=56)
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--precision', default='single', choices=['single', 'bf16'])
    parser.add_argument('--size', default='paper', choices=list(NETWORKS))
    parser.add_argument('--models', nargs='+', default=None, choices=list(NETWORKS['paper']))
    parser.add_argument('--latency_batch', type=int, default=256)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--ratio', type=float, default=0.5, help='FLOPs ratio of the compressed networks')
    parser.add_argument('--runtimes', default=','.join(RUNTIMES), help=f'comma-separated subset of {RUNTIMES}')
    parser.add_argument('--threads', type=int, default=0,
                        help="CPU threads for torch and ONNX Runtime (0: torch's default; 1 is steadier on a busy "
                             'machine)')
    parser.add_argument('--target', default='flops', choices=['flops', 'latency'],
                        help='latency: the target-latency benchmark (scripts/benchmark_target.py) instead')
    parser.add_argument('--out', default=str(ROOT / 'docs' / 'benchmark.md'))
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    out = Path(opts.out)
    text = out.read_text() if out.is_file() else '# Benchmarks\n'
    if opts.section == 'latency' and opts.target == 'latency':
        import benchmark_target

        text = replace_section(text, 'latency-target', benchmark_target.target_section(opts, device,
                                                                                        machine_line(device)))
        save_text(text, out)
        print(text)
        return
    if opts.section == 'widths':
        import benchmark_widths

        text = replace_section(text, 'widths', benchmark_widths.widths_section(opts, device, machine_line(device)))
        save_text(text, out)
        print(text)
        return
    for name, section in (('stages', stages_section), ('latency', latency_section)):
        if opts.section in (name, 'all'):
            marker = f'latency-{opts.size}' if name == 'latency' else name    # one latency section per size
            text = replace_section(text, marker, section(opts, device))
            save_text(text, out)
    print(text)


class _Quiet(ConsoleLog):
    def write(self, text: str) -> None:
        pass


if __name__ == '__main__':
    main()
