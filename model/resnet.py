"""CIFAR-style ResNet: basic blocks (20/56/110), bottleneck blocks (164, and the Tiny-ImageNet ResNet-50)."""

from argparse import Namespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.common import CIFAR_LIKE, BasicBlock, default_conv, num_classes, require_data
from utils.errors import UsageError


class ResBlock(nn.Module):
    """Basic block: body = conv3x3, BN, ReLU, conv3x3, BN; then shortcut add and ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, kernel_size: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.stride = stride
        self.body = nn.Sequential(default_conv(in_channels, planes, kernel_size, stride=stride, bias=False),
                                  nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                                  default_conv(planes, planes, kernel_size, bias=False), nn.BatchNorm2d(planes))
        self.downsample = downsample
        self.act_out = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.downsample is not None:
            x = self.downsample(x)
        out += x
        return self.act_out(out)


class BottleNeck(ResBlock):
    """Bottleneck block: body = 1x1, BN, ReLU, 3x3 (strided), BN, ReLU, 1x1 (x4), BN."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, kernel_size: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        nn.Module.__init__(self)
        self.stride = stride
        self.body = nn.Sequential(default_conv(in_channels, planes, 1, bias=False), nn.BatchNorm2d(planes),
                                  nn.ReLU(inplace=True),
                                  default_conv(planes, planes, kernel_size, stride=stride, bias=False),
                                  nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                                  default_conv(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes))
        self.downsample = downsample
        self.act_out = nn.ReLU(inplace=True)


class DownSampleA(nn.Module):
    """Parameter-free shortcut: 2x2 average pooling and zero channels on both sides."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1) // 2
        return F.pad(F.avg_pool2d(x, 2), [0, 0, 0, 0, c, c])


class DownSampleC(nn.Sequential):
    """Projection shortcut: strided 1x1 conv and BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(default_conv(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


def block_type(args: Namespace) -> type:
    """Basic blocks for 6n+2 depths up to 110; bottlenecks for 164 and deeper (9n+2) and for the original's
    'ResNet-50' (depth 50: five bottlenecks per stage)."""
    bottleneck = args.depth == 50 or args.depth >= 164 or (args.bottleneck and (args.depth - 2) % 9 == 0)
    if bottleneck and ((args.depth - 2) % 9 == 0 or args.depth == 50):
        return BottleNeck
    if not bottleneck and (args.depth - 2) % 6 == 0:
        return ResBlock
    raise UsageError(f'--depth {args.depth} cannot be built as a ResNet; use 6n+2 (basic blocks, e.g. 20, 56, 110) '
                     'or 9n+2 (bottleneck blocks, e.g. 164).')


class ResNet(nn.Module):
    def __init__(self, args: Namespace):
        super().__init__()
        require_data('ResNet', args.data_train, CIFAR_LIKE + ('Tiny_ImageNet',))
        if args.downsample_type not in ('A', 'C'):
            raise UsageError(f'--downsample_type {args.downsample_type} is unknown; use A or C.')
        self.block = block_type(args)
        if self.block is BottleNeck and args.downsample_type == 'A':
            raise UsageError('--downsample_type A only works with basic blocks; use C for bottleneck ResNets.')
        per_block = 6 if self.block is ResBlock else 9
        self.n_blocks = (args.depth - 2) // per_block
        self.expansion = self.block.expansion
        self.in_channels = 16
        self.downsample_type = args.downsample_type
        k = args.kernel_size
        stride = 1 if args.data_train in CIFAR_LIKE else 2
        self.features = nn.Sequential(BasicBlock(args.n_colors, 16, k, stride=stride, bias=not args.no_bias),
                                      self._make_layer(self.n_blocks, 16, k),
                                      self._make_layer(self.n_blocks, 32, k, stride=2),
                                      self._make_layer(self.n_blocks, 64, k, stride=2),
                                      nn.AvgPool2d(8))
        self.classifier = nn.Linear(64 * self.expansion, num_classes(args.data_train))

    def _make_layer(self, blocks: int, planes: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
        out_channels = planes * self.expansion
        downsample = None
        if stride != 1 or self.in_channels != out_channels:
            downsample = (DownSampleA() if self.downsample_type == 'A'
                          else DownSampleC(self.in_channels, out_channels, stride=stride))
        layers = [self.block(self.in_channels, planes, kernel_size, stride=stride, downsample=downsample)]
        self.in_channels = out_channels
        layers += [self.block(self.in_channels, planes, kernel_size) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def build(args: Namespace) -> nn.Module:
    return ResNet(args)
