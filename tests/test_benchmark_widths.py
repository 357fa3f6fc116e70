"""scripts/benchmark_widths.py: its reference is Torch-Pruning's network, and the allocations it times are the
widths they name at the reference's FLOPs."""

import sys

import pytest
import torch
import torch.nn as nn

import model_hinge
from conftest import ROOT

sys.path.insert(0, str(ROOT / 'scripts'))
import benchmark_widths as widths  # noqa: E402

# Torch-Pruning's magnitude-pruned ResNet-20 in docs/peers.md (tp_magnitude, every seed): its convolutions' output
# channels in module order and its FLOPs, both recorded from the network Torch-Pruning returned
TP_RESNET20_WIDTHS = [16, 7, 16, 7, 16, 7, 16, 15, 32, 15, 32, 15, 32, 31, 64, 31, 64, 31, 64]
TP_RESNET20_FLOPS = 19_428_160


@pytest.fixture(scope='module')
def resnet20():
    return widths.converted(20)


def test_the_reference_is_torch_prunings_network(resnet20):
    net = widths.with_inner_widths(resnet20, widths.REFERENCE)
    assert [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)] == TP_RESNET20_WIDTHS
    assert model_hinge.count(net, torch.zeros(1, 3, 32, 32))[0] == TP_RESNET20_FLOPS


def test_an_allocation_keeps_the_streams_whole_and_each_stage_at_its_inner_width(resnet20):
    net = widths.with_inner_widths(resnet20, (4, 24, 40))
    convs = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16] + [4, 16] * 3 + [24, 32] * 3 + [40, 64] * 3
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 10)


def test_the_section_refuses_a_device_other_than_the_cpu(capsys):
    with pytest.raises(SystemExit) as stop:
        widths.widths_section(None, torch.device('cuda'), '')
    assert stop.value.code == 2 and 'pass --device cpu' in capsys.readouterr().err
