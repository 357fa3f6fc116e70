"""model_hinge/surgery.py: channel selection, function-preserving compression with offsets, merging, loading."""

import copy

import pytest
import torch
import torch.nn as nn

from conftest import SMALL, hinge_model, make_args, reference_flops, zero_groups
from model import build_baseline
from model_hinge.errors import HingeError
from model_hinge.groups import Cut, GroupFamily, Member
from model_hinge.surgery import (
    compress,
    kept_groups,
    kept_positions,
    load_state,
    merge_pair,
    select_kept,
    sync_module_attributes,
)


def _t(*values):
    return torch.tensor(values)


def test_selection_keeps_norms_above_the_threshold_and_at_least_the_remain_percentage():
    assert select_kept(_t(0.5, 0.001, 0.2, 0.0, 0.003), 0.005, 0.2).tolist() == [0, 2]
    assert select_kept(_t(0.5, 0.001, 0.2, 0.0, 0.003), 0.9, 0.4).tolist() == [0, 2]   # top-2 floor
    assert select_kept(_t(1.0, 1.0, 1.0, 0.1), 2.0, 0.5).tolist() == [0, 1, 2]         # ties with the 2nd largest
    assert select_kept(_t(0.3, 0.0, 0.2, 0.0), 0.0, 0.2).tolist() == [0, 2]            # threshold 0: nonzero only


