"""ResNet bottleneck blocks (ResNet-164): the block's own 1x1 convolutions act as A.

The outputs of conv1 (its rows) and the inputs of conv3 (its columns) are regularised; compressing them
shrinks conv1, the middle 3x3 and conv3 with their BatchNorms, while the block's input and output stay.
"""

import torch.nn as nn

from model_hinge.core import Adapter, blocks_named, class_is
from model_hinge.errors import HingeError
from model_hinge.plan import Cut, Family, Member, Plan, Policy, bn_tensors, cuts_of


class ResNetBottleneck(Adapter):
    name, baseline = 'Hinge_RESNET_BOTTLENECK', 'resnet'

    def plan(self, net: nn.Module) -> Plan:
        blocks = blocks_named(net, 'ResBlock', 'BottleNeck')
        if not blocks or not all(class_is(m, 'BottleNeck') for _, m in blocks):
            raise HingeError('Hinge_RESNET_BOTTLENECK needs bottleneck blocks (ResNet depth 9n+2, e.g. 164); '
                             'basic-block ResNets use Hinge_ResNet_Basic_SVD.')
        families = []
        for block, (path, _) in enumerate(blocks):
            conv1, middle, conv3 = f'{path}.body.0.weight', f'{path}.body.3.weight', f'{path}.body.6.weight'
            first = Family(block, 1, 0, [Member(conv1, 0)], [Cut(conv1, 0), *cuts_of(bn_tensors(f'{path}.body.1'), 0),
                                                              Cut(middle, 1, legacy_transposed=True)])
            second = Family(block, 3, 1, [Member(conv3, 1)],
                            [Cut(middle, 0, legacy_transposed=True), *cuts_of(bn_tensors(f'{path}.body.4'), 0),
                             Cut(conv3, 1, legacy_transposed=True)], same_as=len(families))
            families += [first, second]
        policy = Policy(label='ResBlock', roles=2, separate_roles=True, grad_ratio_buffer=True)
        return Plan(self.name, families=families, policy=policy)
