"""scripts/: every command line parses and validates; missing model-zoo files are reported before anything runs."""

import os
import shlex
import subprocess

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
