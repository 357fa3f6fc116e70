"""DenseNet for CIFAR (k=12, depth 40; -BC with --bottleneck), pre-activation dense layers."""

import math
from argparse import Namespace

import torch
import torch.nn as nn

from model.common import CIFAR_LIKE, default_conv, init_kaiming, num_classes, require_data
from utils.errors import UsageError


class Dense(nn.Module):
    """BN -> ReLU -> conv3x3 (k channels), concatenated to the input."""

    def __init__(self, in_channels: int, k: int, kernel_size: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                                  default_conv(in_channels, k, kernel_size, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.body(x)), 1)


class BottleNeck(Dense):
    """BN -> ReLU -> 1x1 (4k) -> BN -> ReLU -> conv3x3 (k), concatenated to the input."""

    def __init__(self, in_channels: int, k: int, kernel_size: int = 3):
        nn.Module.__init__(self)
        self.body = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                                  nn.Conv2d(in_channels, 4 * k, 1, bias=False), nn.BatchNorm2d(4 * k), nn.ReLU(),
                                  default_conv(4 * k, k, kernel_size, bias=False))


class Transition(nn.Sequential):
    """BN -> ReLU -> 1x1 conv -> 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.BatchNorm2d(in_channels), nn.ReLU(),
                         default_conv(in_channels, out_channels, 1, bias=False), nn.AvgPool2d(2))


class DenseNet(nn.Module):
    def __init__(self, args: Namespace):
        super().__init__()
        require_data('DenseNet', args.data_train, CIFAR_LIKE)
        step = 6 if args.bottleneck else 3
        if (args.depth - 4) % step:
            raise UsageError(f'--depth {args.depth} cannot be built as a DenseNet; use {step}n+4 (e.g. 40).')
        n_layers = (args.depth - 4) // step
        k = args.k
        layer = BottleNeck if args.bottleneck else Dense
        channels = 2 * k
        modules = [default_conv(args.n_colors, channels, 3, bias=False)]
        for stage in range(3):
            block = []
            for _ in range(n_layers):
                block.append(layer(channels, k))
                channels += k
            modules.append(nn.Sequential(*block))
            if stage < 2:
                reduced = int(math.floor(args.reduction * channels))
                modules.append(Transition(channels, reduced))
                channels = reduced
        modules += [nn.BatchNorm2d(channels), nn.ReLU(), nn.AvgPool2d(8)]
        self.features = nn.Sequential(*modules)
        self.classifier = nn.Linear(channels, num_classes(args.data_train))
        init_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def build(args: Namespace) -> nn.Module:
    return DenseNet(args)
