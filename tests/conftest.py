"""Shared test helpers: paths to ../shared, flag parsing, and an independent reference FLOPs counter."""

import os
from math import prod
from pathlib import Path

# One torch thread, here and in the processes the tests start (read when torch is imported, so first): the tests'
# tensors are tiny, and one thread runs the suite faster than two (161 s against 222 s on this machine's 2 cores).
os.environ.setdefault('OMP_NUM_THREADS', '1')

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import option  # noqa: E402

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


@pytest.fixture
def small_demo(monkeypatch):
    """The demo set shrunk so that whole pipelines run in seconds."""
    from data import demo

    monkeypatch.setattr(demo, 'N_TRAIN', 320)
    monkeypatch.setattr(demo, 'N_TEST', 160)


@pytest.fixture
def tiny_demo(monkeypatch):
    """The demo set shrunk further: at --batch_size 16, the 5 training batches and 1 test batch of an epoch of
    small_demo at --batch_size 64, on a quarter of the images."""
    from data import demo

    monkeypatch.setattr(demo, 'N_TRAIN', 80)
    monkeypatch.setattr(demo, 'N_TEST', 40)


def unrendered_save(fig, path, **kwargs) -> None:
    """utils.plot._save without the rendering: the figure is built and closed and its file written empty."""
    import matplotlib.pyplot as plt

    from utils.io import write_bytes_atomic

    plt.close(fig)
    write_bytes_atomic(path, b'')


@pytest.fixture
def unrendered_plots(monkeypatch):
    """Runs write every plot file, empty: rendering them is most of a demo run's time (tests/test_report.py
    renders them)."""
    from utils import plot

    monkeypatch.setattr(plot, '_save', unrendered_save)


def runner_script(folder: Path) -> Path:
    """A script that runs main_hinge.main as the tests do in process (the tiny demo set, plot files
    unrendered), for tests that need other processes (torchrun)."""
    runner = folder / 'runner.py'
    runner.write_text(f'import sys\nsys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]\n'
                      'from conftest import unrendered_save\nfrom data import demo\nfrom utils import plot\n'
                      'demo.N_TRAIN, demo.N_TEST, plot._save = 80, 40, unrendered_save\nimport main_hinge\n'
                      'sys.exit(main_hinge.main(sys.argv[1:]))\n')
    return runner


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


# One small configuration per Hinge model: fast on two cores, same structure as the paper's networks.
SMALL = {
    'Hinge_ResNet_Basic_SVD': '--model Hinge_ResNet_Basic_SVD --depth 14 --downsample_type A',
    'Hinge_ResNet_Basic': '--model Hinge_ResNet_Basic --depth 14 --downsample_type A',
    'Hinge_VGG': '--model Hinge_VGG --vgg_type ef',
    'Hinge_RESNET_BOTTLENECK': '--model Hinge_RESNET_BOTTLENECK --depth 20 --bottleneck',
    'Hinge_RESNEXT': '--model Hinge_RESNEXT --depth 11 --cardinality 4 --bottleneck_width 2',
    'Hinge_DENSENET_SVD': '--model Hinge_DENSENET_SVD --depth 16 --k 6',
    'Hinge_DenseNet': '--model Hinge_DenseNet --depth 16 --k 6',
    'Hinge_WIDE_RESNET': '--model Hinge_WIDE_RESNET --depth 10 --widen_factor 2',
}


def random_statistics(net: nn.Module) -> None:
    """BatchNorm statistics and affine values away from their defaults, so that selection errors show."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def hinge_model(argv: str, init: str = 'svd2', seed: int = 0, **flags):
    """(HingeModel, args) converted from a freshly built baseline with random BatchNorm statistics."""
    from model import build_baseline
    from model_hinge import adapter_for
    from model_hinge.core import HingeModel

    torch.manual_seed(seed)
    args = make_args(argv if '--template' in argv else f'--template CIFAR10 {argv}', init_method=init, **flags)
    adapter = adapter_for(args.model)
    net = build_baseline(args, adapter.baseline)
    random_statistics(net)
    return HingeModel(net, adapter.plan(net), (3, 32, 32), init), args


def zero_groups(hm, every: int = 3) -> dict:
    """Zero every `every`-th group of each compressible family and make whatever reads those channels map
    zero to zero (A's bias and BatchNorm shifts); returns the surviving groups, so compressing them must
    preserve the function."""
    kept = {}
    with torch.no_grad():
        for fam in hm.families:
            dropped = torch.arange(fam.size)[::every] if fam.cuts else torch.tensor([], dtype=torch.long)
            channels = fam.channels(dropped)
            for m in fam.members:
                m.param.index_fill_(m.dim, channels, 0.0)
            for cut in fam.cuts:
                if cut.name in ('bias', 'running_mean'):
                    cut.tensor.index_fill_(cut.axis, cut.offset + channels, 0.0)
            keep = torch.ones(fam.size, dtype=torch.bool)
            keep[dropped] = False
            kept[fam] = keep.nonzero().view(-1)
    return kept


def assert_matches_manifest(name: str, init: str | None = None):
    """Build the Hinge model of an original's manifest (spec/state_dicts) and check its state-dict keys and
    shapes, in order, and the baseline's FLOPs and parameters; returns the model."""
    import json

    from model import build_baseline
    from model_hinge import adapter_for
    from model_hinge.core import HingeModel

    manifest = json.loads((SPEC / 'state_dicts' / f'{name}.json').read_text())
    args = make_args(' '.join(manifest['argv']))
    adapter = adapter_for(args.model)
    net = build_baseline(args, adapter.baseline)
    hm = HingeModel(net, adapter.plan(net), tuple(manifest['input_dim']), init)
    assert [[k, list(v.shape)] for k, v in hm.net.state_dict().items()] == manifest['state_dict']
    assert (hm.baseline_flops, hm.baseline_params) == (manifest['baseline_flops'], manifest['baseline_params'])
    return hm
