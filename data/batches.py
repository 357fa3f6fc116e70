"""Batches from an in-memory uint8 image tensor, augmented on whatever device holds it."""

from collections.abc import Iterator

import torch

from utils.distributed import SINGLE, World, my_share


class TensorBatches:
    """Shuffled (or ordered) batches of normalised float images, with batched random crop and flip.

    Images are kept as one uint8 tensor (N, H, W, C) on the training device; each batch is gathered,
    cropped (zero padding `pad`) and flipped in one indexing operation, then normalised like
    ToTensor + Normalize. Shuffling and augmentation are seeded per epoch, so a resumed run sees the
    same batches as an uninterrupted one.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: tuple, std: tuple,
                 train: bool, pad: int = 4, flip: bool = True, seed: int = 0):
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.train, self.pad, self.flip = train, pad, flip
        self.seed = seed
        self.epoch = 0
        self.world = SINGLE
        self.memory_format = torch.contiguous_format
        self.mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)

    @property
    def num_samples(self) -> int:
        return self.images.shape[0]

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffling/augmentation stream of an epoch."""
        self.epoch = epoch

    def share(self, world: World) -> None:
        """Yield this process's part of every global batch (the global batches stay those of one process)."""
        self.world = world

    def share_weight(self, batch: int, local: int) -> float:
        """local samples x processes / global samples of a batch: scales a mean loss so that averaging the
        processes' gradients gives the gradient of the global batch's mean loss."""
        start = batch * self.batch_size
        return local * self.world.size / (min(start + self.batch_size, self.num_samples) - start)

    def to(self, device: torch.device) -> 'TensorBatches':
        """Move the stored images to the training device (once)."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.images.device)
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return g

    def _augment(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random crop with zero padding and random horizontal flip, as one gather. The random draws are
        those of the whole global batch; only this process's share is gathered."""
        n, (h, w) = idx.numel(), self.images.shape[1:3]
        dev = self.images.device
        oy = torch.randint(0, 2 * self.pad + 1, (n, 1), generator=g, device=dev) - self.pad
        ox = torch.randint(0, 2 * self.pad + 1, (n, 1), generator=g, device=dev) - self.pad
        flipped = torch.rand((n, 1), generator=g, device=dev) < 0.5 if self.flip else None
        idx, oy, ox = (my_share(t, self.world) for t in (idx, oy, ox))
        rows = oy + torch.arange(h, device=dev)
        cols = ox + torch.arange(w, device=dev)
        if flipped is not None:
            cols = torch.where(my_share(flipped, self.world), ox + torch.arange(w - 1, -1, -1, device=dev), cols)
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        out = self.images[idx[:, None, None], rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
        return out * inside[..., None].to(out.dtype)

    def _normalise(self, batch_nhwc: torch.Tensor) -> torch.Tensor:
        x = batch_nhwc.permute(0, 3, 1, 2).float().div(255)
        return x.sub(self.mean).div(self.std).contiguous(memory_format=self.memory_format)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self._generator()
        n = self.num_samples
        order = (torch.randperm(n, generator=g, device=self.images.device) if self.train
                 else torch.arange(n, device=self.images.device))
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self._augment(idx, g) if self.train else self.images[my_share(idx, self.world)]
            yield self._normalise(batch), self.labels[my_share(idx, self.world)]
