"""Building blocks shared by the baseline networks (same module nesting as the original code)."""

import math

import torch.nn as nn

from utils.errors import UsageError

CLASSES = {'CIFAR10': 10, 'CIFAR100': 100, 'Tiny_ImageNet': 200, 'ImageNet': 1000, 'Demo': 10}
CIFAR_LIKE = ('CIFAR10', 'CIFAR100', 'Demo')


def num_classes(data_train: str) -> int:
    """Number of classes of a data set name (as set by --data_train or the template)."""
    if data_train not in CLASSES:
        raise UsageError(f'--data_train {data_train} is not a known data set; use one of {", ".join(CLASSES)}.')
    return CLASSES[data_train]


def require_data(family: str, data_train: str, supported: tuple) -> None:
    """Refuse data sets a family cannot be built for (the original crashes on them)."""
    if data_train not in supported:
        raise UsageError(f'--model {family} cannot be built for --data_train {data_train}; '
                         f'it supports {", ".join(supported)}.')


def default_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 bias: bool = True, groups: int = 1) -> nn.Conv2d:
    """A 'same'-padded convolution."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                     bias=bias, groups=groups)


class BasicBlock(nn.Sequential):
    """conv -> BN -> ReLU (state-dict keys 0.*, 1.*)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__(default_conv(in_channels, out_channels, kernel_size, stride=stride, bias=bias),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def init_vgg(net: nn.Module) -> None:
    """The original's VGG initialisation (fan-out normal convs, N(0, 0.01) linears)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            c_out, _, kh, kw = m.weight.size()
            m.weight.data.normal_(0, math.sqrt(2 / (kh * kw * c_out)))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.01)
            m.bias.data.zero_()


def init_kaiming(net: nn.Module) -> None:
    """The original's DenseNet initialisation (fan-in normal convs and linears)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            _, c_in, kh, kw = m.weight.size()
            m.weight.data.normal_(0, math.sqrt(2 / (kh * kw * c_in)))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            _, c_in = m.weight.size()
            m.weight.data.normal_(0, math.sqrt(1 / c_in))
            m.bias.data.zero_()
