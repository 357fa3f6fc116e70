"""model_hinge/resnet_basic.py: the original's keys; the original's compressed checkpoint; block in/out kept."""

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURES, SMALL, assert_matches_manifest, hinge_model, make_args, zero_groups
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import HingeModel
from model_hinge.errors import HingeError
from model_hinge.surgery import compress, load_state
from utils.io import load_torch


def _converted(argv: str, init: str | None = 'svd2') -> HingeModel:
    args = make_args(argv)
    adapter = adapter_for(args.model)
    net = build_baseline(args, adapter.baseline)
    return HingeModel(net, adapter.plan(net), (3, 32, 32), init)


@pytest.mark.parametrize('name', ['Hinge_ResNet_Basic_SVD__ResNet20_dsA_CIFAR10',
                                  'Hinge_ResNet_Basic_SVD__ResNet20_dsA_CIFAR100',
                                  'Hinge_ResNet_Basic_SVD__ResNet56_dsA_CIFAR10'])
def test_state_dict_equals_the_originals_manifest(shared, name):
    assert_matches_manifest(name)


def _block_shapes(net, x):
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((i[0].shape[1], o.shape[1])))
             for m in net.modules() if type(m).__name__ == 'ResBlock']
    with torch.no_grad():
        net.eval()(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize('name', ['Hinge_ResNet_Basic_SVD', 'Hinge_ResNet_Basic'])
def test_compression_changes_the_inside_of_blocks_only(name):
    hm, _ = hinge_model(SMALL[name])
    x = torch.randn(1, 3, 32, 32)
    before = _block_shapes(hm.net, x)
    compress(hm.families, zero_groups(hm, every=2), hm.net)
    assert _block_shapes(hm.net, x) == before
    conv1 = hm.net.features[1][0].body[0]
    if name == 'Hinge_ResNet_Basic':       # rows of A1: conv1 keeps its filters, A1 and BN1 lose channels
        bn1 = hm.net.features[1][0].body[1]
        assert (conv1[0].out_channels, conv1[1].out_channels, bn1.num_features) == (16, 8, 8)
    else:                                  # columns of A1: basis filters go, the block's channels stay
        assert conv1[0].out_channels == 8 and conv1[1].out_channels == 16


def test_original_compressed_checkpoint_loads_and_gives_the_original_logits(shared):
    expected = json.loads((FIXTURES / 'expected.json').read_text())['compressed']
    hm = _converted('--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A', init=None)
    load_state(hm.net, load_torch(FIXTURES / 'resnet20' / 'compressed.pt', 'fixture'), 'fixture', adapt=True)
    hm.retrace()
    assert hm.cost() == (expected['flops_compressed'], expected['params_compressed'])
    assert float(hm.net.running_grad_ratio) > 0
    with torch.no_grad():
        logits = hm.net.eval()(torch.from_numpy(np.load(FIXTURES / 'inputs_256.npy'))).numpy()
    np.testing.assert_allclose(logits, np.load(FIXTURES / 'resnet20' / 'compressed_logits.npy'), rtol=0, atol=1e-5)


def test_bottleneck_resnets_are_refused():
    with pytest.raises(HingeError, match='Hinge_RESNET_BOTTLENECK'):
        _converted('--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 164')
