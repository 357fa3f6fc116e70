"""utils/io.py: atomic writes and weights-only loading."""

import os
import pickle

import pytest
import torch
import torch.nn as nn

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


def test_a_commit_moves_all_its_files_or_none(tmp_path):
    from utils.io import Commit, recover, save_torch

    run = tmp_path / 'run'
    save_torch(1, run / 'epochs.pt')
    commit = Commit(run)
    save_torch({'w': torch.ones(1)}, commit.path('model/model_latest.pt'))
    save_torch(2, commit.path('epochs.pt'))
    recover(run)                                              # killed before done(): nothing of it survives
    assert load_torch(run / 'epochs.pt', 't') == 1 and not (run / 'model').exists() and not commit.pending.exists()
    commit = Commit(run)
    save_torch({'w': torch.ones(1)}, commit.path('model/model_latest.pt'))
    save_torch(2, commit.path('epochs.pt'))
    (commit.pending / '.complete').write_bytes(b'')           # killed after the marker, before the moves
    (run / '.epochs.pt.abc.tmp').write_bytes(b'half')         # and a half-written file of an atomic write
    recover(run)
    assert load_torch(run / 'epochs.pt', 't') == 2 and (run / 'model' / 'model_latest.pt').is_file()
    assert sorted(p.name for p in run.rglob('*')) == ['epochs.pt', 'model', 'model_latest.pt']


def test_files_that_are_not_pytorch_files_are_named(tmp_path):
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(UsageError, match='notes.txt is not a PyTorch file'):
        load_torch(tmp_path / 'notes.txt', '--pretrain')


def test_channels_last_tensors_are_saved_contiguous(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).to(memory_format=torch.channels_last)
    assert not net[0].weight.is_contiguous()
    momentum = torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last)
    save_torch({'model': net.state_dict(), 'optimizer': {'state': {0: {'momentum_buffer': momentum}}}},
               tmp_path / 'ckpt.pt')
    loaded = load_torch(tmp_path / 'ckpt.pt', 'test')
    assert torch.equal(loaded['model']['0.weight'].view(-1), net[0].weight.detach().flatten())
    assert torch.equal(loaded['optimizer']['state'][0]['momentum_buffer'].view(-1), momentum.flatten())
    fresh = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    fresh.load_state_dict(loaded['model'])
    assert torch.equal(fresh[0].weight, net[0].weight)
