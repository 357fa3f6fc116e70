"""--target latency, --latency_batch, --decompose_free, --decompose_coupled and the --export_merge default on the
layer timer: no speed is measured here)."""

import json
import shlex

import pytest
import torch
from test_model_hinge_latency import FakeTimer

import main_hinge
from conftest import hinge_model, make_args, zero_groups
from model import build_baseline
from model_hinge.surgery import compress
from utils import export, target
from utils.io import save_torch

DEMO = '--template Demo --model Hinge_ResNet_Basic --depth 8 --downsample_type A'
pytestmark = pytest.mark.usefixtures('unrendered_plots')      # plot files written empty: tests/test_report.py


def test_the_flags_parse_with_their_defaults():
    args = make_args(DEMO)
    assert (args.target, args.latency_batch, args.export_merge, args.decompose_free, args.decompose_coupled) == (
        'flops', 64, None, False, False)
    assert target.export_merge(args) == 'cheaper'
    assert target.export_merge(make_args(f'{DEMO} --legacy_search')) == 'plan'       # the paper's behaviour
    assert target.export_merge(make_args(f'{DEMO} --export_merge plan')) == 'plan'
    args = make_args(f'{DEMO} --target latency --latency_batch 8')
    assert (args.target, args.latency_batch) == ('latency', 8)


@pytest.fixture
def fake_timer(monkeypatch):
    """Layer and network times from the fake timer (exact, bilinear in the widths, no remainder)."""
    monkeypatch.setattr(target, 'DeviceTimer', lambda batch, device, channels_last: FakeTimer(rest=0.0))


BAD = [
    (f'{DEMO} --target speed', "argument --target: invalid choice: 'speed'"),
    (f'{DEMO} --latency_batch 0', '--latency_batch 0 must be at least 1'),
    (f'{DEMO} --decompose_free', '--decompose_free changes the automatic plan of --model Hinge'),
    (f'{DEMO} --decompose_coupled', '--decompose_coupled changes the automatic plan of --model Hinge'),
    (f'{DEMO} --target latency --ratio 0.01', 'leaves 0.'),
    (f'{DEMO} --allocation fast', "argument --allocation: invalid choice: 'fast'"),
    (f'{DEMO} --allocation fastest --target latency', '--allocation fastest times rankings of equal FLOPs'),
    (f'{DEMO} --allocation fastest --legacy_search', 'it needs --target flops and no --legacy_search'),
]


@pytest.mark.parametrize('argv,fragment', BAD, ids=[b[1][:30] for b in BAD])
def test_bad_values_exit_2_with_one_sentence_and_write_nothing(tmp_path, capsys, fake_timer, argv, fragment):
    assert main_hinge.main(shlex.split(f'{argv} --dir_save {tmp_path / "runs"} --save bad --cpu')) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / 'runs').exists()
    if 'ratio' in argv:
        assert 'of the measured latency; use a --ratio of at least' in err


def test_decompose_free_gives_the_automatic_plan_both_directions():
    argv = '--template Demo --model Hinge --base ResNet --depth 8 --downsample_type A'
    for flag, directions in (('', {0}), (' --decompose_free', {0, 1})):
        args = make_args(argv + flag)
        plan = main_hinge.plan_for(args, build_baseline(args, 'ResNet'), (3, 32, 32))
        found = {f.members[0].dim for f in plan.families if f.members[0].tensor == 'features.1.0.body.0.1.weight'}
        assert found == directions


def test_decompose_coupled_gives_the_residual_convolutions_columns():
    """ResNet's second convolution of a block writes into the residual sum: pruned with the other writers of
    the stream by default, decomposed (columns of its own A) with --decompose_coupled. (With --downsample_type A
    the zero-padded shortcuts couple the streams of all stages at different widths: decomposed either way.)"""
    argv = '--template Demo --model Hinge --base ResNet --depth 8 --downsample_type C'
    for flag, directions in (('', {0}), (' --decompose_coupled', {1})):
        args = make_args(argv + flag)
        plan = main_hinge.plan_for(args, build_baseline(args, 'ResNet'), (3, 32, 32))
        found = {m.dim for f in plan.families for m in f.members if m.tensor == 'features.1.0.body.3.1.weight'}
        assert found == directions