def test_a_channel_multiple_grows_each_family_to_a_multiple_with_its_largest_other_groups():
    """Survivors rounded up to the next multiple (or the whole family): what the threshold keeps stays, and the
    groups added are the largest of the others."""
    hm, _ = hinge_model(SMALL['Hinge_ResNet_Basic_SVD'])
    generator = torch.Generator().manual_seed(0)
    norms = {f: torch.rand(f.size, generator=generator) for f in hm.families}
    for threshold in (0.3, 0.6, 0.9):
        plain = kept_groups(hm.families, norms, threshold, 0.1, False)
        rounded = kept_groups(hm.families, norms, threshold, 0.1, False, 4)
        for fam in hm.families:
            n, kept = norms[fam], rounded[fam].tolist()
            assert len(kept) == min(fam.size, -(-len(plain[fam]) // 4) * 4)
            assert set(plain[fam].tolist()) <= set(kept) and kept == sorted(kept)
            others = [i for i in range(fam.size) if i not in kept]
            added = [i for i in kept if i not in plain[fam].tolist()]
            assert not others or not added or min(n[added]) >= max(n[others])


def test_selection_edge_cases():
    assert select_kept(_t(0.0, 0.0, 0.0, 0.0, 0.0), 0.1, 0.4).tolist() == [0, 1]       # all zero: first k
    assert select_kept(_t(0.0, 0.7, 0.0, 0.0, 0.0), 0.1, 0.4).tolist() == [0, 1]       # k-th largest is zero
    assert select_kept(_t(0.0, 0.0, 0.3, 0.0, 0.0), 0.1, 0.4).tolist() == [0, 1, 2]
    assert select_kept(_t(0.1, 0.4, 0.3, 0.2), 0.0, 0.2, fixed=2).tolist() == [1, 2]  # --p1_p2_same_ratio
    assert select_kept(_t(0.1, 0.4, 0.4, 0.4), 0.0, 0.2, fixed=2).tolist() == [1, 2, 3]


def test_threshold_compares_with_the_norms_in_float32():
    norm = torch.tensor([0.1], dtype=torch.float32)
    threshold = float(norm) + 1e-12           # above the norm in float64, the same number in float32
    assert threshold > float(norm) and torch.tensor(threshold, dtype=torch.float32) == norm
    norms = torch.tensor([0.9, float(norm), 0.05, 0.3], dtype=torch.float32)
    assert select_kept(norms, threshold, 0.25).tolist() == [0, 1, 3]
    assert select_kept(norms.double(), threshold, 0.25).tolist() == [0, 1, 3]   # double input: same decision


@pytest.mark.parametrize('name', list(SMALL) + ['DenseNet-BC'])
def test_compression_preserves_the_function_and_counts_match_an_independent_counter(name):
    argv = SMALL.get(name, '--model Hinge_DenseNet --depth 22 --k 4 --bottleneck --reduction 0.5')
    hm, args = hinge_model(argv, init='svd')
    kept = zero_groups(hm)
    net = hm.net.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    flops_before = hm.cost()[0]
    compress(hm.families, kept, net)
    hm.retrace()
    with torch.no_grad():
        after = net(x)
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5)
    flops, params = hm.cost()
    assert flops < flops_before
    deployed = copy.deepcopy(hm)
    deployed.merge()
    with torch.no_grad():
        assert torch.allclose(deployed.net(x), before, rtol=1e-5, atol=1e-5)
    assert flops == reference_flops(deployed.net, (3, 32, 32))
    assert params == sum(p.numel() for p in deployed.net.parameters())


def test_blocks_of_positions_are_cut_at_their_offsets():
    """Two families own positions 2..3 and 4..6 of one axis (a concatenation); positions 0..1 belong to none."""
    owner_a, owner_b = nn.Parameter(torch.zeros(2, 1)), nn.Parameter(torch.zeros(3, 1))
    consumer = nn.Linear(7, 2)
    a = GroupFamily(0, 1, 0, [Member(owner_a, 0)], [Cut(consumer, 'weight', 1, offset=2, legacy_offset=0)])
    b = GroupFamily(1, 1, 0, [Member(owner_b, 0)], [Cut(consumer, 'weight', 1, offset=4, legacy_offset=0)])
    kept = {a: torch.tensor([1]), b: torch.tensor([0, 2])}
    assert kept_positions([a, b], kept)[id(consumer.weight)][1][1].tolist() == [0, 1, 3, 4, 6]
    # the original's DenseNet indexed every block from position 0 (reproduced under --legacy_search)
    assert kept_positions([a, b], kept, legacy=True)[id(consumer.weight)][1][1].tolist() == [0, 1, 1, 0, 2]
    before = consumer.weight.detach().clone()
    compress([a, b], kept, consumer)
    assert torch.equal(consumer.weight, before[:, [0, 1, 3, 4, 6]]) and consumer.in_features == 5


def test_legacy_transposed_selection_reproduces_the_originals_layout():
    """The original selected columns of W (out, in) as rows of W^T and viewed the result as (out, kept)."""
    weight = nn.Parameter(torch.arange(12.0).view(3, 4, 1, 1))
    owner = nn.Parameter(torch.zeros(1, 4))
    conv = nn.Conv2d(4, 3, 1, bias=False)
    conv.weight = weight
    fam = GroupFamily(0, 1, 0, [Member(owner, 1)], [Cut(conv, 'weight', 1, legacy_transposed=True)])
    compress([fam], {fam: torch.tensor([0, 2, 3])}, conv, legacy=True)
    transposed = torch.arange(12.0).view(3, 4).t()[[0, 2, 3]]          # (kept, out) rows of W^T
    assert torch.equal(conv.weight.view(3, 3), transposed.reshape(3, 3))


def test_merge_pair_is_the_same_function():
    torch.manual_seed(0)
    pair = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=True), nn.Conv2d(6, 5, 1, bias=True))
    x = torch.randn(2, 4, 9, 9)
    merged = merge_pair(pair)
    assert merged.out_channels == 5 and merged.stride == (2, 2)
    assert torch.allclose(merged(x), pair(x), atol=1e-5)


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
def test_a_merged_pointwise_convolution_keeps_the_layout_of_its_convolution(layout):
    # a 1x1 weight (out, in, 1, 1) can have the strides of either layout and still pass is_contiguous(); the
    # runtime picks the convolution's layout from them, so a merged weight must have its convolution's strides
    pair = nn.Sequential(nn.Conv2d(4, 6, 1, bias=False), nn.Conv2d(6, 5, 1, bias=False)).to(memory_format=layout)
    merged = merge_pair(pair)
    assert merged.weight.stride() == torch.empty(5, 4, 1, 1, memory_format=layout).stride()


def test_grouped_convolution_attributes_follow_the_weights():
    conv = nn.Conv2d(8, 8, 3, groups=4, bias=False)
    conv.weight.data = conv.weight.data[:4]
    sync_module_attributes(conv)
    assert (conv.out_channels, conv.groups, conv.in_channels) == (4, 2, 4)


def _resnet(depth: int) -> nn.Module:
    return build_baseline(make_args(f'--template CIFAR10 --model ResNet --depth {depth} --downsample_type A'))


def test_strict_load_refuses_another_architecture():
    with pytest.raises(HingeError, match='another architecture.*unknown to it'):
        load_state(_resnet(8), _resnet(14).state_dict(), 'ckpt', adapt=False)
    with pytest.raises(HingeError, match='another architecture.*missing'):
        load_state(_resnet(14), _resnet(8).state_dict(), 'ckpt', adapt=False)
    wide = build_baseline(make_args('--template CIFAR100 --model ResNet --depth 8 --downsample_type A'))
    with pytest.raises(HingeError, match='incompatible shapes'):
        load_state(_resnet(8), wide.state_dict(), 'ckpt', adapt=False)
    with pytest.raises(HingeError, match='not a state_dict'):
        load_state(_resnet(8), {'model': {}}, 'ckpt', adapt=False)


