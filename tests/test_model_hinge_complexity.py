"""model_hinge/complexity.py: the analytic counter follows the original's rules without running the network."""

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from conftest import make_args, reference_flops
from model import build_baseline
from model_hinge.complexity import ComplexityModel, Polynomial

ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Mish)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


class Tiny(nn.Module):
    """conv(3->4, 3x3) -> BN -> ReLU -> 2x2 max-pool -> linear(4*4*4 -> 5), on 3x8x8 inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def test_hand_counted_network():
    counter = ComplexityModel.trace(Tiny(), (3, 8, 8))
    conv = 3 * 4 * 9 * 64          # no bias term, as the original
    bn = 2 * 4 * 64                # affine BatchNorm
    relu = 4 * 64                  # output elements
    linear = 64 * 5                # pooling is free
    assert counter.flops() == conv + bn + relu + linear
    assert counter.params() == (3 * 4 * 9 + 4) + 2 * 4 + (64 * 5 + 5)


def test_hypothetical_shapes_need_no_forward():
    net = Tiny()
    counter = ComplexityModel.trace(net, (3, 8, 8))
    halved = {id(net.conv.weight): (2, 3, 3, 3), id(net.bn.running_mean): (2,), id(net.bn.weight): (2,)}

    def shape_of(t):
        return halved.get(id(t), tuple(t.shape))

    # Two output channels: conv and BN halve, and so does the ReLU that follows the BN.
    assert counter.flops(shape_of) == 3 * 2 * 9 * 64 + 2 * 2 * 64 + 2 * 64 + 64 * 5
    net.forward = None  # any forward would fail now
    assert counter.flops() == 3 * 4 * 9 * 64 + 2 * 4 * 64 + 4 * 64 + 64 * 5


def test_trace_leaves_modes_and_statistics_alone():
    net = build_baseline(make_args('--template CIFAR10 --model ResNet --depth 8 --downsample_type A'))
    net.train()
    net.features[1][0].body[1].eval()
    before = net.features[0][1].running_mean.clone()
    ComplexityModel.trace(net, (3, 32, 32))
    assert net.training and not net.features[1][0].body[1].training
    assert torch.equal(net.features[0][1].running_mean, before)


def test_agrees_with_an_independent_hook_counter_on_every_family():
    for argv in ('--template CIFAR10 --model ResNet --depth 14 --downsample_type C',
                 '--template CIFAR10 --model VGG --vgg_type 16',
                 '--template DenseNet_BC --model DenseNet --depth 16',
                 '--template CIFAR10 --model ResNeXt --depth 11 --cardinality 8 --bottleneck_width 2',
                 '--template CIFAR100_Wide_ResNet --model Wide_ResNet --depth 10 --widen_factor 2'):
        net = build_baseline(make_args(argv))
        assert ComplexityModel.trace(net, (3, 32, 32)).flops() == reference_flops(net, (3, 32, 32)), argv


class Modern(nn.Module):
    """conv(3->w, 3x3, stride 2) -> GroupNorm -> SiLU -> depthwise 3x3 -> BN -> Hardswish -> adaptive avg-pool to
    2x2 -> (N, 2, 2, w) -> LayerNorm -> linear(w->6) -> GELU -> flatten -> linear(24->10) -> BN1d -> Tanh ->
    linear(10->5), on 3x16x16 inputs."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.GroupNorm(2, width), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False), nn.BatchNorm2d(width), nn.Hardswish(),
            nn.AdaptiveAvgPool2d(2))
        self.norm = nn.LayerNorm(width)
        self.mix = nn.Linear(width, 6)
        self.act = nn.GELU()
        self.head = nn.Sequential(nn.Linear(24, 10), nn.BatchNorm1d(10), nn.Tanh(), nn.Linear(10, 5))

    def forward(self, x):
        cells = self.features(x).permute(0, 2, 3, 1)
        return self.head(self.act(self.mix(self.norm(cells))).flatten(1))


