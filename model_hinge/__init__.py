"""Hinge models, resolved by name through an explicit registry of architecture adapters."""

from model_hinge.core import Adapter
from model_hinge.resnet_basic import ResNetBasic, ResNetBasicSVD
from model_hinge.vgg import VGGAdapter
from utils.errors import UsageError

ADAPTERS: dict[str, type[Adapter]] = {
    'hinge_resnet_basic_svd': ResNetBasicSVD,
    'hinge_resnet_basic': ResNetBasic,
    'hinge_vgg': VGGAdapter,
}
PLANNED = ('hinge_resnet_bottleneck', 'hinge_resnext', 'hinge_densenet_svd', 'hinge_densenet', 'hinge_wide_resnet')


def is_hinge(name: str) -> bool:
    """Whether --model names a Hinge model (available or planned)."""
    return name.lower() in ADAPTERS or name.lower() in PLANNED


def adapter_for(name: str) -> Adapter:
    """The adapter of a Hinge model name (case-insensitive)."""
    key = name.lower()
    if key in PLANNED:
        raise UsageError(f'--model {name} is not available in this version yet; available Hinge models: '
                         'Hinge_ResNet_Basic_SVD, Hinge_ResNet_Basic, Hinge_VGG.')
    return ADAPTERS[key]()
