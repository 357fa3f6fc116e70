"""utils/export.py: the compressed (and merged) network of every Hinge model, and baselines, exported as
torch.export and TorchScript (and ONNX where installed) artefacts whose outputs equal the in-framework
network's, also when loaded by a fresh Python process that cannot import this project."""

import copy
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import FIXTURES, ROOT, SMALL, hinge_model, make_args, zero_groups
from model import build_baseline
from model_hinge import adapter_for
from model_hinge.core import HingeModel
from model_hinge.surgery import compress, load_state
from utils import export
from utils.export import TOLERANCE, export_network, onnx_missing
from utils.io import load_torch, save_torch

HAS_ONNX = onnx_missing() is None and importlib.util.find_spec('onnxruntime') is not None
# In the default run, one model per structural feature: the two-slope activation, wrapped and merged pairs and
# a zero-padding shortcut (ResNet_Basic, also exported to ONNX where installed); A inserted after the conv in a
# Sequential, concatenation, merging (DenseNet); grouped convolutions with the block's own 1x1 convolutions as A
# (ResNeXt). The slow test covers every other model and three baselines, with ONNX where installed.
REPRESENTATIVE = {'Hinge_ResNet_Basic': HAS_ONNX, 'Hinge_DenseNet': False, 'Hinge_RESNEXT': False}
BASELINES = {'ResNet': '--template CIFAR10 --model ResNet --depth 8 --downsample_type A',
             'DenseNet': '--template CIFAR10 --model DenseNet --depth 10 --k 4',
             'VGG': '--template CIFAR10 --model VGG --vgg_type ef'}


def _inputs() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def networks(name: str) -> tuple[nn.Module, nn.Module]:
    """(the network as the framework evaluates it, its deployable copy). For a Hinge model: the converted
    baseline with every third group zeroed and removed, and its copy with the plan's merges folded."""
    if name in BASELINES:
        torch.manual_seed(0)
        framework = build_baseline(make_args(BASELINES[name])).eval()
        return framework, copy.deepcopy(framework)
    hm, _ = hinge_model(SMALL[name], init='p-identity')
    compress(hm.families, zero_groups(hm), hm.net)
    hm.retrace()
    framework = hm.net.eval()
    hm = copy.deepcopy(hm)
    hm.merge()
    return framework, hm.net


def export_all(names: dict[str, bool], root: Path) -> dict[str, tuple[Path, torch.Tensor]]:
    """Export each named network (with ONNX where its flag says so): name -> (folder, in-framework outputs)."""
    result = {}
    for name, onnx in names.items():
        framework, deployable = networks(name)
        with torch.no_grad():
            expected = framework(_inputs())
        formats = ('pt2', 'torchscript') + (('onnx',) if onnx else ())
        export_network(deployable, (3, 32, 32), root / name, {'model': name}, formats)
        result[name] = (root / name, expected)
    return result


def check_records(exported: dict[str, tuple[Path, torch.Tensor]]) -> None:
    """export.json of every export lists its artefacts, which exist and were measured within the tolerance."""
    for name, (folder, _) in exported.items():
        meta = json.loads((folder / 'export.json').read_text())
        assert meta['model'] == name and meta['input_shape'] == ['batch', 3, 32, 32]
        assert {'pt2', 'torchscript'} <= set(meta['artefacts'])
        for fmt, artefact in meta['artefacts'].items():
            assert (folder / artefact['file']).is_file(), (name, fmt)
            assert artefact['max_abs_diff'] <= TOLERANCE and artefact['within_tolerance'], (name, fmt)
        reference = torch.load(folder / 'reference_io.pt', weights_only=True)
        assert reference['input'].shape == (2, 3, 32, 32) and reference['output'].shape == (2, 10)


# A plain Python process: cwd outside the repository, no PYTHONPATH, -I (no script directory, no user site).
FRESH = textwrap.dedent('''
    import importlib.util, json, sys
    import torch
    assert all(importlib.util.find_spec(m) is None for m in ('model_hinge', 'model', 'utils', 'main_hinge'))
    folders, x, out = sys.argv[1].split(','), torch.load(sys.argv[2]), sys.argv[3]
    results = {}
    with torch.no_grad():
        for folder in folders:
            results[folder] = got = {}
            for fmt, artefact in json.load(open(folder + '/export.json'))['artefacts'].items():
                path = folder + '/' + artefact['file']
                if fmt == 'pt2':
                    program = torch.export.load(path).module()
                    got['pt2'], got['pt2_single'] = program(x), program(x[:1])
                elif fmt == 'torchscript':
                    got['torchscript'] = torch.jit.load(path)(x)
                else:
                    import onnxruntime
                    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
                    got['onnx'] = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    torch.save(results, out)
''')


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}


