"""Wide ResNet: A (with the conv's bias) after both 3x3 convs of each block.

The rows of A1 prune conv1's outputs (A1's bias, bn2 and conv2's inputs follow) and conv1 merges with A1
for deployment; the columns of A2 decompose conv2.
"""

import torch.nn as nn

from model_hinge.core import Adapter, blocks_named
from model_hinge.plan import Cut, Family, Insertion, Legacy, Member, Plan, Policy, bn_tensors, cuts_of


class WideResNetAdapter(Adapter):
    name, baseline = 'Hinge_WIDE_RESNET', 'wide_resnet'

    def plan(self, net: nn.Module) -> Plan:
        insertions, families = [], []
        blocks = [path for path, _ in blocks_named(net, 'WideBasic')]
        for block, path in enumerate(blocks):
            insertions += [Insertion(f'{path}.conv1', group_dim=0, merge=True), Insertion(f'{path}.conv2', group_dim=1)]
            a1, a2, conv2 = f'{path}.conv1.1', f'{path}.conv2.1.weight', f'{path}.conv2.0.weight'
            first = Family(block, 1, 0, [Member(f'{a1}.weight', 0)],
                           [*cuts_of([f'{a1}.weight', f'{a1}.bias', *bn_tensors(f'{path}.bn2')], 0), Cut(conv2, 1)])
            second = Family(block, 2, 1, [Member(a2, 1)], [Cut(conv2, 0), Cut(a2, 1)], same_as=len(families))
            families += [first, second]
        policy = Policy(label='Wide ResBlock', roles=2, separate_roles=True, grad_ratio_buffer=True,
                        legacy=Legacy(prox_ignores_layer_balancing=True))
        return Plan(self.name, insertions, {}, families, policy)
