"""An embedded, generated, learnable data set (CIFAR-shaped) for offline demos and tests.

Ten classes of 32x32 colour images: class c is a sinusoidal grating with one of five spatial frequencies
(c mod 5) tinted warm or cool (c div 5), at a random orientation and phase, with random contrast,
brightness and pixel noise. A small CNN learns it in a few epochs; it needs no download.
"""

import math
from argparse import Namespace

import torch

from data.batches import TensorBatches
from data.cifar import MEAN, STD, TEST_BATCH

N_TRAIN, N_TEST = 2560, 512
FREQUENCIES = (1.5, 2.25, 3.0, 3.75, 4.5)
TINTS = ((1.0, 0.55, 0.25), (0.25, 0.55, 1.0))


def generate(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8, N x 32 x 32 x 3) and balanced labels, fully determined by `seed`."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    coords = torch.linspace(-1, 1, 32)
    yy, xx = torch.meshgrid(coords, coords, indexing='ij')
    theta = torch.rand(n, 1, 1, generator=g) * math.pi
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    freq = torch.tensor(FREQUENCIES)[labels % 5].view(n, 1, 1)
    wave = torch.sin(math.pi * freq * (xx * torch.cos(theta) + yy * torch.sin(theta)) + phase)
    contrast = 0.08 + 0.17 * torch.rand(n, 1, 1, generator=g)
    tint = torch.tensor(TINTS)[labels // 5].view(n, 1, 1, 3)
    tint = tint + 0.35 * torch.randn(n, 1, 1, 3, generator=g)
    base = 0.35 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    image = base + (contrast * wave).unsqueeze(-1) * tint + 0.2 * torch.randn(n, 32, 32, 3, generator=g)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), labels


def build(args: Namespace, name: str) -> tuple[TensorBatches | None, TensorBatches]:
    """Training and test batches of the demo set, with the CIFAR pipeline (crop, flip, normalisation)."""
    test_x, test_y = generate(N_TEST, seed=2021)
    test = TensorBatches(test_x, test_y, TEST_BATCH, MEAN, STD, train=False)
    train = None
    if not args.test_only:
        train_x, train_y = generate(N_TRAIN, seed=2020)
        train = TensorBatches(train_x, train_y, args.batch_size, MEAN, STD, train=True,
                              flip=not args.no_flip, seed=args.seed)
    return train, test
