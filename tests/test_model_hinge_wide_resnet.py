"""model_hinge/wide_resnet.py: the original's keys; conv1 pruned and merged, conv2 decomposed."""

import copy

import torch

from conftest import SMALL, assert_matches_manifest, hinge_model, zero_groups
from model_hinge.surgery import compress


def test_state_dict_equals_the_originals_manifest(shared):
    assert_matches_manifest('Hinge_WIDE_RESNET__WRN16_10_CIFAR100')


def test_conv1_is_pruned_and_merged_and_conv2_is_decomposed():
    hm, _ = hinge_model(SMALL['Hinge_WIDE_RESNET'], init='p-identity')
    block = hm.net.layer2[0]
    planes = block.conv2[1].out_channels
    compress(hm.families, zero_groups(hm, every=2), hm.net)
    half = planes // 2
    assert block.conv1[0].out_channels == planes                     # unmerged: conv1 itself keeps its filters
    assert (block.conv1[1].out_channels, block.bn2.num_features, block.conv2[0].in_channels) == (half, half, half)
    assert (block.conv2[0].out_channels, block.conv2[1].in_channels, block.conv2[1].out_channels) == \
        (half, half, planes)
    merged = copy.deepcopy(hm)
    merged.merge()
    conv1 = merged.net.layer2[0].conv1
    assert isinstance(conv1, torch.nn.Conv2d) and conv1.out_channels == half and conv1.bias is not None
    assert isinstance(merged.net.layer2[0].conv2, torch.nn.Sequential)
    assert 'layer2.0.conv1.weight' in merged.net.state_dict() and 'layer2.0.conv2.1.bias' in merged.net.state_dict()
