"""VGG: A after every 3x3 conv but the first; columns and rows of the same A are both regularised.

Columns decompose the conv; rows prune the block's output (BN and the next conv's input follow),
except in the last block, whose outputs feed the classifier.
"""

import torch.nn as nn

from model.common import BasicBlock
from model_hinge.core import Adapter, bn_cuts, factorized_pair
from model_hinge.groups import Cut, GroupFamily, Member
from utils.errors import UsageError


def compressible_blocks(net: nn.Module) -> list[BasicBlock]:
    return [m for m in net.features if isinstance(m, BasicBlock)][1:]


class VGGAdapter(Adapter):
    baseline = 'vgg'
    separate_roles = False
    mean_penalty = False

    def insert(self, net: nn.Module, method: str | None) -> None:
        if not compressible_blocks(net):
            raise UsageError('Hinge_VGG needs the BatchNorm (CIFAR/Tiny-ImageNet) VGG layout.')
        for block in compressible_blocks(net):
            block[0] = factorized_pair(block[0], method, group_dim=0)

    def families(self, net: nn.Module) -> list[GroupFamily]:
        blocks = compressible_blocks(net)
        out = []
        for index, block in enumerate(blocks):
            (conv, a), bn = block[0], block[1]
            out.append(GroupFamily(index, 1, 0, [Member(a.weight, 1)], [Cut(conv, 'weight', 0), Cut(a, 'weight', 1)]))
            cuts = []
            if index + 1 < len(blocks):
                bias = [Cut(a, 'bias', 0)] if a.bias is not None else []
                cuts = [Cut(a, 'weight', 0), *bias, *bn_cuts(bn), Cut(blocks[index + 1][0][0], 'weight', 1)]
            out.append(GroupFamily(index, 2, 1, [Member(a.weight, 0)], cuts))
        return out
