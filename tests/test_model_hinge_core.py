"""model_hinge/core.py: conversion by a plan computes the baseline; insertion styles, merging, matrices per role."""

import copy

import pytest
import torch

from conftest import SMALL, hinge_model, make_args, random_statistics, reference_flops, zero_groups
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import ChannelIndexed, DReLU, HingeModel, factorized_pair, set_module
from model_hinge.errors import HingeError
from model_hinge.plan import Cut, Insertion
from model_hinge.surgery import compress


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


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
def test_drelu_is_scriptable_and_exportable():
    act = DReLU()
    act.slope_p.data.fill_(0.5)
    act.slope_n.data.fill_(-0.25)
    x = torch.randn(4, 5)
    assert torch.equal(torch.jit.script(act)(x), act(x))
    assert torch.equal(torch.export.export(act, (x,)).module()(x), act(x))


class PadTwo(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, [0, 0, 0, 0, 2, 2])


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
def test_a_module_cut_by_index_sees_its_full_width_and_keeps_the_layout(layout):
    """Inputs kept at 0 and 2 of 4 and outputs at 1, 2, 5, 6 of the padded 8: the module sees [c0, 0, c2, 0], pads
    it to [0, 0, c0, 0, c2, 0, 0, 0], and the kept outputs are [0, c0, 0, 0]."""
    wrapped = ChannelIndexed(PadTwo(), 4, 8)
    x = torch.randn(2, 4, 3, 3).contiguous(memory_format=layout)
    assert torch.equal(wrapped(x), PadTwo()(x))
    wrapped.inputs, wrapped.outputs = torch.tensor([0, 2]), torch.tensor([1, 2, 5, 6])
    small = torch.randn(2, 2, 3, 3).contiguous(memory_format=layout)
    zero = torch.zeros(2, 3, 3)
    expected = torch.stack([zero, small[:, 0], zero, zero], 1)
    out = wrapped(small)
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=layout)


def test_factorized_pair_moves_the_bias_into_a():
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=True)
    pair = factorized_pair(conv, 'svd2')
    assert pair[0].bias is None and torch.equal(pair[1].bias, conv.bias)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(pair(x), conv(x), atol=1e-5)


def _ids(tensors) -> list[int]:
    return [id(t) for t in tensors]


def _one_by_one(net: torch.nn.Module) -> list[torch.Tensor]:
    """The weights of the network's 1x1 convolutions, in forward order."""
    return [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]


def test_matrices_per_role_are_the_networks_own_a_tensors_and_baseline_complexity():
    hm, _ = hinge_model('--model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A', init='p-identity')
    first, second = hm.matrices()
    # ResNet-20 (downsample A) has no 1x1 conv of its own: the As after conv1 and conv2 of its 3 x 3 basic
    # blocks (widths 16, 32, 64) alternate in forward order, and A1 and A2 are separate roles.
    ones = _one_by_one(hm.net)
    assert _ids(first) == _ids(ones[0::2]) and _ids(second) == _ids(ones[1::2])
    assert [t.shape[0] for t in first] == [16] * 3 + [32] * 3 + [64] * 3
    assert (hm.baseline_flops, hm.baseline_params) == (41_116_288, 269_738)   # the original's count (spec)
    vgg, _ = hinge_model(SMALL['Hinge_VGG'], init='p-identity')
    (matrices,) = vgg.matrices()            # one role: columns and rows of the same A, each A listed once
    convs = [m for m in vgg.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert _ids(matrices) == _ids(_one_by_one(vgg.net)) and len(matrices) == len(convs) - 1 == 12
    resnext, _ = hinge_model(SMALL['Hinge_RESNEXT'], init='p-identity')
    (matrices,) = resnext.matrices()
    # depth 11: one block per stage; its conv1 and conv3 act as A, the stem and shortcut 1x1 convs do not
    blocks = [f'layer{stage}.0.conv{i}' for stage in (1, 2, 3) for i in (1, 3)]
    assert _ids(matrices) == _ids(resnext.net.get_submodule(path).weight for path in blocks)


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
    """Compressing one deep copy (no retrace: counts follow the tensor shapes) changes its count to that of an
    independent counter and leaves the other's alone."""
    hm, _ = hinge_model(SMALL['Hinge_WIDE_RESNET'], init='p-identity')
    twin = copy.deepcopy(hm)
    before, original = hm.cost(), reference_flops(hm.net, (3, 32, 32))
    compress(twin.families, zero_groups(twin), twin.net)
    compressed = reference_flops(twin.net, (3, 32, 32))
    assert twin.cost(merged=False)[0] == compressed < original == hm.cost(merged=False)[0]
    assert hm.cost() == before and twin.cost()[0] < before[0]


def _cheaper_folded(conv: torch.nn.Conv2d, matrix: torch.nn.Conv2d) -> bool:
    """Independently of the counter: per output pixel, conv (r x c_in x k x k) then A (c_out x r) costs
    r * (c_in * k * k + c_out) multiply-accumulates, their fold c_out * c_in * k * k."""
    r, c_in, kh, kw = conv.weight.shape
    c_out = matrix.weight.shape[0]
    return r * (c_in * kh * kw + c_out) > c_out * c_in * kh * kw


@pytest.mark.parametrize('name', ['Hinge_ResNet_Basic_SVD', 'Hinge_WIDE_RESNET', 'Hinge_VGG', 'Hinge_DENSENET_SVD'])
def test_merge_where_cheaper_folds_exactly_the_pairs_that_cost_less_folded(name):
    hm, _ = hinge_model(SMALL[name], init='p-identity')
    kept = zero_groups(hm)
    for i, fam in enumerate(hm.families):
        if i % 3 == 0:                       # these keep every group: their pairs are cheaper folded
            kept[fam] = torch.arange(fam.size)
    compress(hm.families, kept, hm.net)
    hm.retrace()
    net = hm.net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = net(x)
    plan_only, cheapest = copy.deepcopy(hm), copy.deepcopy(hm)
    plan_only.merge()
    should = [i.conv for i in plan_only.plan.insertions if not i.merge and _cheaper_folded(
        plan_only.net.get_submodule(i.conv_path), plan_only.net.get_submodule(i.matrix_path))]
    folded = [i.conv for i in cheapest.merge_where_cheaper()]
    assert folded == should and 0 < len(folded) < len([i for i in hm.plan.insertions if not i.merge])
    with torch.no_grad():
        assert torch.allclose(cheapest.net.eval()(x), expected, atol=1e-5)
    flops = reference_flops(cheapest.net, (3, 32, 32))
    assert flops == cheapest.cost()[0] < reference_flops(plan_only.net, (3, 32, 32)) == plan_only.cost()[0]
    assert cheapest.cheaper_folds() == [] and len(cheapest.folded) == len(folded) + len(hm.plan.merges)



CONVS = {'depthwise': dict(in_channels=6, out_channels=6, groups=6),
         'multiplier': dict(in_channels=4, out_channels=8, groups=4),
         'circular': dict(in_channels=3, out_channels=5, padding_mode='circular')}


@pytest.mark.parametrize('kind', list(CONVS))
@pytest.mark.parametrize('init', ['svd', 'svd2', 'p-identity', None])
def test_factorized_pair_keeps_groups_and_padding_mode(kind, init):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(kernel_size=3, padding=1, bias=True, **CONVS[kind])
    pair = factorized_pair(conv, init)
    assert (pair[0].groups, pair[0].padding_mode) == (conv.groups, conv.padding_mode)
    x = torch.randn(2, conv.in_channels, 7, 7)
    with torch.no_grad():
        assert torch.allclose(pair(x), conv(x), atol=1e-5)


def test_set_module_refuses_a_path_the_network_lacks():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Sequential(torch.nn.ReLU()))
    for path in ('2', '1.1', '3.0'):
        with pytest.raises(HingeError, match=rf'\b{path}\b'):
            set_module(net, path, torch.nn.Identity())
    assert [type(m).__name__ for m in net.modules()] == ['Sequential', 'Conv2d', 'Sequential', 'ReLU']


