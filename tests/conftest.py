"""Shared test helpers: paths to ../shared, flag parsing, and an independent reference FLOPs counter."""

import os
from math import prod
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import option

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('HINGE_SHARED', ROOT.parent / 'shared'))
SPEC = SHARED / 'spec'
FIXTURES = SPEC / 'fixtures'
CIFAR_SUBSET = SHARED / 'data' / 'cifar10-subset'


@pytest.fixture(scope='session')
def shared() -> Path:
    """The shared spec and data beside the checkout (HINGE_SHARED overrides); their absence is an error."""
    if not (SPEC / 'flags.json').is_file() or not (CIFAR_SUBSET / 'cifar-10-batches-py').is_dir():
        pytest.fail(f'the shared spec/data are not at {SHARED}; clone next to ../shared or set HINGE_SHARED')
    return SHARED


def make_args(argv: str, **overrides):
    """Parse a command line as main_hinge.py does, then override attributes."""
    args = option.parse_args(argv.split())
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def reference_flops(net: nn.Module, input_dim: tuple) -> int:
    """The original counter's rules, by forward hooks: conv k*k*cin/groups*cout*Hout*Wout, linear cin*cout,
    BatchNorm 2*C*H*W, ReLU output elements; nothing else."""
    total = [0]

    def hook(m, inputs, output):
        if isinstance(m, nn.Conv2d):
            total[0] += prod(m.kernel_size) * m.in_channels // m.groups * m.out_channels * prod(output.shape[2:])
        elif isinstance(m, nn.Linear):
            total[0] += m.in_features * m.out_features
        elif isinstance(m, nn.BatchNorm2d):
            total[0] += 2 * m.num_features * prod(inputs[0].shape[2:])
        elif isinstance(m, nn.ReLU):
            total[0] += output.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.randn(1, *input_dim))
    net.train(training)
    for h in handles:
        h.remove()
    return total[0]
