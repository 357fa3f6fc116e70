"""Baseline networks, resolved by name through an explicit registry, and the --base networks of --model Hinge."""

from argparse import Namespace
from collections.abc import Callable

import torch.nn as nn

from model import densenet, resnet, resnext, torchvision_models, vgg, wide_resnet
from utils.errors import UsageError

BASELINES: dict[str, Callable[[Namespace], nn.Module]] = {
    'vgg': vgg.build,
    'resnet': resnet.build,
    'densenet': densenet.build,
    'resnext': resnext.build,
    'wide_resnet': wide_resnet.build,
}
AUTO = 'Hinge'
BASE_NAMES = 'ResNet, VGG, DenseNet, ResNeXt, Wide_ResNet or torchvision:NAME'


def is_baseline(name: str) -> bool:
    """Whether --model names a plain (uncompressed) network."""
    return name.lower() in BASELINES


def is_auto(name: str) -> bool:
    """Whether --model asks for the automatic plan of the --base network (--model Hinge)."""
    return name.lower() == AUTO.lower()


def check_base(name: str) -> None:
    """Refuse a --base that is neither one of our baselines nor an existing torchvision classification model."""
    if torchvision_models.is_torchvision(name):
        torchvision_models.check('--base', name)
    elif not is_baseline(name):
        raise UsageError(f'--base {name} is not a network --model {AUTO} can compress; use {BASE_NAMES} '
                         '(e.g. torchvision:resnet50).')


def build_baseline(args: Namespace, family: str | None = None) -> nn.Module:
    """Build the baseline named by --model (or by `family`, which may be torchvision:NAME) from the flags;
    weights are freshly initialised."""
    name = family or args.model
    if torchvision_models.is_torchvision(name):
        return torchvision_models.build(args, name)
    return BASELINES[name.lower()](args)
