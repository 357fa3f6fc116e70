"""model_hinge/surgery.py: channel selection, function-preserving compression, merging, checkpoint loading."""

import pytest
import torch
import torch.nn as nn

from conftest import make_args, reference_flops
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import HingeModel
from model_hinge.search import SearchController
from model_hinge.surgery import compress, load_state, merge_pair, select_kept, sync_module_attributes
from utils.errors import UsageError


def _t(*values):
    return torch.tensor(values)


def test_selection_keeps_norms_above_the_threshold_and_at_least_the_remain_percentage():
    assert select_kept(_t(0.5, 0.001, 0.2, 0.0, 0.003), 0.005, 0.2).tolist() == [0, 2]
    assert select_kept(_t(0.5, 0.001, 0.2, 0.0, 0.003), 0.9, 0.4).tolist() == [0, 2]   # top-2 floor
    assert select_kept(_t(1.0, 1.0, 1.0, 0.1), 2.0, 0.5).tolist() == [0, 1, 2]         # ties with the 2nd largest
    assert select_kept(_t(0.3, 0.0, 0.2, 0.0), 0.0, 0.2).tolist() == [0, 2]            # threshold 0: nonzero only


def test_selection_edge_cases():
    assert select_kept(_t(0.0, 0.0, 0.0, 0.0, 0.0), 0.1, 0.4).tolist() == [0, 1]       # all zero: first k
    assert select_kept(_t(0.0, 0.7, 0.0, 0.0, 0.0), 0.1, 0.4).tolist() == [0, 1]       # k-th largest is zero
    assert select_kept(_t(0.0, 0.0, 0.3, 0.0, 0.0), 0.1, 0.4).tolist() == [0, 1, 2]
    assert select_kept(_t(0.1, 0.4, 0.3, 0.2), 0.0, 0.2, fixed=2).tolist() == [1, 2]  # --p1_p2_same_ratio
    assert select_kept(_t(0.1, 0.4, 0.4, 0.4), 0.0, 0.2, fixed=2).tolist() == [1, 2, 3]


CASES = [
    ('--template Demo --model Hinge_ResNet_Basic_SVD --depth 14 --downsample_type A', 'svd2'),
    ('--template Demo --model Hinge_ResNet_Basic --depth 14 --downsample_type A', 'svd'),
    ('--template Demo --model Hinge_VGG --vgg_type A', 'svd2'),
]


def _hinge(argv: str, init: str) -> HingeModel:
    torch.manual_seed(0)
    args = make_args(argv, init_method=init)
    adapter = adapter_for(args.model)
    net = build_baseline(args, adapter.baseline)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return HingeModel(net, adapter, args, (3, 32, 32), init=True)


def _zero_groups(hm: HingeModel, every: int = 3) -> dict:
    """Zero every third group of each prunable family (and, where a BN follows, make it output zero there);
    return the surviving groups."""
    kept = {}
    with torch.no_grad():
        for fam in hm.families:
            dropped = torch.arange(fam.size)[::every] if fam.cuts else torch.tensor([], dtype=torch.long)
            for m in fam.members:
                m.param.index_fill_(m.dim, dropped, 0.0)
            for cut in fam.cuts:
                if cut.name in ('bias', 'running_mean'):   # A's bias and the BN shift: BN(0) = 0 there
                    cut.tensor.index_fill_(cut.axis, dropped, 0.0)
            keep = torch.ones(fam.size, dtype=torch.bool)
            keep[dropped] = False
            kept[fam] = keep.nonzero().view(-1)
    return kept


@pytest.mark.parametrize('argv,init', CASES)
def test_compression_preserves_the_function(argv, init):
    hm = _hinge(argv, init)
    kept = _zero_groups(hm)
    net = hm.net.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    flops_before = hm.complexity.flops()
    compress(hm.families, kept, net)
    with torch.no_grad():
        after = net(x)
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5)
    assert hm.complexity.flops() < flops_before


@pytest.mark.parametrize('argv,init', CASES)
def test_flops_from_channel_counts_equal_flops_of_the_compressed_network(argv, init):
    hm = _hinge(argv, init)
    _zero_groups(hm)
    controller = SearchController(hm, make_args(argv, p1_p2_same_ratio=False), None)
    norms = controller.family_norms()
    flops, params, kept = controller.cost(norms, 1e-6)
    compress(hm.families, kept, hm.net)
    hm.retrace()
    assert flops == hm.complexity.flops() == reference_flops(hm.net, (3, 32, 32))
    assert params == sum(p.numel() for p in hm.net.parameters())


def test_merge_pair_is_the_same_function():
    torch.manual_seed(0)
    pair = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=True), nn.Conv2d(6, 5, 1, bias=True))
    x = torch.randn(2, 4, 9, 9)
    merged = merge_pair(pair)
    assert merged.out_channels == 5 and merged.stride == (2, 2)
    assert torch.allclose(merged(x), pair(x), atol=1e-5)


def test_grouped_convolution_attributes_follow_the_weights():
    conv = nn.Conv2d(8, 8, 3, groups=4, bias=False)
    conv.weight.data = conv.weight.data[:4]
    sync_module_attributes(conv)
    assert (conv.out_channels, conv.groups, conv.in_channels) == (4, 2, 4)


def _resnet(depth: int) -> nn.Module:
    return build_baseline(make_args(f'--template CIFAR10 --model ResNet --depth {depth} --downsample_type A'))


def test_strict_load_refuses_another_architecture():
    with pytest.raises(UsageError, match='another architecture.*unknown to it'):
        load_state(_resnet(8), _resnet(14).state_dict(), 'ckpt', adapt=False)
    with pytest.raises(UsageError, match='another architecture.*missing'):
        load_state(_resnet(14), _resnet(8).state_dict(), 'ckpt', adapt=False)
    wide = build_baseline(make_args('--template CIFAR100 --model ResNet --depth 8 --downsample_type A'))
    with pytest.raises(UsageError, match='incompatible shapes'):
        load_state(_resnet(8), wide.state_dict(), 'ckpt', adapt=False)
    with pytest.raises(UsageError, match='not a state_dict'):
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
    with pytest.raises(UsageError, match='incompatible shapes'):
        load_state(source, _resnet(8).state_dict(), 'ckpt', adapt=True)   # larger than the model: refused