def check_in_fresh_process(exported: dict[str, tuple[Path, torch.Tensor]], tmp_path: Path) -> dict:
    """Run every artefact in a plain process and compare with the in-framework outputs; returns the outputs."""
    save_torch(_inputs(), tmp_path / 'x.pt')
    argv = [sys.executable, '-I', '-c', FRESH, ','.join(str(folder) for folder, _ in exported.values()),
            str(tmp_path / 'x.pt'), str(tmp_path / 'out.pt')]
    done = subprocess.run(argv, cwd=tmp_path, env=_plain_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = torch.load(tmp_path / 'out.pt', weights_only=True)
    for name, (folder, expected) in exported.items():
        got = outputs[str(folder)]
        for fmt in set(got) - {'pt2_single'}:
            assert (got[fmt] - expected).abs().max() <= TOLERANCE, (name, fmt)
        assert (got['pt2_single'] - expected[:1]).abs().max() <= TOLERANCE, name       # the batch is dynamic
    return {name: set(outputs[str(folder)]) for name, (folder, _) in exported.items()}


def test_exports_equal_the_framework_network_in_a_fresh_process_without_the_project(tmp_path):
    exported = export_all(REPRESENTATIVE, tmp_path / 'exported')
    check_records(exported)
    formats = check_in_fresh_process(exported, tmp_path)
    assert formats['Hinge_RESNEXT'] == {'pt2', 'pt2_single', 'torchscript'}
    assert ('onnx' in formats['Hinge_ResNet_Basic']) == HAS_ONNX


@pytest.mark.slow
def test_every_model_and_baseline_exports_equal_to_the_framework_in_a_fresh_process(tmp_path):
    names = {n: HAS_ONNX for n in [*SMALL, *BASELINES] if n not in REPRESENTATIVE}
    exported = export_all(names, tmp_path / 'exported')
    check_records(exported)
    check_in_fresh_process(exported, tmp_path)


def test_the_originals_compressed_checkpoint_exports_to_the_originals_logits(shared, tmp_path):
    """The original code's compressed ResNet-20 (its tensors are strided, as the original saved them): the
    exported program gives the logits the original computed for the first 256 test images."""
    args = make_args('--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A')
    adapter = adapter_for(args.model)
    net = build_baseline(args, adapter.baseline)
    HingeModel(net, adapter.plan(net), (3, 32, 32), None)
    load_state(net, load_torch(FIXTURES / 'resnet20' / 'compressed.pt', 'fixture'), 'fixture', adapt=True)
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)               # e.g. the .pt2 writer's "no complete tensor"
        meta = export_network(net, (3, 32, 32), tmp_path, {}, ('pt2',))
    assert meta['artefacts']['pt2']['within_tolerance']
    program = torch.export.load(tmp_path / 'model.pt2').module()
    with torch.no_grad():
        logits = program(torch.from_numpy(np.load(FIXTURES / 'inputs_256.npy')))
    expected = torch.from_numpy(np.load(FIXTURES / 'resnet20' / 'compressed_logits.npy'))
    assert torch.allclose(logits, expected, atol=1e-4)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def test_without_onnx_the_export_says_why_and_writes_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(export, 'onnx_missing', lambda: 'onnx not installed')
    meta = export_network(_tiny(), (3, 8, 8), tmp_path / 'e', {})
    assert meta['artefacts']['onnx'] == {'file': None, 'skipped': 'onnx not installed'}
    assert sorted(p.name for p in (tmp_path / 'e').iterdir()) == ['export.json', 'model.pt2', 'model.torchscript.pt',
                                                                  'reference_io.pt']
    assert '  onnx: not written (onnx not installed)' in export.describe(meta)


def _checker():
    """scripts/check_export.py as a module, to call its main() here."""
    spec = importlib.util.spec_from_file_location('check_export', ROOT / 'scripts' / 'check_export.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_export_script_verifies_a_folder_in_a_plain_process(tmp_path, monkeypatch, capsys):
    folder = tmp_path / 'e'
    export_network(_tiny(), (3, 8, 8), folder, {}, ('pt2', 'torchscript'))
    check = [sys.executable, '-I', str(ROOT / 'scripts' / 'check_export.py'), str(folder)]
    done = subprocess.run(check, cwd=tmp_path, env=_plain_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [line.split(':')[0] for line in done.stdout.splitlines()] == ['pt2', 'torchscript']
    reference = torch.load(folder / 'reference_io.pt', weights_only=True)
    save_torch({'input': reference['input'], 'output': reference['output'] + 1e-3}, folder / 'reference_io.pt')
    checker = _checker()
    monkeypatch.setattr(sys, 'argv', ['check_export.py', str(folder)])
    assert checker.main() == 1 and capsys.readouterr().out.count('FAILED') == 2
    monkeypatch.setattr(sys, 'argv', ['check_export.py', str(tmp_path)])
    assert checker.main() == 2 and 'not an export folder' in capsys.readouterr().err


def test_an_existing_file_is_refused_as_export_folder(tmp_path):
    (tmp_path / 'f').write_text('x')
    with pytest.raises(export.UsageError, match='is a file'):
        export.check_target(str(tmp_path / 'f'))
    assert export.check_target(str(tmp_path / 'new')) == tmp_path / 'new'
