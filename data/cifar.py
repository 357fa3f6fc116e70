"""CIFAR-10/100 from the standard python layout (cifar-10-batches-py/, cifar-100-python/)."""

import pickle
import shutil
import socket
import tempfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch

from data.batches import TensorBatches
from utils.errors import UsageError

MEAN = tuple(x / 255.0 for x in (125.3, 123.0, 113.9))
STD = tuple(x / 255.0 for x in (63.0, 62.1, 66.7))
LAYOUT = {
    'CIFAR10': ('cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)], ['test_batch'], 'labels'),
    'CIFAR100': ('cifar-100-python', ['train'], ['test'], 'fine_labels'),
}
TEST_BATCH = 500


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only plain containers and numpy arrays: a data file cannot run code."""

    ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
               ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode')}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'unexpected object {module}.{name}')


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, 'rb') as f:
            entry = _ArrayUnpickler(f, encoding='latin1').load()
        images = np.asarray(entry['data'], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
        raise UsageError(f'--dir_data: {path} is not a CIFAR batch in the python format ({err}).') from None
    if len(images) != len(labels):
        raise UsageError(f'--dir_data: {path} has {len(images)} images but {len(labels)} labels.')
    return images, labels


def read_split(folder: Path, files: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as one uint8 tensor (N, 32, 32, 3) and labels as int64 (N,)."""
    parts = [_read_batch(folder / name, label_key) for name in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def _download(name: str, root: Path) -> None:
    """Fetch the data set with torchvision into a temporary folder, then move it into place."""
    import torchvision.datasets as tv

    folder = LAYOUT[name][0]
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.download-', dir=root))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        getattr(tv, name)(root=str(tmp), train=True, download=True)
        (root / folder).mkdir(exist_ok=True)
        for item in (tmp / folder).iterdir():
            if not (root / folder / item.name).exists():
                shutil.move(str(item), str(root / folder / item.name))
    finally:
        socket.setdefaulttimeout(previous)
        shutil.rmtree(tmp, ignore_errors=True)


def locate(name: str, dir_data: str) -> Path:
    """The folder with the batches, downloading it when absent and the network allows."""
    folder, train_files, test_files, _ = LAYOUT[name]
    path = Path(dir_data) / folder
    needed = train_files + test_files
    if all((path / f).is_file() for f in needed):
        return path
    try:
        _download(name, Path(dir_data))
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f'--dir_data: {name} is not in {path} and could not be downloaded ({reason}); '
                         f'put the python version there ({", ".join(needed)}) or point --dir_data at it.') from None
    return path


def build(args: Namespace, name: str) -> tuple[TensorBatches | None, TensorBatches]:
    """Training batches (None with --test_only) and test batches (500 per batch, in order)."""
    path = locate(name, args.dir_data)
    _, train_files, test_files, label_key = LAYOUT[name]
    test_x, test_y = read_split(path, test_files, label_key)
    test = TensorBatches(test_x, test_y, TEST_BATCH, MEAN, STD, train=False)
    train = None
    if not args.test_only:
        train_x, train_y = read_split(path, train_files, label_key)
        train = TensorBatches(train_x, train_y, args.batch_size, MEAN, STD, train=True,
                              flip=not args.no_flip, seed=args.seed)
    return train, test
