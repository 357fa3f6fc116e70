"""main_hinge.py under SIGKILL: a run killed at any moment and resumed with --load ends with the same
results and compressed network as an uninterrupted run of the same seed."""

import json
import os
import subprocess
import sys

import pytest
import torch

import option
from conftest import ROOT
from model import build_baseline

# Runs main_hinge.main in a process that SIGKILLs itself right before the N-th file rename (every atomic
# write and every move of a commit ends in one) or the N-th optimizer step; 'log' lists the renames. The tiny
# demo set (5 batches of 16 an epoch) and plot files written unrendered, as in tests/conftest.py.
WRAPPER = '''
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import matplotlib.pyplot as plt
import torch
from data import demo
from utils import plot
from utils.io import write_bytes_atomic
demo.N_TRAIN, demo.N_TEST = 80, 40
plot._save = lambda fig, path, **kwargs: (plt.close(fig), write_bytes_atomic(path, b''))
import main_hinge
mode, target, count = sys.argv[2], int(sys.argv[3]), [0]
def tick(what):
    count[0] += 1
    if mode == 'log':
        print('RENAME', count[0], what, file=sys.stderr)
    if mode in ('rename', 'step') and count[0] == target:
        os.kill(os.getpid(), signal.SIGKILL)
if mode in ('rename', 'log'):
    real_replace = os.replace
    def replace(src, dst):
        tick(dst)
        real_replace(src, dst)
    os.replace = replace
if mode == 'step':
    real_step = torch.optim.SGD.step
    def step(self, *args, **kwargs):
        tick('step')
        return real_step(self, *args, **kwargs)
    torch.optim.SGD.step = step
sys.exit(main_hinge.main(sys.argv[4:]))
'''

TIMING = ('seconds', 'test_seconds', 'compression_seconds', 'images_per_second', 'run_dir')


def _flags(tmp_path, base: str) -> list[str]:
    return (f'--template Demo --model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A --pretrain {base} '
            '--batch_size 16 --epochs 2 --decay hingestep-50 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG '
            '--ratio 0.5 --regularization_factor 4 --threshold 0.1 --stop_limit 0.05 --p1_p2_same_ratio '
            f'--layer_balancing --cpu --print_every 1000 --dir_save {tmp_path / "runs"}').split()


@pytest.fixture
def pipeline(tmp_path):
    """(run(mode, at, *argv) -> CompletedProcess, flags of the short compression run)."""
    wrapper = tmp_path / 'wrapper.py'
    wrapper.write_text(WRAPPER)
    torch.manual_seed(0)
    args = option.parse_args('--template Demo --model ResNet --depth 8 --downsample_type A'.split())
    base = tmp_path / 'base.pt'
    torch.save(build_baseline(args).state_dict(), base)
    env = dict(os.environ, OMP_NUM_THREADS='1')

    def run(mode: str, at: int, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(wrapper), str(ROOT), mode, str(at), *argv], env=env,
                              capture_output=True, text=True, cwd=tmp_path)

    return run, _flags(tmp_path, str(base))


def _outcome(run_dir) -> tuple[list, dict, dict]:
    results = json.loads((run_dir / 'results.json').read_text())
    history = [{k: v for k, v in h.items() if k not in TIMING} for h in results['history']]
    final = {k: v for k, v in results.items() if k not in TIMING + ('history',)}
    state = torch.load(run_dir / 'model' / 'model_converging_latest.pt', weights_only=True)
    return history, final, state


def _killed_and_resumed(run, flags, mode: str, at: int, name: str) -> None:
    killed = run(mode, at, *flags, '--save', name)
    assert killed.returncode == -9, killed.stderr[-2000:]
    for _ in range(4):
        resumed = run('none', 0, *flags, '--load', name)
        if resumed.returncode == 0:
            return
    raise AssertionError(resumed.stderr[-2000:])


def _same_as(whole, other) -> None:
    (h1, f1, s1), (h2, f2, s2) = whole, other
    assert h1 == h2 and f1 == f2
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def _renames(run, flags) -> list[str]:
    logged = run('log', 0, *flags, '--save', 'counted')
    assert logged.returncode == 0, logged.stderr[-2000:]
    return [line.split(' ', 2)[2] for line in logged.stderr.splitlines() if line.startswith('RENAME ')]


def test_a_kill_inside_the_compression_commit_resumes_to_the_same_result(pipeline, tmp_path):
    run, flags = pipeline
    renames = _renames(run, flags)
    runs = tmp_path / 'runs'
    whole = _outcome(runs / 'counted')
    assert whole[1]['stage'] == 'converging' and sum(h['stage'] == 'search' for h in whole[0]) >= 2
    # killed before compression_information.pt is complete inside the pending commit: the commit is dropped
    # and the compression done again from the last search epoch
    written = next(i for i, p in enumerate(renames, 1) if p.endswith('.pending/compression_information.pt'))
    _killed_and_resumed(run, flags, 'rename', written, 'killed')
    _same_as(whole, _outcome(runs / 'killed'))
    assert not (runs / 'killed' / '.pending').exists() and not list((runs / 'killed').rglob('.*.tmp'))


@pytest.mark.slow
def test_kills_at_every_rename_and_during_training_resume_to_the_same_result(pipeline, tmp_path):
    run, flags = pipeline
    renames = _renames(run, flags)
    whole = _outcome(tmp_path / 'runs' / 'counted')
    points = [('rename', i) for i in range(1, len(renames) + 1)] + [('step', i) for i in (3, 7, 12, 16, 21)]
    for index, (mode, at) in enumerate(points):
        _killed_and_resumed(run, flags, mode, at, f'kill{index}')
        _same_as(whole, _outcome(tmp_path / 'runs' / f'kill{index}'))
