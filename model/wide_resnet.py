"""Wide ResNet (depth 6n+4, widening factor k) with pre-activation blocks."""

from argparse import Namespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.common import CIFAR_LIKE, default_conv, num_classes, require_data
from utils.errors import UsageError


class WideBasic(nn.Module):
    """BN -> ReLU -> conv1 -> dropout -> BN -> ReLU -> conv2 (strided), plus the (1x1) shortcut."""

    def __init__(self, in_planes: int, planes: int, dropout_rate: float, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout_rate)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        out += self.shortcut(x)
        return out


class WideResNet(nn.Module):
    def __init__(self, args: Namespace):
        super().__init__()
        require_data('Wide_ResNet', args.data_train, CIFAR_LIKE + ('Tiny_ImageNet',))
        if (args.depth - 4) % 6:
            raise UsageError(f'--depth {args.depth} cannot be built as a Wide ResNet; use 6n+4 (e.g. 16, 28).')
        n, k = (args.depth - 4) // 6, args.widen_factor
        stages = [16, 16 * k, 32 * k, 64 * k]
        self.in_planes = 16
        stride = 1 if args.data_train in CIFAR_LIKE else 2
        self.conv1 = default_conv(args.n_colors, stages[0], 3, stride=stride)
        self.layer1 = self._wide_layer(stages[1], n, args.dropout_rate, stride=1)
        self.layer2 = self._wide_layer(stages[2], n, args.dropout_rate, stride=2)
        self.layer3 = self._wide_layer(stages[3], n, args.dropout_rate, stride=2)
        self.bn1 = nn.BatchNorm2d(stages[3], momentum=0.9)
        self.linear = nn.Linear(stages[3], num_classes(args.data_train))

    def _wide_layer(self, planes: int, num_blocks: int, dropout_rate: float, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(WideBasic(self.in_planes, planes, dropout_rate, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return self.linear(F.avg_pool2d(out, 8).flatten(1))


def build(args: Namespace) -> nn.Module:
    return WideResNet(args)
