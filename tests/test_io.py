"""utils/io.py: atomic writes and weights-only loading."""

import os
import pickle

import pytest
import torch

from utils.errors import UsageError
from utils.io import load_torch, save_json, save_torch


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / 'sub' / 'model.pt'
    save_torch({'w': torch.ones(3)}, path)
    save_torch({'w': torch.zeros(3)}, path)
    assert torch.equal(load_torch(path, 'test')['w'], torch.zeros(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ['model.pt']
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / 'results.json'
    save_json({'epoch': 1}, path)

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        save_json({'epoch': Unserialisable()}, path)
    assert path.read_text().strip() == '{\n "epoch": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ['results.json']


class _Payload:
    def __reduce__(self):
        return (os.system, ('echo pwned',))


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
def test_files_that_need_arbitrary_unpickling_are_refused(tmp_path):
    path = tmp_path / 'evil.pt'
    with open(path, 'wb') as f:
        pickle.dump({'w': _Payload()}, f)
    with pytest.raises(UsageError, match='cannot be loaded safely'):
        load_torch(path, '--pretrain')


def test_missing_and_corrupt_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match='does not exist'):
        load_torch(tmp_path / 'nope.pt', '--pretrain')
    (tmp_path / 'bad.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(UsageError, match='bad.pt'):
        load_torch(tmp_path / 'bad.pt', '--pretrain')
