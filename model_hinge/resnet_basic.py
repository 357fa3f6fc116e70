"""ResNet basic blocks: A after both 3x3 convs; two-slope activation in between.

Hinge_ResNet_Basic_SVD regularises the columns of A1 and A2 (decomposition of both convs);
Hinge_ResNet_Basic prunes conv1 through the rows of A1 and decomposes conv2 through the columns of A2.
"""

import torch.nn as nn

from model.resnet import ResBlock
from model_hinge.core import Adapter, DReLU, bn_cuts, factorized_pair
from model_hinge.groups import Cut, GroupFamily, Member
from utils.errors import UsageError


def basic_blocks(net: nn.Module) -> list[ResBlock]:
    blocks = [m for m in net.modules() if isinstance(m, ResBlock)]
    if any(type(b) is not ResBlock for b in blocks):
        raise UsageError('this Hinge model needs basic blocks (ResNet depth 6n+2 up to 110); '
                         'bottleneck ResNets use Hinge_RESNET_BOTTLENECK.')
    return blocks


class ResNetBasicSVD(Adapter):
    baseline = 'resnet'
    separate_roles = True
    mean_penalty = True
    grad_ratio_buffer = True
    prune_first = False  # A1 groups: columns (decomposition) or rows (pruning of conv1)

    def insert(self, net: nn.Module, method: str | None) -> None:
        first_dim = 0 if self.prune_first else 1
        for block in basic_blocks(net):
            block.body[0] = factorized_pair(block.body[0], method, group_dim=first_dim)
            block.body[2] = DReLU()
            block.body[3] = factorized_pair(block.body[3], method, group_dim=1)

    def families(self, net: nn.Module) -> list[GroupFamily]:
        out = []
        for index, block in enumerate(basic_blocks(net)):
            (conv1, a1), bn1, (conv2, a2) = block.body[0], block.body[1], block.body[3]
            if self.prune_first:
                first = GroupFamily(index, 1, 0, [Member(a1.weight, 0)],
                                    [Cut(a1, 'weight', 0), *bn_cuts(bn1), Cut(conv2, 'weight', 1)])
            else:
                first = GroupFamily(index, 1, 0, [Member(a1.weight, 1)],
                                    [Cut(conv1, 'weight', 0), Cut(a1, 'weight', 1)])
            second = GroupFamily(index, 2, 1, [Member(a2.weight, 1)],
                                 [Cut(conv2, 'weight', 0), Cut(a2, 'weight', 1)], same_as=first)
            out += [first, second]
        return out


class ResNetBasic(ResNetBasicSVD):
    prune_first = True

    def merge_points(self, net: nn.Module) -> list[tuple[nn.Module, str]]:
        return [(block.body, '0') for block in basic_blocks(net)]