def test_adapting_load_shrinks_tensors_and_channel_counts():
    source = _resnet(8)
    conv = source.features[1][0].body[0]
    conv.weight.data = conv.weight.data[:10]
    bn = source.features[1][0].body[1]
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
        getattr(bn, name).data = getattr(bn, name).data[:10]
    source.features[1][0].body[3].weight.data = source.features[1][0].body[3].weight.data[:, :10]
    state = source.state_dict()
    del state['features.0.1.num_batches_tracked']
    target = _resnet(8)
    notes = load_state(target, state, 'ckpt', adapt=True)
    assert target.features[1][0].body[0].out_channels == 10 and target.features[1][0].body[1].num_features == 10
    assert notes and 'num_batches_tracked' in notes[0]
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(target.eval()(x), source.eval()(x))
    with pytest.raises(HingeError, match='incompatible shapes'):
        load_state(source, _resnet(8).state_dict(), 'ckpt', adapt=True)   # larger than the model: refused


def test_merge_pair_refuses_a_grouped_convolution():
    pair = nn.Sequential(nn.Conv2d(4, 8, 3, groups=4), nn.Conv2d(8, 5, 1))
    with pytest.raises(HingeError, match='grouped'):
        merge_pair(pair)


def test_merge_pair_keeps_the_padding_mode():
    torch.manual_seed(0)
    pair = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode='circular'), nn.Conv2d(4, 5, 1))
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(merge_pair(pair)(x), pair(x), atol=1e-5)


def _producer_and_grouped(out_channels: int, groups: int) -> nn.Sequential:
    """A 1x1 conv producing `groups` channels, then a grouped 3x3 conv (depthwise or channel multiplier)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, groups, 1), nn.Conv2d(groups, out_channels, 3, padding=1, groups=groups)).eval()


@torch.no_grad()
def _cut(net: nn.Sequential, inputs: list[int], outputs: list[int]) -> None:
    """Keep the producer's `inputs` channels and the grouped conv's `outputs` by hand, then sync the attributes."""
    producer, grouped = net
    producer.weight.data, producer.bias.data = producer.weight[inputs], producer.bias[inputs]
    grouped.weight.data, grouped.bias.data = grouped.weight[outputs], grouped.bias[outputs]
    sync_module_attributes(net)


@pytest.mark.parametrize('out_channels,groups,inputs,outputs', [
    (8, 4, [0, 1, 2], [0, 1, 2, 3, 4, 5]),          # channel multiplier 2: input 3 goes with its outputs 6, 7
    (8, 4, [1, 3], [2, 3, 6, 7]),
    (6, 6, [0, 2, 5], [0, 2, 5]),                    # depthwise
])
def test_grouped_convolutions_that_lose_whole_groups_compute_the_kept_channels(out_channels, groups, inputs,
                                                                               outputs):
    net = _producer_and_grouped(out_channels, groups)
    x = torch.randn(2, 3, 6, 6)
    expected = net(x)[:, outputs]
    _cut(net, inputs, outputs)
    grouped = net[1]
    assert (grouped.in_channels, grouped.groups, grouped.out_channels) == (len(inputs), len(inputs), len(outputs))
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_a_grouped_convolution_cut_inside_a_group_is_refused():
    net = _producer_and_grouped(8, 4)
    with pytest.raises(HingeError, match='7 output channels.*groups of 2'):
        _cut(net, [0, 1, 2, 3], list(range(7)))


def test_compress_refuses_to_split_a_group_of_a_grouped_convolution():
    net = _producer_and_grouped(8, 4)
    grouped = net[1]
    weight = grouped.weight.detach().clone()
    split = GroupFamily(0, 1, 0, [Member(grouped.weight, 0)], [Cut(grouped, 'weight', 0)])
    with pytest.raises(HingeError, match='splits the groups'):
        compress([split], {split: torch.tensor([0, 1, 2, 3, 4, 6])}, net)
    assert torch.equal(grouped.weight, weight) and grouped.groups == 4
    whole = GroupFamily(0, 1, 0, [Member(grouped.weight, 0, 2)], [Cut(grouped, 'weight', 0)])
    compress([whole], {whole: torch.tensor([0, 2])}, net)
    assert torch.equal(grouped.weight, weight[[0, 1, 4, 5]]) and (grouped.groups, grouped.in_channels) == (2, 2)
