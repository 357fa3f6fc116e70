"""model_hinge/complexity.py: the analytic counter follows the original's rules without running the network."""

import torch
import torch.nn as nn

from conftest import make_args, reference_flops
from model import build_baseline
from model_hinge.complexity import ComplexityModel


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
