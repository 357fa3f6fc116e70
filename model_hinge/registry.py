"""The hand-written plans of the paper's networks, resolved by Hinge model name (an explicit registry)."""

from model_hinge.core import Adapter
from model_hinge.densenet import DenseNetPrune, DenseNetSVD
from model_hinge.resnet_basic import ResNetBasic, ResNetBasicSVD
from model_hinge.resnet_bottleneck import ResNetBottleneck
from model_hinge.resnext import ResNeXtAdapter
from model_hinge.vgg import VGGAdapter
from model_hinge.wide_resnet import WideResNetAdapter

ADAPTERS: dict[str, type[Adapter]] = {a.name.lower(): a for a in (
    ResNetBasicSVD, ResNetBasic, ResNetBottleneck, ResNeXtAdapter, DenseNetSVD, DenseNetPrune, VGGAdapter,
    WideResNetAdapter)}
NAMES = ', '.join(a.name for a in ADAPTERS.values())


def is_hinge(name: str) -> bool:
    """Whether --model names a Hinge model."""
    return name.lower() in ADAPTERS


def adapter_for(name: str) -> Adapter:
    """The adapter of a Hinge model name (case-insensitive)."""
    return ADAPTERS[name.lower()]()
