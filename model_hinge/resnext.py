"""ResNeXt: the block's 1x1 convolutions act as A, grouped per cardinality group.

One group is a whole cardinality group: its conv1 output rows and its conv3 input columns together.
Removing it removes one group of the grouped 3x3 convolution (and its BatchNorm channels).
"""

import torch.nn as nn

from model_hinge.core import Adapter, blocks_named
from model_hinge.plan import Cut, Family, Member, Plan, Policy, bn_tensors, cuts_of


class ResNeXtAdapter(Adapter):
    name, baseline = 'Hinge_RESNEXT', 'resnext'

    def plan(self, net: nn.Module) -> Plan:
        families = []
        blocks = blocks_named(net, 'Block')
        for block, (path, module) in enumerate(blocks):
            chunk = module.conv2.out_channels // module.conv2.groups
            conv1, conv2, conv3 = (f'{path}.conv{i}.weight' for i in (1, 2, 3))
            cuts = [Cut(conv1, 0), *cuts_of(bn_tensors(f'{path}.bn1'), 0), Cut(conv2, 0),
                    *cuts_of(bn_tensors(f'{path}.bn2'), 0), Cut(conv3, 1, legacy_transposed=True)]
            families.append(Family(block, 1, 0, [Member(conv1, 0, chunk), Member(conv3, 1, chunk)], cuts))
        return Plan(self.name, families=families, policy=Policy(label='Block'))
