"""model_hinge/core.py: conversion by a plan computes the baseline; insertion styles, merging, matrices per role."""

import copy

import pytest
import torch

from conftest import SMALL, make_args, random_statistics
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import DReLU, HingeModel, factorized_pair


def _pair(argv: str, init: str):
    """(baseline in eval mode, the same weights converted by the model's plan)."""
    torch.manual_seed(0)
    args = make_args(f'--template CIFAR10 {argv}', init_method=init)
    adapter = adapter_for(args.model)
    baseline = build_baseline(args, adapter.baseline).eval()
    random_statistics(baseline)
    converted = build_baseline(args, adapter.baseline)
    converted.load_state_dict(baseline.state_dict())
    return baseline, HingeModel(converted, adapter.plan(converted), (3, 32, 32), init)


@pytest.mark.parametrize('name', list(SMALL))
@pytest.mark.parametrize('init', ['svd', 'svd2', 'p-identity'])
def test_converted_network_computes_the_baseline(name, init):
    baseline, hm = _pair(SMALL[name], init)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected, got = baseline(x), hm.net.eval()(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - expected).norm() / expected.norm() < 1e-5


def test_insertion_styles_give_the_originals_module_nesting():
    _, dense = _pair(SMALL['Hinge_DENSENET_SVD'], 'svd2')
    transition = dense.net.features[2]
    assert [type(m).__name__ for m in transition] == ['BatchNorm2d', 'ReLU', 'Conv2d', 'Conv2d', 'AvgPool2d']
    assert transition[3].kernel_size == (1, 1)                                 # A after, the pool moved up
    _, wrn = _pair(SMALL['Hinge_WIDE_RESNET'], 'p-identity')
    conv1 = wrn.net.layer1[0].conv1
    assert isinstance(conv1, torch.nn.Sequential) and conv1[0].bias is None and conv1[1].bias is not None


def test_drelu_is_two_slopes():
    act = DReLU()
    x = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.equal(act(x), torch.tensor([0.0, 0.0, 3.0]))
    act.slope_p.data.fill_(0.5)
    act.slope_n.data.fill_(0.25)
    assert torch.equal(act(x), torch.tensor([0.5, 0.0, 1.5]))


def test_factorized_pair_moves_the_bias_into_a():
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=True)
    pair = factorized_pair(conv, 'svd2')
    assert pair[0].bias is None and torch.equal(pair[1].bias, conv.bias)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(pair(x), conv(x), atol=1e-5)


def test_matrices_per_role_and_baseline_complexity():
    _, hm = _pair('--model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A', 'svd2')
    first, second = hm.matrices()
    assert len(first) == len(second) == 9
    assert all(t.shape[2:] == (1, 1) for t in first + second)
    assert (hm.baseline_flops, hm.baseline_params) == (41_116_288, 269_738)
    _, vgg = _pair(SMALL['Hinge_VGG'], 'svd2')
    assert len(vgg.matrices()) == 1 and len(vgg.matrices()[0]) == len(vgg.plan.insertions)
    _, resnext = _pair(SMALL['Hinge_RESNEXT'], 'svd2')
    assert len(resnext.matrices()[0]) == 2 * len(resnext.families)            # conv1 and conv3 of every block


@pytest.mark.parametrize('name', ['Hinge_ResNet_Basic', 'Hinge_DenseNet', 'Hinge_WIDE_RESNET'])
def test_merging_folds_conv_and_a_without_changing_the_function(name):
    _, hm = _pair(SMALL[name], 'svd2')
    net = hm.net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    unmerged = hm.cost(merged=False)
    merged_view = hm.cost()
    assert merged_view[0] < unmerged[0]
    hm.merge()
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-4)
    assert hm.cost() == hm.cost(merged=False) == merged_view and hm.families == []


def test_merged_densenet_has_the_baseline_layout():
    baseline, hm = _pair(SMALL['Hinge_DenseNet'], 'svd2')
    hm.merge()
    assert [[k, v.shape] for k, v in hm.net.state_dict().items()] == \
        [[k, v.shape] for k, v in baseline.state_dict().items()]


def test_deep_copies_keep_their_own_complexity_model():
    _, hm = _pair(SMALL['Hinge_WIDE_RESNET'], 'svd2')
    twin = copy.deepcopy(hm)
    assert twin.cost() == hm.cost()
