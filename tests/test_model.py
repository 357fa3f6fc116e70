"""model/: the baselines match the original's state dicts and complexity exactly."""

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURES, SPEC, make_args, reference_flops
from model import build_baseline
from model_hinge.complexity import ComplexityModel
from model_hinge.surgery import load_state
from utils.errors import UsageError
from utils.io import load_torch, save_torch

# (flags, FLOPs, params) from the table: the original counter on a 3x32x32 input.
TABLE = [
    ('--template linear3_CIFAR10_VGG --model VGG --vgg_type 16', 314_555_392, 15_253_578),
    ('--template DenseNet --model DenseNet --depth 40', 290_105_808, 1_059_298),
    ('--template CIFAR10 --model ResNet --depth 20 --downsample_type A', 41_116_288, 269_738),
    ('--template CIFAR100 --model ResNet --depth 20 --downsample_type A', 41_122_048, 275_588),
    ('--template ResNet --model ResNet --depth 56 --downsample_type A', 127_083_136, 853_034),
    ('--template CIFAR10 --model ResNet --depth 164 --no_bias', 257_325_568, 1_704_154),
    ('--template CIFAR100 --model ResNet --depth 164 --no_bias', 257_348_608, 1_727_284),
    ('--template CIFAR10 --model ResNeXt --depth 20 --cardinality 32 --bottleneck_width 1', 36_817_408, 211_850),
    ('--template CIFAR10 --model ResNeXt --depth 164 --cardinality 32 --bottleneck_width 1', 259_639_808, 1_713_546),
    ('--template CIFAR100 --model ResNeXt --depth 164 --cardinality 32 --bottleneck_width 1', 259_662_848, 1_736_676),
    ('--template CIFAR100_Wide_ResNet --model Wide_ResNet --depth 16 --widen_factor 10', 3_123_083_776, 17_179_940),
]


@pytest.mark.parametrize('argv,flops,params', TABLE)
def test_flops_and_params_equal_the_original_counter(argv, flops, params):
    net = build_baseline(make_args(argv))
    counter = ComplexityModel.trace(net, (3, 32, 32))
    assert (counter.flops(), counter.params()) == (flops, params)


def _baseline_manifests():
    index = json.loads((SPEC / 'state_dicts' / 'index.json').read_text())
    return [name for name, entry in index.items() if entry['kind'] == 'baseline' and entry['flops']]


@pytest.mark.parametrize('name', _baseline_manifests())
def test_state_dict_keys_and_shapes_equal_the_manifest(shared, name):
    manifest = json.loads((SPEC / 'state_dicts' / f'{name}.json').read_text())
    net = build_baseline(make_args(' '.join(manifest['argv'])))
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == manifest['state_dict']
    counter = ComplexityModel.trace(net, tuple(manifest['input_dim']))
    assert (counter.flops(), counter.params()) == (manifest['flops'], manifest['params'])


@pytest.mark.parametrize('argv,classes', [
    ('--template CIFAR10 --model ResNet --depth 8 --downsample_type A', 10),
    ('--template CIFAR100 --model ResNet --depth 29 --bottleneck', 100),
    ('--template CIFAR10 --model VGG --vgg_type A', 10),
    ('--template DenseNet_BC --model DenseNet --depth 16', 10),
    ('--template CIFAR10 --model ResNeXt --depth 11 --cardinality 4 --bottleneck_width 2', 10),
    ('--template CIFAR100_Wide_ResNet --model Wide_ResNet --depth 10 --widen_factor 1', 100),
])
def test_forward_and_strict_checkpoint_round_trip(tmp_path, argv, classes):
    torch.manual_seed(0)
    net = build_baseline(make_args(argv)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, classes)
    save_torch(net.state_dict(), tmp_path / 'net.pt')
    torch.manual_seed(1)
    other = build_baseline(make_args(argv)).eval()
    other.load_state_dict(load_torch(tmp_path / 'net.pt', 'test'), strict=True)
    with torch.no_grad():
        assert torch.equal(other(x), out)
    assert reference_flops(net, (3, 32, 32)) == ComplexityModel.trace(net, (3, 32, 32)).flops()


def test_tiny_imagenet_resnet_is_the_originals_variant():
    net = build_baseline(make_args('--template Tiny_ImageNet_ResNet50 --model ResNet'))
    assert net.features[0][0].stride == (2, 2) and net.classifier.out_features == 200
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 200)


def test_original_baseline_checkpoint_gives_the_original_logits(shared):
    net = build_baseline(make_args('--template CIFAR10 --model ResNet --depth 20 --downsample_type A')).eval()
    load_state(net, load_torch(FIXTURES / 'resnet20' / 'baseline.pt', 'fixture'), 'fixture', adapt=False)
    with torch.no_grad():
        logits = net(torch.from_numpy(np.load(FIXTURES / 'inputs_256.npy'))).numpy()
    np.testing.assert_allclose(logits, np.load(FIXTURES / 'resnet20' / 'baseline_logits.npy'), rtol=0, atol=1e-5)


@pytest.mark.parametrize('argv,fragment', [
    ('--template CIFAR10 --model ResNet --depth 21', '--depth 21'),
    ('--template CIFAR10 --model ResNet --depth 164 --downsample_type A', 'downsample_type A'),
    ('--template CIFAR10 --model DenseNet --depth 41', '--depth 41'),
    ('--template CIFAR10 --model ResNeXt --depth 21', '--depth 21'),
    ('--template CIFAR10 --model Wide_ResNet --depth 17', '--depth 17'),
    ('--template CIFAR10 --model VGG --vgg_type 17', '--vgg_type 17'),
    ('--template ImageNet --model ResNet --depth 50', 'ImageNet'),
])
def test_impossible_architectures_are_refused_clearly(argv, fragment):
    with pytest.raises(UsageError, match=fragment.replace('-', r'\-')):
        build_baseline(make_args(argv))
