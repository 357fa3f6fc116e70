"""model_hinge/resnet_basic.py: the converted ResNet has the original's keys; groups and compressed shapes."""

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURES, SPEC, make_args
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import HingeModel
from model_hinge.surgery import load_state
from utils.errors import UsageError
from utils.io import load_torch


def _hinge(argv: str, init: bool = True) -> HingeModel:
    args = make_args(argv)
    adapter = adapter_for(args.model)
    return HingeModel(build_baseline(args, adapter.baseline), adapter, args, (3, 32, 32), init=init)


@pytest.mark.parametrize('name', ['Hinge_ResNet_Basic_SVD__ResNet20_dsA_CIFAR10',
                                  'Hinge_ResNet_Basic_SVD__ResNet20_dsA_CIFAR100',
                                  'Hinge_ResNet_Basic_SVD__ResNet56_dsA_CIFAR10'])
def test_state_dict_equals_the_originals_manifest(shared, name):
    manifest = json.loads((SPEC / 'state_dicts' / f'{name}.json').read_text())
    hm = _hinge(' '.join(manifest['argv']))
    assert [[k, list(v.shape)] for k, v in hm.net.state_dict().items()] == manifest['state_dict']
    assert (hm.baseline_flops, hm.baseline_params) == (manifest['baseline_flops'], manifest['baseline_params'])


def test_groups_of_the_two_variants():
    svd = _hinge('--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A')
    first, second = svd.families[:2]
    block = svd.net.features[1][0].body
    assert (first.members[0].param is block[0][1].weight, first.members[0].dim, first.role) == (True, 1, 0)
    assert (second.members[0].param is block[3][1].weight, second.members[0].dim, second.same_as) == (True, 1, first)
    prune = _hinge('--template CIFAR10 --model Hinge_ResNet_Basic --depth 8 --downsample_type A')
    first = prune.families[0]
    block = prune.net.features[1][0].body
    assert first.members[0].dim == 0
    cuts = {(c.module, c.name, c.axis) for c in first.cuts}
    assert cuts >= {(block[1], 'running_var', 0), (block[3][0], 'weight', 1)}


def test_original_compressed_checkpoint_loads_and_gives_the_original_logits(shared):
    expected = json.loads((FIXTURES / 'expected.json').read_text())['compressed']
    hm = _hinge('--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A', init=False)
    load_state(hm.net, load_torch(FIXTURES / 'resnet20' / 'compressed.pt', 'fixture'), 'fixture', adapt=True)
    hm.retrace()
    assert hm.flops_params() == (expected['flops_compressed'], expected['params_compressed'])
    assert float(hm.net.running_grad_ratio) > 0
    with torch.no_grad():
        logits = hm.net.eval()(torch.from_numpy(np.load(FIXTURES / 'inputs_256.npy'))).numpy()
    np.testing.assert_allclose(logits, np.load(FIXTURES / 'resnet20' / 'compressed_logits.npy'), rtol=0, atol=1e-5)


def test_bottleneck_resnets_are_refused():
    with pytest.raises(UsageError, match='Hinge_RESNET_BOTTLENECK'):
        _hinge('--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 164')
