"""utils/rundir.py: run directories, --reset safety, logs."""

import pytest

from conftest import make_args
from utils.errors import UsageError
from utils.rundir import RunLog, remove_run_dir, resolve_run_dir


def test_save_and_load_resolution(tmp_path):
    args = make_args(f'--dir_save {tmp_path} --save run1')
    assert resolve_run_dir(args) == tmp_path / 'run1'
    assert resolve_run_dir(make_args(f'--dir_save {tmp_path} --save group/run2')) == tmp_path / 'group' / 'run2'
    (tmp_path / 'run1' / 'model').mkdir(parents=True)
    assert resolve_run_dir(make_args(f'--dir_save {tmp_path} --load run1')) == tmp_path / 'run1'
    assert resolve_run_dir(make_args(f'--dir_save {tmp_path} --load {tmp_path / "run1"}')) == tmp_path / 'run1'
    with pytest.raises(UsageError, match='--load'):
        resolve_run_dir(make_args(f'--dir_save {tmp_path} --load missing'))
    with pytest.raises(UsageError, match='leads outside --dir_save'):
        resolve_run_dir(make_args(f'--dir_save {tmp_path / "runs"} --load {tmp_path / "run1"}'))


def test_run_directories_never_lead_outside_dir_save(tmp_path):
    runs, outside = tmp_path / 'runs', tmp_path / 'elsewhere'
    runs.mkdir()
    outside.mkdir()
    (runs / 'link').symlink_to(outside)
    with pytest.raises(UsageError, match='--save link leads outside --dir_save'):
        resolve_run_dir(make_args(f'--dir_save {runs} --save link'))
    for name in ('../x', 'a b', 'a;b', '$(touch x)', '.hidden/..', '', '/abs'):
        args = make_args(f'--dir_save {runs}')
        args.save = name
        with pytest.raises(UsageError, match='is not a run name'):
            resolve_run_dir(args)
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(UsageError, match='is a file'):
        resolve_run_dir(make_args(f'--dir_save {tmp_path / "afile"} --save r'))
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['afile', 'elsewhere', 'link', 'runs']


def test_reset_only_deletes_inside_dir_save(tmp_path):
    (tmp_path / 'runs' / 'a').mkdir(parents=True)
    (tmp_path / 'keep.txt').write_text('x')
    remove_run_dir(tmp_path / 'runs' / 'a', str(tmp_path / 'runs'))
    assert not (tmp_path / 'runs' / 'a').exists()
    for outside in (tmp_path / 'runs', tmp_path / 'runs' / '..', tmp_path):
        with pytest.raises(UsageError, match='--reset'):
            remove_run_dir(outside, str(tmp_path / 'runs'))
    assert (tmp_path / 'keep.txt').exists()


def test_log_appends_and_config_records_every_flag(tmp_path, capsys):
    args = make_args(f'--dir_save {tmp_path} --save r --lr 0.05')
    for line in ('first', 'second'):
        log = RunLog(tmp_path / 'r', args)
        log.write(line)
        log.close()
    assert (tmp_path / 'r' / 'log.txt').read_text() == 'first\nsecond\n'
    assert 'lr: 0.05' in (tmp_path / 'r' / 'config.txt').read_text()
    assert not (tmp_path / 'r' / 'model').exists()         # created by the first checkpoint, not by the log
    assert 'second' in capsys.readouterr().out