def modern_flops(w: int) -> int:
    """Modern's FLOPs in closed form: 8x8 maps until the pooling, then 2x2 cells."""
    conv, groupnorm, silu = 3 * 9 * w * 64, 2 * w * 64, w * 64
    depthwise, batchnorm, hardswish, pool = 9 * w * 64, 2 * w * 64, w * 64, w * 64
    layernorm, mix, gelu = 2 * w * 4, w * 6 * 4, 6 * 4
    head = 24 * 10 + 2 * 10 + 10 + 10 * 5
    return conv + groupnorm + silu + depthwise + batchnorm + hardswish + pool + layernorm + mix + gelu + head


def test_hand_counted_modern_network():
    assert ComplexityModel.trace(Modern(), (3, 16, 16)).flops() == modern_flops(8)


ELEMENT_COUNTED = [kind() for kind in ACTIVATION_TYPES] + [nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d((2, 3))]


@pytest.mark.parametrize('module', ELEMENT_COUNTED, ids=lambda m: type(m).__name__)
def test_activations_and_adaptive_pools_count_elements_of_the_source_channels(module):
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    counter = ComplexityModel.trace(nn.Sequential(conv, module), (3, 8, 8))
    assert counter.flops() == 3 * 4 * 9 * 64 + 4 * 64

    def two_outputs(t):
        return (2, 3, 3, 3) if t is conv.weight else tuple(t.shape)

    assert counter.flops(two_outputs) == 3 * 2 * 9 * 64 + 2 * 64


def test_norms_without_affine_parameters_count_their_elements_once():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.GroupNorm(2, 4, affine=False),
                        nn.LayerNorm([4, 8, 8], elementwise_affine=False))
    assert ComplexityModel.trace(net, (3, 8, 8)).flops() == 3 * 4 * 9 * 64 + 4 * 64 + 4 * 64


def test_symbolic_width_cut_equals_the_narrower_network():
    counter = ComplexityModel.trace(Modern(8), (3, 16, 16))
    removed = Polynomial({(0,): 1})

    def shape_of(t):  # the first conv loses `removed` outputs: every axis of size 8 is Modern's width, no other
        return tuple(n - removed if n == 8 else n for n in t.shape)

    flops = Polynomial.total(counter.flops_terms(shape_of, [])).compile()
    params = Polynomial.total(counter.params_terms(shape_of, [])).compile()
    for k in (0, 2, 4):
        narrower = ComplexityModel.trace(Modern(8 - k), (3, 16, 16))
        at = torch.tensor([float(k)])
        assert (round(float(flops(at))), round(float(params(at)))) == (narrower.flops(), narrower.params()), k


def elementwise_hook(total: list):
    """A forward hook adding the new rules from element counts: norms 2x (affine) or 1x their output, activations
    their output, adaptive pools their input."""

    def hook(m, inputs, output):
        if isinstance(m, NORM_TYPES):
            total[0] += (2 if m.weight is not None else 1) * output.numel()
        elif isinstance(m, ACTIVATION_TYPES):
            total[0] += output.numel()
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            total[0] += inputs[0].numel()

    return hook


@pytest.mark.parametrize('name', ['mobilenet_v3_small', 'efficientnet_b0', 'convnext_tiny', 'shufflenet_v2_x0_5',
                                  'resnet18'])
def test_torchvision_models_agree_with_torch_flop_counter_and_element_counts(name):
    """torch counts 2 FLOPs per multiply-add and, as ours, no bias; ConvNeXt applies linear layers to (N, H, W, C)."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(num_classes=10).eval()
    counter = ComplexityModel.trace(net, (3, 64, 64))
    elementwise = [0]
    handles = [m.register_forward_hook(elementwise_hook(elementwise)) for m in net.modules()]
    with torch.no_grad(), FlopCounterMode(display=False) as torch_counter:
        net(torch.zeros(1, 3, 64, 64))
    for h in handles:
        h.remove()
    conv_and_linear = counter.flops_of((nn.Conv2d, nn.Linear))
    assert 2 * conv_and_linear == torch_counter.get_total_flops()
    assert counter.flops() - conv_and_linear == elementwise[0]
