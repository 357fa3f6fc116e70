"""model_hinge/core.py: the converted network computes the baseline, DReLU, merging, matrices per role."""

import pytest
import torch

from conftest import make_args
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import DReLU, HingeModel, factorized_pair
from model_hinge.surgery import compress


def _pair(argv: str, init: str):
    torch.manual_seed(0)
    args = make_args(argv, init_method=init)
    adapter = adapter_for(args.model)
    baseline = build_baseline(args, adapter.baseline).eval()
    for m in baseline.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
    converted = build_baseline(args, adapter.baseline)
    converted.load_state_dict(baseline.state_dict())
    return baseline, HingeModel(converted, adapter, args, (3, 32, 32), init=True)


@pytest.mark.parametrize('model', ['Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A',
                                   'Hinge_ResNet_Basic --depth 14 --downsample_type A',
                                   'Hinge_VGG --vgg_type A'])
@pytest.mark.parametrize('init', ['svd', 'svd2', 'p-identity'])
def test_converted_network_computes_the_baseline(model, init):
    baseline, hm = _pair(f'--template CIFAR10 --model {model}', init)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected, got = baseline(x), hm.net.eval()(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - expected).norm() / expected.norm() < 1e-5


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
    _, hm = _pair('--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A', 'svd2')
    first, second = hm.matrices()
    assert len(first) == len(second) == 9
    assert all(t.shape[2:] == (1, 1) for t in first + second)
    assert (hm.baseline_flops, hm.baseline_params) == (41_116_288, 269_738)
    _, vgg = _pair('--template CIFAR10 --model Hinge_VGG --vgg_type A', 'svd2')
    assert len(vgg.matrices()) == 1 and len(vgg.matrices()[0]) == 7


def test_merging_folds_conv_and_a_without_changing_the_function():
    _, hm = _pair('--template CIFAR10 --model Hinge_ResNet_Basic --depth 14 --downsample_type A', 'svd2')
    kept = {f: torch.arange(f.size)[: f.size // 2 + 1] for f in hm.families}
    compress(hm.families, kept, hm.net)
    net = hm.net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    flops = hm.complexity.flops()
    hm.merge()
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-4)
    assert isinstance(net.features[1][0].body[0], torch.nn.Conv2d) and hm.complexity.flops() < flops
    assert 'features.1.0.body.0.weight' in net.state_dict() and hm.families == []
