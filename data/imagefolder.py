"""Tiny-ImageNet and ImageNet from ImageFolder trees (dir_data/train, dir_data/val)."""

from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from utils.distributed import World
from utils.errors import UsageError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class FolderBatches:
    """A DataLoader over an ImageFolder that yields batches already on the training device."""

    def __init__(self, loader: DataLoader, seed: int):
        self.loader, self.seed = loader, seed
        self.device = torch.device('cpu')
        self.memory_format = torch.contiguous_format

    @property
    def num_samples(self) -> int:
        return len(self.loader.dataset)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)
        elif self.loader.generator is not None:
            self.loader.generator.manual_seed(self.seed * 1_000_003 + epoch)

    def share(self, world: World) -> None:
        """Each process reads its part: a distributed sampler (batch_size / processes each) for training,
        a contiguous slice of the test set."""
        if not world.distributed:
            return
        old = self.loader
        common = {'num_workers': old.num_workers, 'pin_memory': old.pin_memory}
        if old.generator is not None:
            sampler = DistributedSampler(old.dataset, world.size, world.rank, shuffle=True, seed=self.seed)
            self.loader = DataLoader(old.dataset, batch_size=-(-old.batch_size // world.size), sampler=sampler,
                                     **common)
        else:
            part = torch.tensor_split(torch.arange(len(old.dataset)), world.size)[world.rank].tolist()
            self.loader = DataLoader(Subset(old.dataset, part), batch_size=old.batch_size, shuffle=False, **common)

    def share_weight(self, batch: int, local: int) -> float:
        """The processes' shares have the same size here (the sampler pads), so their mean losses average."""
        return 1.0

    def to(self, device: torch.device) -> 'FolderBatches':
        self.device = device
        return self

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            if images.dim() == 4:
                images = images.contiguous(memory_format=self.memory_format)
            yield images, labels.to(self.device, non_blocking=True)


def _transforms(args: Namespace, tiny: bool):
    import torchvision.transforms as T

    normalise = [T.ToTensor(), T.Normalize(MEAN, STD)]
    flip = [] if args.no_flip else [T.RandomHorizontalFlip()]
    if tiny:
        train = T.Compose([T.RandomCrop(64, padding=4)] + flip + normalise)
        return train, T.Compose(normalise), 500
    train = T.Compose([T.RandomResizedCrop(224)] + flip + normalise)
    if args.crop in (5, 10):
        crops = T.FiveCrop(224) if args.crop == 5 else T.TenCrop(224)
        fused = T.Compose(normalise)
        test = T.Compose([T.Resize(256), crops, T.Lambda(lambda cs: torch.stack([fused(c) for c in cs]))])
        return train, test, 128 // args.crop
    return train, T.Compose([T.Resize(256), T.CenterCrop(224)] + normalise), 128


def build(args: Namespace, name: str) -> tuple[FolderBatches | None, FolderBatches]:
    """Training loader (None with --test_only) and test loader of an ImageFolder data set."""
    import torchvision.datasets as tv

    tiny = name == 'Tiny_ImageNet'
    if args.crop not in (1, 5, 10) or (tiny and args.crop != 1):
        raise UsageError(f'--crop {args.crop} is not supported for {name}; use 1'
                         + ('' if tiny else ', 5 or 10') + '.')
    root = Path(args.dir_data)
    folders = ['val'] + ([] if args.test_only else ['train'])
    missing = [f for f in folders if not (root / f).is_dir()]
    if missing:
        raise UsageError(f'--dir_data: {name} needs ImageFolder trees {", ".join(str(root / f) for f in missing)}; '
                         'point --dir_data at the data set root.')
    train_tf, test_tf, test_batch = _transforms(args, tiny)
    common = {'num_workers': args.n_threads, 'pin_memory': torch.cuda.is_available() and not args.cpu}
    test = FolderBatches(DataLoader(tv.ImageFolder(str(root / 'val'), test_tf), batch_size=test_batch,
                                    shuffle=False, **common), args.seed)
    train = None
    if not args.test_only:
        g = torch.Generator()
        train = FolderBatches(DataLoader(tv.ImageFolder(str(root / 'train'), train_tf), batch_size=args.batch_size,
                                         shuffle=True, generator=g, **common), args.seed)
    return train, test
