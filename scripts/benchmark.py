"""Benchmark: images/s per stage, proximal-step cost, complexity evaluation and threshold search.

Compares the vectorised / analytic paths with per-layer and copy-and-forward equivalents of the original
code's approach, and writes a Markdown table (default docs/benchmark.md). Timings, not tests.

    python scripts/benchmark.py [--device cpu|cuda] [--depth 56] [--batch_size 128] [--out docs/benchmark.md]
"""

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import option  # noqa: E402
from loss import Loss  # noqa: E402
from main_hinge import make_optimizer  # noqa: E402
from model import build_baseline  # noqa: E402
from model_hinge import adapter_for  # noqa: E402
from model_hinge.core import HingeModel  # noqa: E402
from model_hinge.search import SearchController, SearchHooks, search_param_groups  # noqa: E402
from model_hinge.surgery import compress, kept_groups  # noqa: E402
from trainer import autocast  # noqa: E402
from utils.complexity import ComplexityModel  # noqa: E402
from utils.rundir import ConsoleLog  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int, warmup: int = 2) -> float:
    """Median seconds of `fn` over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def hinge(argv: str, device: torch.device):
    args = option.parse_args(argv.split())
    adapter = adapter_for(args.model)
    hm = HingeModel(build_baseline(args, adapter.baseline), adapter, args, (3, 32, 32), init=True)
    hm.net.to(device)
    if device.type == 'cuda':
        hm.net.to(memory_format=torch.channels_last)
    return hm, args


def training_step_rate(net, device, batch_size, hooks=None, optimizer=None, precision='single') -> float:
    """Images per second of forward + backward + step (+ the search hooks) on random CIFAR-sized data."""
    criterion = Loss('1*CE').to(device)
    fmt = torch.channels_last if device.type == 'cuda' else torch.contiguous_format
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
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
    fmt = torch.channels_last if device.type == 'cuda' else torch.contiguous_format
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
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
    return ComplexityModel.trace(clone.net, (3, 32, 32)).flops() / hm.baseline_flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--depth', type=int, default=56)
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--precision', default='single', choices=['single', 'bf16'])
    parser.add_argument('--out', default=str(ROOT / 'docs' / 'benchmark.md'))
    opts = parser.parse_args()
    device = torch.device(opts.device)
    torch.manual_seed(0)
    argv = f'--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth {opts.depth} --downsample_type A --optimizer PG'
    rows = []

    baseline = build_baseline(option.parse_args(argv.replace('Hinge_ResNet_Basic_SVD', 'ResNet').split())).to(device)
    rows.append(('baseline training, images/s', training_step_rate(baseline, device, opts.batch_size,
                                                                    precision=opts.precision)))
    rows.append(('baseline evaluation, images/s', eval_rate(baseline, device)))

    hm, args = hinge(argv, device)
    controller = SearchController(hm, args, None)
    optimizer = make_optimizer(args, search_param_groups(hm, 0.1, 0.01), 0.1)
    hooks = SearchHooks(controller, args)
    rows.append(('search training (PG, lr adjustment), images/s',
                 training_step_rate(hm.net, device, opts.batch_size, hooks, optimizer, opts.precision)))

    lam = torch.tensor(1e-5, device=device)
    vectorised = timed(lambda: controller.proximal_step(0.1, lam), device, repeat=50)
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

    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'CPU'
    lines = [f'# Benchmark: ResNet-{opts.depth} (CIFAR-sized inputs), batch {opts.batch_size}, '
             f'precision {opts.precision}',
             '', f'Device: {device.type} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads.',
             f'Command: `python scripts/benchmark.py --device {opts.device} --depth {opts.depth} '
             f'--batch_size {opts.batch_size} --precision {opts.precision}`', '',
             '| measurement | value |', '|---|---|']
    lines += [f'| {label} | {value:,.2f} |' for label, value in rows]
    text = '\n'.join(lines) + '\n'
    print(text)
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(text)


class _Quiet(ConsoleLog):
    def write(self, text: str) -> None:
        pass


if __name__ == '__main__':
    main()
