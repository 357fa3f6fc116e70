"""VGG: A after every 3x3 conv but the first; columns and rows of the same A are both regularised.

Columns decompose the conv; rows prune the block's output (BN and the next conv's input follow),
except in the last block, whose outputs feed the classifier.
"""

import torch.nn as nn

from model_hinge.core import Adapter, class_is
from model_hinge.errors import HingeError
from model_hinge.plan import Cut, Family, Insertion, Legacy, Member, Plan, Policy, bn_tensors, cuts_of


class VGGAdapter(Adapter):
    name, baseline = 'Hinge_VGG', 'vgg'

    def plan(self, net: nn.Module) -> Plan:
        blocks = [(f'features.{i}', m) for i, m in enumerate(net.features) if class_is(m, 'BasicBlock')][1:]
        if not blocks:
            raise HingeError('Hinge_VGG needs the BatchNorm (CIFAR/Tiny-ImageNet) VGG layout.')
        insertions, families = [], []
        for index, (path, block) in enumerate(blocks):
            insertions.append(Insertion(f'{path}.0', group_dim=0))
            a = f'{path}.0.1'
            families.append(Family(index, 1, 0, [Member(f'{a}.weight', 1)],
                                   [Cut(f'{path}.0.0.weight', 0), Cut(f'{a}.weight', 1)]))
            cuts = []
            if index + 1 < len(blocks):
                bias = [f'{a}.bias'] if block[0].bias is not None else []
                cuts = cuts_of([f'{a}.weight', *bias, *bn_tensors(f'{path}.1')], 0)
                cuts.append(Cut(f'{blocks[index + 1][0]}.0.0.weight', 1))
            families.append(Family(index, 2, 1, [Member(f'{a}.weight', 0)], cuts))
        policy = Policy(label='ResBlock', roles=2, legacy=Legacy(prox_ignores_layer_balancing=True))
        return Plan(self.name, insertions, {}, families, policy)
