"""utils/distributed.py: global-batch BatchNorm, batch shares, and two gloo processes computing what one does."""

import json
import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

import option
from conftest import runner_script
from data.batches import TensorBatches
from model import build_baseline
from utils.distributed import SINGLE, World, global_batchnorm, my_share, sum_over_processes, wrapped


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def _inputs() -> torch.Tensor:
    return torch.randn(7, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _worker(rank: int, size: int, folder: str) -> None:
    torch.set_num_threads(1)        # two processes on a small machine
    dist.init_process_group('gloo', init_method=f'file://{folder}/rendezvous', rank=rank, world_size=size)
    net, world = _net(), World(rank, size, rank)
    global_batchnorm(net, world)
    assert isinstance(net[1], nn.BatchNorm2d) and net[1].state_dict().keys() == nn.BatchNorm2d(4).state_dict().keys()
    model = wrapped(net, world, torch.device('cpu'))     # kept alive: its hooks average the gradients
    out = model(my_share(_inputs(), world))
    (out.pow(2).sum() / 7 * size).backward()            # each process's share of the global mean, as training does
    torch.save({'out': out.detach(), 'grad': net[0].weight.grad, 'mean': net[1].running_mean,
                'var': net[1].running_var}, f'{folder}/{rank}.pt')
    dist.destroy_process_group()


def test_global_batchnorm_and_ddp_compute_what_one_process_computes_on_the_whole_batch(tmp_path):
    # spawned: a forked child of a process that has run autograd (another test in this worker) cannot use autograd
    mp.start_processes(_worker, args=(2, str(tmp_path)), nprocs=2, start_method='spawn')
    net = _net()
    out = net(_inputs())
    (out.pow(2).sum() / 7).backward()
    parts = [torch.load(tmp_path / f'{rank}.pt') for rank in (0, 1)]
    assert torch.allclose(torch.cat([p['out'] for p in parts]), out.detach(), atol=1e-6)
    for p in parts:          # an uneven split (4 + 3): the statistics and gradients still cover all 7 samples
        assert torch.allclose(p['grad'], net[0].weight.grad, atol=1e-6)
        assert torch.allclose(p['mean'], net[1].running_mean, atol=1e-7)
        assert torch.allclose(p['var'], net[1].running_var, atol=1e-6)


def test_the_shares_of_a_global_batch_are_the_batch_of_one_process():
    images, labels = torch.randint(0, 255, (10, 8, 8, 3), dtype=torch.uint8), torch.arange(10)

    def batches(world: World):
        loader = TensorBatches(images, labels, 4, (0.5,) * 3, (0.2,) * 3, train=True, seed=3)
        loader.share(world)
        loader.set_epoch(2)
        return list(loader)

    single = batches(SINGLE)
    shares = [batches(World(rank, 3, rank)) for rank in range(3)]
    for b, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([s[b][0] for s in shares]), x)
        assert torch.equal(torch.cat([s[b][1] for s in shares]), y)
    loader = TensorBatches(images, labels, 4, (0.5,) * 3, (0.2,) * 3, train=True)
    loader.share(World(0, 3, 0))
    assert [loader.share_weight(b, n) for b, n in ((0, 2), (2, 1))] == [2 * 3 / 4, 1 * 3 / 2]
    assert torch.equal(sum_over_processes(torch.ones(2), SINGLE), torch.ones(2))


def rank_logs(folder) -> str:
    """The ends of what each process of a torchrun wrote (its --log-dir), to say which one failed and where."""
    return ''.join(f'\n--- {path.relative_to(folder)}:\n{path.read_text(errors="replace")[-1500:]}'
                   for path in sorted(folder.rglob('std*.log')))


def test_two_processes_give_the_results_of_one(tiny_demo, unrendered_plots, tmp_path):
    """A short search, compression and converging run with --n_GPUs 2 on the CPU (torchrun, gloo) against the
    same run in one process (this one) with the same global batch."""
    import main_hinge  # not at the top: the processes of the test above import this module

    torch.manual_seed(0)
    base = tmp_path / 'base.pt'
    args = option.parse_args('--template Demo --model ResNet --depth 8 --downsample_type A'.split())
    torch.save(build_baseline(args).state_dict(), base)
    flags = (f'--template Demo --model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A --pretrain {base} '
             '--batch_size 16 --epochs 1 --decay hingestep-50 --lr 0.05 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG '
             f'--ratio 0.6 --threshold 1e9 --stop_limit 0.1 --layer_balancing --cpu --print_every 2 '
             f'--dir_save {tmp_path / "runs"}').split()
    assert main_hinge.main([*flags, '--save', 'one']) == 0
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                f'--log-dir={tmp_path / "ranks"}', '--redirects=3']
    done = subprocess.run([*torchrun, str(runner_script(tmp_path)), *flags, '--save', 'two'], capture_output=True,
                          text=True, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert done.returncode == 0, done.stderr[-2000:] + rank_logs(tmp_path / 'ranks')
    one, two = (json.loads((tmp_path / 'runs' / n / 'results.json').read_text()) for n in ('one', 'two'))
    assert [(h['stage'], h['epoch']) for h in one['history']] == [(h['stage'], h['epoch']) for h in two['history']]
    for a, b in zip(one['history'], two['history'], strict=True):
        for key in ('loss', 'train_loss'):
            assert abs(a[key] - b[key]) < 1e-3 * a[key], (key, a, b)
    assert (one['flops_compressed'], one['params_compressed']) == (two['flops_compressed'], two['params_compressed'])
    keys = [torch.load(tmp_path / 'runs' / n / 'model' / 'model_converging_latest.pt').keys() for n in ('one', 'two')]
    assert list(keys[0]) == list(keys[1])                      # no 'module.' prefix: the original's keys
    log = (tmp_path / 'runs' / 'two' / 'log.txt').read_text()
    assert log.count('[Epoch 1]') == 2                          # one search and one converging epoch, logged once


def test_compile_falls_back_to_eager_once_where_it_fails(monkeypatch):
    from utils.distributed import compiled

    def broken(module):
        def run(*inputs):
            raise RuntimeError('no compiler here\nmore detail')
        return run

    monkeypatch.setattr(torch, 'compile', broken)
    lines = []

    class Log:
        def write(self, text):
            lines.append(text)

    net = _net()
    model = compiled(net, True, Log())
    x = _inputs()
    assert torch.equal(model(x), net(x)) and torch.equal(model(x), net(x))
    assert lines == ['--compile: torch.compile does not work here (no compiler here); running without it.']
    assert compiled(net, False, Log()) is net
