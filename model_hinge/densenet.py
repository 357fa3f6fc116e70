"""DenseNet: A after the last convolution of every dense layer and after every transition's convolution.

Hinge_DENSENET_SVD regularises the columns of A (decomposition; block structure unchanged). Hinge_DenseNet
regularises the rows of A: removing a layer's output channel removes one position of every later
concatenation of its block (the later layers' BatchNorm and first convolution, the transition or the final
BatchNorm and the classifier), at that layer's offset; conv and A merge for deployment.
"""

import torch.nn as nn

from model_hinge.core import Adapter, class_is
from model_hinge.errors import HingeError
from model_hinge.plan import Cut, Family, Insertion, Legacy, Member, Plan, Policy, bn_tensors

LEGACY = Legacy(prox_ignores_annealing=True, layer_weight_shift=1)


def units(net: nn.Module) -> tuple[list[tuple[str, str, nn.Module]], str]:
    """(kind, path, module) of every dense layer and transition in order, and the final BatchNorm's path."""
    found, final_bn = [], ''
    for i, child in enumerate(net.features):
        if class_is(child, 'Transition'):
            found.append(('transition', f'features.{i}', child))
        elif isinstance(child, nn.Sequential):
            layers = [(j, m) for j, m in enumerate(child) if class_is(m, 'Dense', 'BottleNeck')]
            found += [('dense', f'features.{i}.{j}', m) for j, m in layers]
        elif isinstance(child, nn.BatchNorm2d):
            final_bn = f'features.{i}'
    if not found or not final_bn:
        raise HingeError('this Hinge model needs the DenseNet layout (dense blocks, transitions, final BatchNorm).')
    return found, final_bn


def conv_and_input(kind: str, path: str, module: nn.Module) -> tuple[str, str, str]:
    """(path of the conv that A follows, path of the input BatchNorm, path of the first conv) of a unit."""
    if kind == 'transition':
        return f'{path}.2', f'{path}.0', f'{path}.2'
    return f'{path}.body.{len(module.body) - 1}', f'{path}.body.0', f'{path}.body.2'


def consumer_cuts(channel_tensors: list[str], weight: str, offset: int) -> list[Cut]:
    """A block of positions at `offset` of a BatchNorm and of the input axis of the layer it feeds; the
    original indexed them as if the block started at position 0 (legacy_offset)."""
    return [Cut(t, 0, offset, legacy_offset=0) for t in channel_tensors] + [Cut(weight, 1, offset, legacy_offset=0)]


class DenseNetSVD(Adapter):
    name, baseline = 'Hinge_DENSENET_SVD', 'densenet'

    def plan(self, net: nn.Module) -> Plan:
        insertions, families = [], []
        for index, (kind, path, module) in enumerate(units(net)[0]):
            insertion = Insertion(conv_and_input(kind, path, module)[0], style='after', group_dim=0)
            insertions.append(insertion)
            a = f'{insertion.matrix_path}.weight'
            families.append(Family(index, 1, 0, [Member(a, 1)], [Cut(f'{insertion.conv_path}.weight', 0), Cut(a, 1)]))
        return Plan(self.name, insertions, {}, families, Policy(label='DenseBlock', legacy=LEGACY))


class DenseNetPrune(Adapter):
    name, baseline = 'Hinge_DenseNet', 'densenet'

    def plan(self, net: nn.Module) -> Plan:
        found, final_bn = units(net)
        insertions, families = [], []
        live: list[tuple[Family, int]] = []   # the families whose channels are in the current concatenation
        width = net.features[0].out_channels
        for index, (kind, path, module) in enumerate(found):
            conv, bn, first_conv = conv_and_input(kind, path, module)
            for fam, offset in live:
                fam.cuts += consumer_cuts([*bn_tensors(bn)], f'{first_conv}.weight', offset)
            insertion = Insertion(conv, style='after', group_dim=0, merge=True)
            insertions.append(insertion)
            a = f'{insertion.matrix_path}.weight'
            fam = Family(index, 1, 0, [Member(a, 0)], [Cut(a, 0)])
            families.append(fam)
            channels = net.get_submodule(conv).out_channels
            if kind == 'transition':
                live, width = [(fam, 0)], channels
            else:
                live.append((fam, width))
                width += channels
        for fam, offset in live:
            fam.cuts += consumer_cuts(bn_tensors(final_bn), 'classifier.weight', offset)
        return Plan(self.name, insertions, {}, families, Policy(label='DenseBlock', legacy=LEGACY))
