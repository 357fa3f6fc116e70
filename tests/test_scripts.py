"""scripts/: every command line parses and validates; missing model-zoo files are reported before anything runs;
the device check's dry run runs every part."""

import json
import os
import shlex
import subprocess
import sys

import pytest

import main_hinge
from conftest import ROOT

SCRIPTS = {'hinge_resnet.sh': 5, 'hinge_resnext.sh': 4, 'hinge_densenet.sh': 1, 'hinge_wide_resnet.sh': 2,
           'hinge_vgg.sh': 1, 'demo_test.sh': 13, 'baseline_test.sh': 12}


def _record(tmp_path, script: str, zoo) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run a script with a `python` that only records its arguments."""
    bin_dir, calls = tmp_path / 'bin', tmp_path / 'calls.txt'
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / 'python'
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {calls}\necho >> {calls}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', MODEL_PATH=str(zoo), SAVE_PATH=str(tmp_path / 's'),
               DATA_PATH=str(tmp_path / 'd'))
    done = subprocess.run(['bash', str(ROOT / 'scripts' / script)], env=env, capture_output=True, text=True)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return done, [shlex.split(line)[1:] for line in lines]


@pytest.mark.parametrize('script,entries', SCRIPTS.items())
def test_every_command_line_parses_and_validates(tmp_path, script, entries):
    zoo = tmp_path / 'zoo'
    zoo.mkdir()
    text = (ROOT / 'scripts' / script).read_text()
    for name in {w.split('/')[-1].rstrip('"') for w in text.split() if w.endswith('.pt"') or w.endswith('.pt')}:
        (zoo / name).touch()
    for brace in [w for w in text.split() if '{' in w and '.pt' in w]:
        for name in brace.split('{')[1].split('}')[0].split(','):
            (zoo / f'{name}.pt').touch()
    done, calls = _record(tmp_path, script, zoo)
    assert done.returncode == 0, done.stderr
    assert len(calls) == entries
    for argv in calls:
        args = main_hinge.option.parse_args(argv)
        main_hinge.validate(args)
        assert args.dir_save == str(tmp_path / 's') and args.dir_data == str(tmp_path / 'd')
        assert os.path.dirname(args.pretrain) == str(zoo)
        if not args.test_only:
            assert args.legacy_search and args.teacher == args.pretrain


@pytest.mark.parametrize('script', SCRIPTS)
def test_missing_zoo_files_are_named_and_nothing_runs(tmp_path, script):
    done, calls = _record(tmp_path, script, tmp_path / 'empty')
    assert done.returncode == 1 and calls == []
    assert 'missing model-zoo file' in done.stderr and 'nothing was run' in done.stderr
    assert not (tmp_path / 's').exists()


def test_scripts_are_valid_bash():
    for path in sorted((ROOT / 'scripts').glob('*.sh')):
        assert subprocess.run(['bash', '-n', str(path)]).returncode == 0, path.name


@pytest.mark.slow
def test_device_check_dry_run_runs_every_part(tmp_path, shared):
    """scripts/device_check.sh --dry-run on the CPU (over a minute of CPU time: slow): every part ends with status 0
    and is listed in the summary with its output."""
    env = dict(os.environ, HINGE_SHARED=str(shared), PYTHON=sys.executable)
    env.pop('ORIGINAL', None)
    done = subprocess.run(['bash', str(ROOT / 'scripts' / 'device_check.sh'), '--dry-run', str(tmp_path)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / 'summary.md').read_text().splitlines()
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip('|').split('|')] for line in lines
                                               if line.startswith('| ') and not line.startswith('| part'))}
    assert list(rows) == ['suite', 'benchmark-stages', 'benchmark-latency', 'precision-single', 'precision-bf16',
                          'original', 'peers']
    assert {part: cells[0] for part, cells in rows.items()} == dict.fromkeys(rows, '0')
    for part, cells in rows.items():
        assert (tmp_path / f'{part}.log').is_file() and cells[2].endswith(f'{part}.log')
    assert '## Stages' in (tmp_path / 'benchmark.md').read_text()
    assert '| top1_err |' in (tmp_path / 'precision.md').read_text()
    assert json.loads((tmp_path / 'original_ours.json').read_text())['searched_ratio'] > 0
    assert json.loads((tmp_path / 'peers' / 'peers.json').read_text())['rows']
