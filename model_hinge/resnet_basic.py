"""ResNet basic blocks: A after both 3x3 convs; a two-slope activation in between.

Hinge_ResNet_Basic_SVD regularises the columns of A1 and A2 (decomposition of both convs);
Hinge_ResNet_Basic prunes conv1 through the rows of A1 (then merges conv1 and A1) and decomposes conv2
through the columns of A2.
"""

import torch.nn as nn

from model_hinge.core import Adapter, blocks_named, class_is
from model_hinge.errors import HingeError
from model_hinge.plan import Cut, Family, Insertion, Legacy, Member, Plan, Policy, bn_tensors, cuts_of


def basic_blocks(net: nn.Module) -> list[str]:
    """Module paths of the basic blocks; bottleneck networks are refused."""
    blocks = blocks_named(net, 'ResBlock', 'BottleNeck')
    if not blocks or not all(class_is(m, 'ResBlock') for _, m in blocks):
        raise HingeError('this Hinge model needs basic blocks (ResNet depth 6n+2 up to 110); '
                         'bottleneck ResNets use Hinge_RESNET_BOTTLENECK.')
    return [path for path, _ in blocks]


class ResNetBasicSVD(Adapter):
    name, baseline = 'Hinge_ResNet_Basic_SVD', 'resnet'
    prune_first = False  # A1 groups: columns (decomposition) or rows (pruning of conv1)

    def plan(self, net: nn.Module) -> Plan:
        insertions, families = [], []
        for block, path in enumerate(basic_blocks(net)):
            conv1, conv2 = f'{path}.body.0', f'{path}.body.3'
            insertions += [Insertion(conv1, group_dim=0 if self.prune_first else 1, merge=self.prune_first),
                           Insertion(conv2, group_dim=1)]
            a1, a2 = f'{conv1}.1.weight', f'{conv2}.1.weight'
            if self.prune_first:
                first = Family(block, 1, 0, [Member(a1, 0)],
                               [Cut(a1, 0), *cuts_of(bn_tensors(f'{path}.body.1'), 0), Cut(f'{conv2}.0.weight', 1)])
            else:
                first = Family(block, 1, 0, [Member(a1, 1)], [Cut(f'{conv1}.0.weight', 0), Cut(a1, 1)])
            second = Family(block, 2, 1, [Member(a2, 1)], [Cut(f'{conv2}.0.weight', 0), Cut(a2, 1)],
                            same_as=len(families))
            families += [first, second]
        replacements = {f'{path}.body.2': 'two_slope_relu' for path in basic_blocks(net)}
        policy = Policy(label='ResBlock', roles=2, separate_roles=True, mean_penalty=True, grad_ratio_buffer=True,
                        legacy=Legacy(prox_ignores_layer_balancing=self.prune_first,
                                      unmerged_search=self.prune_first))
        return Plan(self.name, insertions, replacements, families, policy)


class ResNetBasic(ResNetBasicSVD):
    name = 'Hinge_ResNet_Basic'
    prune_first = True
