"""Baseline networks, resolved by name through an explicit registry."""

from argparse import Namespace
from collections.abc import Callable

import torch.nn as nn

from model import densenet, resnet, resnext, vgg, wide_resnet

BASELINES: dict[str, Callable[[Namespace], nn.Module]] = {
    'vgg': vgg.build,
    'resnet': resnet.build,
    'densenet': densenet.build,
    'resnext': resnext.build,
    'wide_resnet': wide_resnet.build,
}


def is_baseline(name: str) -> bool:
    """Whether --model names a plain (uncompressed) network."""
    return name.lower() in BASELINES


def build_baseline(args: Namespace, family: str | None = None) -> nn.Module:
    """Build the baseline named by --model (or by `family`) from the flags; weights are freshly initialised."""
    return BASELINES[(family or args.model).lower()](args)
