"""model_hinge/densenet.py: the original's keys; decomposition (SVD) or growth channels cut through every
later concatenation at their offsets (prune-and-merge), for any depth and growth rate."""


import pytest
import torch

from conftest import SMALL, assert_matches_manifest, hinge_model, zero_groups
from model_hinge.surgery import compress


def test_svd_state_dict_equals_the_originals_manifest(shared):
    assert_matches_manifest('Hinge_DENSENET_SVD__DenseNet40_k12_CIFAR10')


def test_decomposition_keeps_every_concatenation():
    hm, _ = hinge_model(SMALL['Hinge_DENSENET_SVD'])
    widths = [m.num_features for m in hm.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    compress(hm.families, zero_groups(hm, every=2), hm.net)
    assert [m.num_features for m in hm.net.modules() if isinstance(m, torch.nn.BatchNorm2d)] == widths
    assert hm.net.features[1][0].body[2].out_channels == 3                   # 6 basis filters -> 3


@pytest.mark.parametrize('argv', [SMALL['Hinge_DenseNet'], '--model Hinge_DenseNet --depth 22 --k 5 --bottleneck '
                                                           '--reduction 0.5'])
def test_pruning_removes_growth_channels_from_every_later_concatenation(argv):
    """Keep the first c channels of every layer: each concatenation must then have exactly the kept channels
    of the stem and of the layers before it, whatever the depth and growth rate."""
    hm, _ = hinge_model(argv)
    keep = {fam: torch.arange(max(1, fam.size - 1 - fam.block % 2)) for fam in hm.families}
    kept_of = [len(keep[f]) for f in hm.families]
    stem = hm.net.features[0].out_channels
    compress(hm.families, keep, hm.net)
    unit, expected = 0, stem
    for child in list(hm.net.features)[1:]:
        if type(child).__name__ == 'Transition':
            assert child[0].num_features == child[2].in_channels == expected
            expected = kept_of[unit]
            assert child[3].out_channels == expected
            unit += 1
        elif isinstance(child, torch.nn.Sequential):
            for layer in child:
                assert layer.body[0].num_features == layer.body[2].in_channels == expected
                expected += kept_of[unit]
                unit += 1
    assert hm.net.classifier.in_features == expected == hm.net.features[-3].num_features
    assert unit == len(hm.families)


def test_pruned_densenet_merges_into_the_baseline_layout_with_the_same_function():
    hm, _ = hinge_model(SMALL['Hinge_DenseNet'])
    compress(hm.families, zero_groups(hm), hm.net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = hm.net.eval()(x)
    hm.merge()
    with torch.no_grad():
        assert torch.allclose(hm.net(x), before, atol=1e-5)
    assert all(len(layer.body) == 3 for layer in hm.net.features[1]) and len(hm.net.features[2]) == 4
