"""utils/report.py: report.md of real (short) runs says what their files say; the comparison table of several
runs has their results.json values."""

import csv
import io
import json
import re
from pathlib import Path

import pytest

import main_hinge
from utils.errors import UsageError
from utils.io import load_torch
from utils.report import kept_channels, read_results

FLAGS = '--template Demo --model Hinge_ResNet_Basic --depth 8 --downsample_type A --cpu --print_every 1000'


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """A compression run (one search epoch, compression, one converging epoch) and a --test_only evaluation of
    its compressed checkpoint, on the shrunk demo set."""
    from data import demo

    root = tmp_path_factory.mktemp('report') / 'runs'
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, 'N_TRAIN', 320)
        patch.setattr(demo, 'N_TEST', 160)
        main_hinge.run(main_hinge.option.parse_args(
            f'{FLAGS} --batch_size 64 --epochs 1 --decay hingestep-50 --lr 0.05 --lr_ratio 0.01 --optimizer PG '
            f'--ratio 0.6 --threshold 1e9 --stop_limit 0.1 --dir_save {root} --save hinge'.split()))
        main_hinge.run(main_hinge.option.parse_args(
            f'{FLAGS} --test_only --pretrain {root / "hinge" / "model" / "model_converging_latest.pt"} '
            f'--dir_save {root} --save evaluated'.split()))
    return root / 'hinge', root / 'evaluated'


def _links(text: str) -> list[str]:
    return re.findall(r'\]\(([^)]+)\)', text)


def test_the_report_of_a_compression_run_says_what_its_files_say(runs):
    run = runs[0]
    r, text = read_results(run), (run / 'report.md').read_text()
    assert (f'| FLOPs | {r["flops"] / 1e6:,.2f} M | {r["flops_compressed"] / 1e6:,.2f} M | '
            f'{r["flops_ratio"]:.4f} |') in text
    assert (f'| parameters | {r["params"] / 1e3:,.2f} k | {r["params_compressed"] / 1e3:,.2f} k | '
            f'{r["params_ratio"]:.4f} |') in text
    info = load_torch(run / 'compression_information.pt', 'info')
    kept = [len(stat['pindex']) for block in sorted(k for k in info if k.startswith('info_layer'))
            for stat in info[block]]
    assert [k for _, _, k in kept_channels(info)] == kept and len(kept) == 6          # 3 blocks, A1 and A2
    assert f'| 0.0 | 16 | {kept[0]} |' in text and (run / 'report_channels.png').stat().st_size > 1000
    searched = [h for h in r['history'] if h['stage'] == 'search']
    assert ', '.join(f'{h["flops_ratio"]:.3f}' for h in searched) in text
    converging = [h for h in r['history'] if h['stage'] == 'converging']
    assert f'| best of the converging stage (epoch 1) | {converging[0]["top1_err"]:.2f} |' in text
    assert f'| right after compression | {r["compressed_top1_err"]:.2f} |' in text
    train_seconds = sum(h['seconds'] for h in searched)
    test_seconds = searched[0]['test_seconds']
    assert (f'| search | 1 | {train_seconds:,.1f} | {test_seconds:,.1f} | {train_seconds + test_seconds:,.1f} |'
            in text)
    compression = r['compression_seconds']
    assert f'| compression (threshold search, surgery, evaluation) | – | – | – | {compression:,.1f} |' in text
    assert '| `--ratio` | `0.6` |' in text and '`--lr_factor`' not in text.split('<details>')[0]
    assert 'compression_ratio.png' in _links(text) and 'report_curves.png' in _links(text)
    assert all((run / link).is_file() for link in _links(text))


def test_the_report_of_an_evaluation_has_its_time_and_no_search(runs):
    run = runs[1]
    r, text = read_results(run), (run / 'report.md').read_text()
    test = r['history'][-1]
    assert f'| evaluation (--test_only) | {r["top1_err"]:.2f} | {r["top5_err"]:.2f} |' in text
    seconds = test['test_seconds']
    assert f'| test | – | – | {seconds:,.1f} | {seconds:,.1f} | {test["images_per_second"]:,.1f} (evaluation) |' in text
    assert '## Search' not in text and '## Channels kept' not in text
    assert all((run / link).is_file() for link in _links(text))


def test_the_comparison_table_has_each_runs_results(runs, capsys):
    assert main_hinge.main(['--report', *map(str, runs), '--csv']) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row['run'] for row in rows] == [str(run) for run in runs]
    for row, run in zip(rows, runs, strict=True):
        r = read_results(run)
        for key in ('model', 'stage'):
            assert row[key] == r[key]
        for key in ('flops', 'flops_compressed', 'params', 'params_compressed', 'epoch'):
            assert int(row[key]) == r[key], key
        for key in ('flops_ratio', 'params_ratio', 'top1_err', 'top5_err', 'best_top1_err', 'images_per_second'):
            assert float(row[key]) == r[key], key
        assert float(row['training_seconds']) == pytest.approx(sum(h.get('seconds', 0) for h in r['history']))
    assert rows[1]['threshold'] == rows[1]['search_epochs'] == ''                     # absent for an evaluation
    runs_dir = runs[0].parent
    assert main_hinge.main(['--report', 'hinge', 'evaluated', '--dir_save', str(runs_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].startswith('| run | model |')
    first = read_results(runs[0])
    assert f'| {first["flops_ratio"]:.4f} |' in lines[2] and f'| {first["top1_err"]:.2f} |' in lines[2]


def test_a_damaged_results_file_is_a_usage_error(tmp_path):
    (tmp_path / 'results.json').write_text('{"model": ')
    with pytest.raises(UsageError, match='cannot be read'):
        read_results(tmp_path)
    (tmp_path / 'results.json').write_text(json.dumps({'model': 'x'}))
    with pytest.raises(UsageError, match='no history'):
        read_results(tmp_path)
