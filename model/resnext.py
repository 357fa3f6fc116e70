"""ResNeXt for CIFAR (depth 9n+2, cardinality x bottleneck width, width doubling per stage)."""

from argparse import Namespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.common import CIFAR_LIKE, num_classes, require_data
from utils.errors import UsageError


class Block(nn.Module):
    """Grouped-convolution bottleneck: 1x1 -> grouped 3x3 -> 1x1 (x2), projection shortcut when needed."""

    expansion = 2

    def __init__(self, in_planes: int, cardinality: int, bottleneck_width: int, stride: int = 1):
        super().__init__()
        width = cardinality * bottleneck_width
        self.conv1 = nn.Conv2d(in_planes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, self.expansion * width, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * width)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * width:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * width, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNeXt(nn.Module):
    def __init__(self, args: Namespace):
        super().__init__()
        require_data('ResNeXt', args.data_train, CIFAR_LIKE)
        if (args.depth - 2) % 9:
            raise UsageError(f'--depth {args.depth} cannot be built as a ResNeXt; use 9n+2 (e.g. 20, 164).')
        n = (args.depth - 2) // 9
        self.cardinality = args.cardinality
        self.bottleneck_width = args.bottleneck_width
        self.in_planes = 64
        self.conv1 = nn.Conv2d(args.n_colors, 64, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(n, 1)
        self.layer2 = self._make_layer(n, 2)
        self.layer3 = self._make_layer(n, 2)
        self.linear = nn.Linear(self.cardinality * self.bottleneck_width, num_classes(args.data_train))

    def _make_layer(self, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(Block(self.in_planes, self.cardinality, self.bottleneck_width, s))
            self.in_planes = Block.expansion * self.cardinality * self.bottleneck_width
        self.bottleneck_width *= 2
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.avg_pool2d(out, 8).flatten(1))


def build(args: Namespace) -> nn.Module:
    return ResNeXt(args)
