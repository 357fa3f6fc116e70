"""model_hinge/resnet_bottleneck.py: the original's keys; the block's own 1x1 convs act as A."""

import pytest
import torch

from conftest import assert_matches_manifest, hinge_model, zero_groups
from model_hinge.errors import HingeError
from model_hinge.search import SearchController
from model_hinge.surgery import compress

SMALL_164 = '--model Hinge_RESNET_BOTTLENECK --depth 20 --bottleneck'


@pytest.mark.parametrize('name', ['Hinge_RESNET_BOTTLENECK__ResNet164_no_bias_CIFAR10',
                                  'Hinge_RESNET_BOTTLENECK__ResNet164_no_bias_CIFAR100'])
def test_state_dict_equals_the_originals_manifest(shared, name):
    hm = assert_matches_manifest(name)
    assert hm.plan.insertions == [] and hm.plan.replacements == {}        # the 1x1 convs act as A


def test_conv1_outputs_and_conv3_inputs_shrink_the_inside_of_each_block():
    hm, _ = hinge_model(SMALL_164)
    body = hm.net.features[1][0].body
    width, out = body[0].out_channels, body[6].out_channels
    compress(hm.families, zero_groups(hm, every=2), hm.net)
    half = width // 2
    assert (body[0].out_channels, body[1].num_features, body[3].in_channels) == (half, half, half)
    assert (body[3].out_channels, body[4].num_features, body[6].in_channels) == (half, half, half)
    assert body[6].out_channels == out and body[0].in_channels == hm.net.features[0][0].out_channels


def test_same_ratio_keeps_as_many_conv3_inputs_as_conv1_outputs():
    hm, args = hinge_model(SMALL_164, p1_p2_same_ratio=True)
    with torch.no_grad():
        for fam in hm.families:                                          # conv1 rows sparse, conv3 dense
            if fam.role == 0:
                fam.members[0].param[1::2] = 0
    c = SearchController(hm, args, None)
    kept = c.kept(c.family_norms(), 1e-6)
    for first, second in zip(hm.families[0::2], hm.families[1::2], strict=True):
        assert len(kept[first]) == first.size // 2 == len(kept[second])


def test_basic_block_resnets_are_refused():
    with pytest.raises(HingeError, match='bottleneck blocks'):
        hinge_model('--model Hinge_RESNET_BOTTLENECK --depth 20 --downsample_type A')