def test_a_latency_run_reports_its_prediction_and_exports_with_the_same_folds(tiny_demo, tmp_path, fake_timer):
    runs = tmp_path / 'runs'
    flags = f'{DEMO} --target latency --latency_batch 8 --dir_save {runs} --cpu'
    main_hinge.run(make_args(f'{flags} --ratio 0.97 --stop_limit 0.2 --epochs 1 --batch_size 16 --save run '
                             '--print_every 1000'))
    results = json.loads((runs / 'run' / 'results.json').read_text())
    assert results['latency_predicted_ms'] == pytest.approx(results['latency_measured_ms'])
    assert abs(results['latency_ratio_predicted'] - 0.97) < 0.02
    times = json.loads((runs / 'run' / target.LATENCY_FILE).read_text())
    assert list(times['environments']) == ['fake'] and times['environments']['fake']
    assert 'Latency at batch 8: predicted' in (runs / 'run' / 'log.txt').read_text()
    checkpoint = runs / 'run' / 'model' / 'model_converging_latest.pt'
    main_hinge.run(make_args(f'{flags} --test_only --pretrain {checkpoint} --save test --export {tmp_path / "e"}'))
    exported = json.loads((tmp_path / 'e' / 'export.json').read_text())
    assert (exported['export_merge'], exported['target']) == ('cheaper', 'latency')
    assert exported['folded_beyond_plan'] == results['latency_folds']
    program = torch.export.load(tmp_path / 'e' / 'model.pt2').module()
    assert program(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_an_allocation_fastest_run_keeps_the_ranking_its_timer_found_fastest(tiny_demo, tmp_path, fake_timer):
    runs = tmp_path / 'runs'
    main_hinge.run(make_args(f'{DEMO} --allocation fastest --latency_batch 8 --dir_save {runs} --cpu --ratio 0.6 '
                             '--stop_limit 0.4 --epochs 1 --batch_size 16 --save run --print_every 1000'))
    results = json.loads((runs / 'run' / 'results.json').read_text())
    timed = results['allocations']
    assert timed[results['allocation']][1] == min(t for _, t in timed.values())
    assert all(abs(ratio - 0.6) <= 0.01 for ratio, _ in timed.values())
    assert f'Fastest allocation: {results["allocation"]}' in (runs / 'run' / 'log.txt').read_text()


def test_the_export_folds_the_pairs_that_are_faster_folded_by_default(tiny_demo, tmp_path, fake_timer, monkeypatch):
    """A compressed checkpoint whose last decomposed layer kept every basis filter: with --target latency the
    export folds that pair (faster folded at its widths), with --export_merge plan it folds none."""
    monkeypatch.setattr(export, 'onnx_missing', lambda: 'not needed here')
    hm, _ = hinge_model('--template Demo --model Hinge_ResNet_Basic --depth 8 --downsample_type A', init='p-identity')
    kept = zero_groups(hm)
    kept[hm.families[-1]] = torch.arange(hm.families[-1].size)
    compress(hm.families, kept, hm.net)
    save_torch(hm.net.state_dict(), tmp_path / 'compressed.pt')
    argv = f'{DEMO} --test_only --pretrain {tmp_path / "compressed.pt"} --target latency --dir_save {tmp_path} --cpu'
    for merge, folded in (('', ['features.3.0.body.3']), (' --export_merge plan', [])):
        main_hinge.run(make_args(f'{argv} --save s{len(merge)} --export {tmp_path / str(len(merge))}{merge}'))
        exported = json.loads((tmp_path / str(len(merge)) / 'export.json').read_text())
        assert exported['folded_beyond_plan'] == folded