def _missing_insertion(plan):
    plan.insertions.append(Insertion('features.9.0.body.0'))
    return 'features.9.0.body.0'


def _insertion_at_a_batchnorm(plan):
    plan.insertions.append(Insertion('features.1.1.body.1'))
    return 'features.1.1.body.1'


def _missing_replacement(plan):
    plan.replacements['features.1.0.body.7'] = 'two_slope_relu'
    return 'features.1.0.body.7'


def _unknown_module_kind(plan):
    plan.replacements['features.2.0.body.2'] = 'gelu'
    return 'gelu'


def _indexing_a_module_with_parameters(plan):
    plan.indexed['features.1.0.body.1'] = [4, 4]
    return 'features.1.0.body.1'


def _indexing_a_missing_module(plan):
    plan.indexed['features.2.0.shortcut'] = [4, 8]
    return 'features.2.0.shortcut'


def _missing_cut_tensor(plan):
    plan.families[-1].cuts.append(Cut('features.3.1.body.9.weight', 0))
    return 'features.3.1.body.9.weight'


@pytest.mark.parametrize('spoil', [_missing_insertion, _insertion_at_a_batchnorm, _missing_replacement,
                                   _unknown_module_kind, _indexing_a_module_with_parameters,
                                   _indexing_a_missing_module, _missing_cut_tensor])
def test_a_plan_that_does_not_fit_is_refused_and_leaves_the_network_as_it_was(spoil):
    torch.manual_seed(0)
    args = make_args(f'--template CIFAR10 {SMALL["Hinge_ResNet_Basic_SVD"]}')
    adapter = adapter_for(args.model)
    net = build_baseline(args, adapter.baseline).eval()
    plan = adapter.plan(net)
    path = spoil(plan)
    before = copy.deepcopy(net.state_dict())
    layout = [(name, type(m)) for name, m in net.named_modules()]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = net(x)
    with pytest.raises(HingeError, match=path.replace('.', r'\.')):
        HingeModel(net, plan, (3, 32, 32), 'svd2')
    assert [(name, type(m)) for name, m in net.named_modules()] == layout
    state = net.state_dict()
    assert list(state) == list(before) and all(torch.equal(state[k], v) for k, v in before.items())
    with torch.no_grad():
        assert torch.equal(net(x), expected)


def test_a_plan_that_merges_a_into_a_grouped_convolution_is_refused():
    args = make_args(f'--template CIFAR10 {SMALL["Hinge_RESNEXT"]}')
    adapter = adapter_for(args.model)
    net = build_baseline(args, adapter.baseline)
    plan = adapter.plan(net)
    plan.insertions.append(Insertion('layer1.0.conv2', merge=True))
    keys = list(net.state_dict())
    with pytest.raises(HingeError, match=r'layer1\.0\.conv2.*grouped'):
        HingeModel(net, plan, (3, 32, 32), 'svd2')
    assert list(net.state_dict()) == keys
