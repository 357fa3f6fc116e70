"""scripts/compare_peers.py: the dry run on a ResNet-8 and its rows, a failing method as a row note, and the
refusal when Torch-Pruning is missing."""

import argparse
import copy
import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import model_hinge
from conftest import ROOT

SCRIPT = ROOT / 'scripts' / 'compare_peers.py'


def load_script(monkeypatch):
    """The script as a module (its folder on sys.path, as when it runs)."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location('compare_peers', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_reports_every_method_against_one_counter(tmp_path, shared, monkeypatch, capsys):
    methods = ['baseline', 'hinge', 'hinge_paper', 'tp_magnitude', 'tp_groupnorm', 'hinge_tp_flops']
    if importlib.util.find_spec('torch_pruning') is None:
        methods = methods[:3]
    doc = ROOT / 'docs' / 'peers.md'
    before = doc.stat().st_mtime_ns if doc.exists() else None
    script = load_script(monkeypatch)       # main() in this process; the script as a process: the refusal below
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        script.main(['--dry-run', '--nets', 'resnet8', '--threads', '1', '--methods', *methods, '--out', str(tmp_path),
                     '--data', str(shared / 'data' / 'cifar10-subset')])
    finally:
        torch.set_num_threads(threads)
    stdout = capsys.readouterr().out
    result = json.loads((tmp_path / 'results.json').read_text())
    rows = {r['method']: r for r in result['rows']}
    assert list(rows) == methods and result['seeds'] == [0] and result['epochs'] == 2
    flops, params = model_hinge.count(script.build_net('resnet8', 0), torch.zeros(1, 3, 32, 32))
    for method, row in rows.items():
        (run,) = row['runs']
        assert row['note'] == '' and (run['baseline_flops'], run['baseline_params']) == (flops, params), method
        assert run['flops_ratio'] == pytest.approx(run['flops'] / flops)
        assert set(row['throughput']) == {'eager_b1', 'export_b1', 'eager_b64', 'export_b64'}
        assert min(row['throughput'].values()) > 0 and 0 <= run['top1_err'] <= 100
    assert rows['baseline']['runs'][0]['flops_ratio'] == 1.0 and rows['baseline']['runs'][0]['params_ratio'] == 1.0
    for hinge in ('hinge', 'hinge_paper'):
        assert abs(rows[hinge]['runs'][0]['flops_ratio'] - 0.5) <= 0.05
        assert rows[hinge]['runs'][0]['search_epochs'] == 1
    for method in methods[3:5]:
        assert 0.3 < rows[method]['runs'][0]['flops_ratio'] <= 0.5
    if 'hinge_tp_flops' in rows:                                 # Hinge at the ratio Torch-Pruning reached
        reached = rows['tp_magnitude']['runs'][0]['flops_ratio']
        assert abs(rows['hinge_tp_flops']['runs'][0]['flops_ratio'] - reached) <= 0.05
    assert (tmp_path / 'baselines' / 'resnet8_seed0_e2_b64_dry.pt').is_file()
    assert (doc.stat().st_mtime_ns if doc.exists() else None) == before     # the dry run writes no document
    assert '| resnet8 | hinge | 1 | ' in stdout
    if 'tp_magnitude' in rows:                       # every other network's speed, paired against Torch-Pruning's
        assert 'speed_vs_reference' not in rows['tp_magnitude']
        for method in set(methods) - {'tp_magnitude'}:
            assert set(rows[method]['speed_vs_reference']) == set(rows[method]['throughput']), method
            assert rows[method]['runs'][0]['speed_vs_reference'] == rows[method]['speed_vs_reference'], method
        assert 'Speed against tp_magnitude' in stdout and '| resnet8 | hinge_tp_flops | ' in stdout
    widths = rows['baseline']['runs'][0]['conv_widths']
    assert widths == [m.out_channels for m in script.build_net('resnet8', 0).modules() if isinstance(m, nn.Conv2d)]


def test_every_network_is_timed_channels_last_whatever_layout_training_left(monkeypatch):
    """A cached baseline loads contiguous, a network trained here is channels last: timed as they are, the rows
    would compare layouts, not networks. Every eager network and program is timed on a channels-last batch with
    channels-last weights."""
    script = load_script(monkeypatch)
    seen = []

    def record(run, x, calls):
        seen.append((x.is_contiguous(memory_format=torch.channels_last),
                     all(p.is_contiguous(memory_format=torch.channels_last) for p in run.parameters() if p.dim() == 4)))
        return 1.0

    monkeypatch.setattr(script, 'forward_seconds', record)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    trained = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    script.interleaved_throughput({('baseline', 0): plain, ('tp_magnitude', 0): trained}, dry=True)
    assert seen and all(batch and weights for batch, weights in seen)


def test_each_seed_is_timed_against_the_reference_network_of_the_same_seed(monkeypatch):
    """Every seed's network is timed, and its speed is the reference's time on the same seed over its own: with
    fixed times (reference 2 s and 4 s, hinge 1 s and 4 s) the speeds are 2 and 1, their median 1.5 and their
    range 1 to 2; rates are images over the time."""
    script = load_script(monkeypatch)
    monkeypatch.setattr(script, 'forward_seconds', lambda run, x, calls: run.time)
    monkeypatch.setattr(script, 'to_program', lambda net, example: SimpleNamespace(module=lambda: net))
    nets = {('tp_magnitude', 0): Timed(2.0), ('tp_magnitude', 1): Timed(4.0), ('hinge', 0): Timed(1.0),
            ('hinge', 1): Timed(4.0)}
    rates, against = script.interleaved_throughput(nets, dry=True)
    assert set(against) == {('hinge', 0), ('hinge', 1)}
    assert against['hinge', 0]['export_b64'] == pytest.approx(2.0)
    assert against['hinge', 1]['eager_b1'] == pytest.approx(1.0)
    assert rates['tp_magnitude', 1]['eager_b64'] == pytest.approx(64 / 4.0)
    runs = [{'speed': {'b': 2.0}}, {'speed': {'b': 1.0}}, {'speed': {'b': 1.5}}, {}]
    assert script.over_seeds(runs, 'speed') == ({'b': 1.5}, {'b': [1.0, 2.0]})
    assert script.over_seeds([{}], 'speed') == ({}, {})


class Timed(nn.Module):
    """A network whose forward pass a test times at a fixed number of seconds."""

    def __init__(self, time: float):
        super().__init__()
        self.time = time
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_each_report_keeps_its_own_values_file(tmp_path, monkeypatch):
    script = load_script(monkeypatch)
    default = script.results_file(tmp_path, 'docs/peers.md')
    assert script.results_file(tmp_path, 'docs/peers_channel_multiple.md') != default
    assert script.results_file(tmp_path, None) == tmp_path / 'results.json'      # the dry run, without a report


def test_a_failing_method_becomes_a_row_note(tmp_path, shared, monkeypatch):
    script = load_script(monkeypatch)

    def broken(net, name, ctx):
        raise ZeroDivisionError('division by zero')

    monkeypatch.setitem(script.RUNNERS, 'hinge', broken)
    threads = torch.get_num_threads()
    try:
        result = script.main(['--dry-run', '--nets', 'resnet8', '--methods', 'baseline', 'hinge', '--out',
                              str(tmp_path), '--data', str(shared / 'data' / 'cifar10-subset'), '--doc',
                              str(tmp_path / 'peers.md')])
    finally:
        torch.set_num_threads(threads)
    baseline, hinge = result['rows']
    assert len(baseline['runs']) == 1 and baseline['note'] == ''
    assert hinge['runs'] == [] and hinge['note'] == 'failed on seed 0: ZeroDivisionError: division by zero'
    assert '| resnet8 | hinge | 0 | – | – | – | – | – | – | – | – | failed on seed 0: ZeroDivisionError' in \
        (tmp_path / 'peers.md').read_text()


def test_missing_torch_pruning_is_refused_in_one_sentence(tmp_path):
    fake = tmp_path / 'torch_pruning'
    fake.mkdir()
    (fake / '__init__.py').write_text("raise ImportError('hidden by the test')\n")
    done = subprocess.run([sys.executable, str(SCRIPT), '--dry-run', '--out', str(tmp_path / 'out')],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ['compare_peers: Torch-Pruning is not installed; pip install -r '
                                                'requirements-bench.txt, or leave its methods out with --methods '
                                                'baseline hinge.']
    assert not (tmp_path / 'out').exists()


def test_channel_multiple_and_allocation_reach_the_automatic_plan_rows_only(monkeypatch):
    script = load_script(monkeypatch)
    seen = []

    class Spy:
        def __init__(self, net, example, plan=None, **options):
            seen.append((plan, *(options.get(k) for k in ('channel_multiple', 'allocation', 'latency_batch'))))
            raise RuntimeError('recorded')

    monkeypatch.setattr(script.model_hinge, 'Hinge', Spy)
    opts = argparse.Namespace(epochs=2, channel_multiple=8, allocation='fastest', batch_size=64)
    ctx = {'opts': opts, 'example': torch.zeros(1, 3, 32, 32), 'reached': {'tp_magnitude': 0.47}}
    for method in ('hinge', 'hinge_paper', 'hinge_tp_flops'):
        with pytest.raises(RuntimeError, match='recorded'):
            script.RUNNERS[method](None, 'resnet20', ctx)
    assert seen == [(None, 8, 'fastest', 64), ('Hinge_ResNet_Basic_SVD', None, None, None), (None, 8, 'fastest', 64)]
    assert script.build_parser().parse_args([]).allocation == 'fastest'


def test_a_channel_multiple_below_one_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    script = load_script(monkeypatch)
    with pytest.raises(SystemExit) as stop:
        script.main(['--dry-run', '--channel_multiple', '0', '--out', str(tmp_path / 'out')])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == ('compare_peers: --channel_multiple 0 must be at least 1 (1 keeps any '
                                               'channel count).')
    assert not (tmp_path / 'out').exists()


def test_the_load_verdict_reads_what_other_processes_use_at_the_start_not_the_lagging_average(monkeypatch):
    """A job that ended a minute before leaves the 1-minute load average high; the CPU time other processes use
    when the comparison starts is what says whether they share the machine."""
    script = load_script(monkeypatch)
    ended = {'cpus': 2, 'threads': 2, 'load_before': [1.2, 1.5, 1.5], 'busy_before': 0.05,
             'load_after': [1.9, 1.9, 1.9]}
    assert script.load_verdict(ended) == 'The machine was otherwise idle.'
    running = dict(ended, busy_before=1.1)
    assert script.load_verdict(running).startswith('**Provisional timings**')
    busy = iter([[100, 0, 100, 800], [150, 0, 150, 900]])   # user, nice, system, idle jiffies: 100 of 200 busy
    monkeypatch.setattr(script, 'cpu_jiffies', lambda: next(busy))
    monkeypatch.setattr(script.time, 'sleep', lambda seconds: None)
    assert script.busy_cores(2) == 1.0
