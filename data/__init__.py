"""Data sets, resolved by name through an explicit registry."""

from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data import cifar, demo, imagefolder
from utils.errors import UsageError

DATASETS: dict[str, Callable[[Namespace, str], tuple[Any, Any]]] = {
    'CIFAR10': cifar.build,
    'CIFAR100': cifar.build,
    'Tiny_ImageNet': imagefolder.build,
    'ImageNet': imagefolder.build,
    'Demo': demo.build,
}
INPUT_DIM = {'CIFAR10': (3, 32, 32), 'CIFAR100': (3, 32, 32), 'Demo': (3, 32, 32),
             'Tiny_ImageNet': (3, 64, 64), 'ImageNet': (3, 224, 224)}


@dataclass
class Data:
    """Training batches (None when only testing), test batches, and the input size used for counting."""

    train: Any
    test: Any
    name: str
    input_dim: tuple


def build_data(args: Namespace) -> Data:
    """Load --data_train / --data_test (they must name the same data set)."""
    if args.data_train not in DATASETS:
        raise UsageError(f'--data_train {args.data_train} is not a known data set; use one of {", ".join(DATASETS)}.')
    if args.data_test != args.data_train:
        raise UsageError(f'--data_test {args.data_test} differs from --data_train {args.data_train}; '
                         'train and test on the same data set.')
    if args.batch_size < 1:
        raise UsageError(f'--batch_size {args.batch_size} must be at least 1.')
    train, test = DATASETS[args.data_train](args, args.data_train)
    return Data(train, test, args.data_train, INPUT_DIM[args.data_train])
