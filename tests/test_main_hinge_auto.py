"""--model Hinge --base NAME: the whole pipeline with the automatic plan, on our baselines and torchvision models."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

import main_hinge
from conftest import ROOT, runner_script
from model import build_baseline
from model_hinge import auto_plan

pytestmark = pytest.mark.usefixtures('unrendered_plots')      # plot files written empty: tests/test_report.py

R8 = '--template Demo --model Hinge --base ResNet --depth 8 --downsample_type A'
SEARCH = ('--epochs 1 --decay hingestep-50 --lr 0.05 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG '
          '--threshold 1e9 --stop_limit 0.1 --init_method p-identity')
MOBILENET = '--template Tiny_ImageNet --model Hinge --base torchvision:mobilenet_v3_small --n_threads 0'


def _run(argv: str, tmp_path: Path, budget: int | None = None) -> dict:
    args = main_hinge.option.parse_args(shlex.split(f'{argv} --dir_save {tmp_path / "runs"} --cpu --print_every 1000'))
    return main_hinge.run(args, epoch_budget=budget)


def _resnet8(tmp_path: Path) -> Path:
    """A randomly initialised ResNet-8 state dict (the --base network, also the teacher)."""
    torch.manual_seed(0)
    path = tmp_path / 'resnet8.pt'
    torch.save(build_baseline(main_hinge.option.parse_args(R8.split()), 'ResNet').state_dict(), path)
    return path


def _image_folder(root: Path) -> Path:
    """train/ and val/ ImageFolder trees of random 64x64 PNGs in two classes (the Tiny-ImageNet layout)."""
    g = torch.Generator().manual_seed(0)
    for split, count in (('train', 4), ('val', 2)):
        for label in ('cat', 'dog'):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = (torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / label / f'{i}.png')
    return root


def test_resnet_base_runs_the_method_resumes_and_its_plan_rebuilds_the_network(tiny_demo, tmp_path):
    base = _resnet8(tmp_path)
    argv = f'{R8} {SEARCH} --batch_size 16 --ratio 0.5 --pretrain {base} --teacher {base} --distillation'
    r, calls = _run(f'{argv} --save run', tmp_path, budget=1), 1
    while (r.get('stage'), r.get('epoch')) != ('converging', 1):      # one training epoch per call
        r, calls = _run(f'{argv} --load run', tmp_path, budget=1), calls + 1
    assert calls == 2
    assert (r['model'], r['base'], r['stage'], r['epoch'], r['search_epochs']) == ('Hinge', 'ResNet', 'converging',
                                                                                   1, 1)
    assert abs(r['flops_ratio'] - 0.5) <= 0.02 and r['flops_compressed'] < r['flops']
    run = tmp_path / 'runs' / 'run'
    saved = json.loads((run / 'plan.json').read_text())
    assert (saved['plan']['model'], saved['base']) == ('Hinge', 'ResNet')
    assert (run / 'model' / 'model_merge_latest.pt').is_file()          # the pruned convolutions' A merge
    tested = _run(f'{R8} --test_only --load run', tmp_path)
    assert tested['top1_err'] == r['history'][-1]['top1_err'] == r['top1_err']
    assert tested['flops_compressed'] == r['flops_compressed']


def test_torchvision_base_on_an_image_folder(tmp_path):
    data = _image_folder(tmp_path / 'data')
    torch.manual_seed(0)
    weights = tmp_path / 'mobilenet.pth'
    torch.save(torchvision.models.get_model('mobilenet_v3_small', num_classes=200).state_dict(), weights)
    argv = f'{MOBILENET} --dir_data {data} {SEARCH} --batch_size 4 --ratio 0.75'
    r = _run(f'{argv} --pretrain {weights} --save tv', tmp_path)
    assert (r['dataset'], r['base'], r['stage'], r['epoch'], r['search_epochs']) == (
        'Tiny_ImageNet', 'torchvision:mobilenet_v3_small', 'converging', 1, 1)
    assert abs(r['flops_ratio'] - 0.75) <= 0.02
    tested = _run(f'{MOBILENET} --dir_data {data} --test_only --load tv', tmp_path)
    assert tested['top1_err'] == r['top1_err']


def test_torchvision_networks_with_auxiliary_classifiers_train_on_their_logits():
    args = main_hinge.option.parse_args('--template Tiny_ImageNet --model Hinge --base torchvision:googlenet'.split())
    net = build_baseline(args, args.base).train()
    out = net(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 200)


UNTRACEABLE = 'torchvision:resnet18'
BAD = [
    ('--template Demo --model Hinge --depth 8', '--model Hinge compresses the network named by --base; add --base'),
    ('--template Demo_ResNet --model hinge --depth 8', '--model hinge compresses the network named by --base'),
    ('--template Demo --model ResNet --base ResNet --depth 8', '--base ResNet chooses the network --model Hinge'),
    ('--template Demo --model Hinge_ResNet_Basic_SVD --base VGG --depth 8', '--base VGG chooses the network'),
    ('--template Demo --model Hinge --base Hinge_VGG', '--base Hinge_VGG is not a network --model Hinge can compress'),
    ('--template Demo --model Hinge --base torchvision:resnet51',
     "--base torchvision:resnet51: torchvision has no classification model 'resnet51'; close ones: "
     'torchvision:resnet50'),
    ('--template Demo --model Hinge --base torchvision:', 'list them with torchvision.models.list_models'),
    ('--template Demo --model Hinge --base torchvision:vit_b_32 --ratio 0.5',
     '--base torchvision:vit_b_32: the model does not run on'),
    (f'--template Demo --model Hinge --base {UNTRACEABLE} --ratio 0.5',
     f'--base {UNTRACEABLE}: the model ResNet does not trace with torch.fx'),
    (f'{R8} --ratio 0.02', '--ratio 0.02 cannot be reached: keeping --remain_percentage 0.2 of every layer leaves'),
    (f'{R8} --ratio 0.5 --distillation --teacher vgg.pt', '--teacher vgg.pt was written for another architecture'),
    (f'{R8} --ratio 0.5 --test_only --load run', 'compresses --base VGG, not --base ResNet; pass --base VGG'),
]


@pytest.fixture(scope='module')
def vgg_files(tmp_path_factory) -> tuple[bytes, str]:
    """A VGG-A state dict (the file's bytes) and the plan.json of a run with the automatic plan of --base VGG."""
    vgg = build_baseline(main_hinge.option.parse_args('--template Demo --model VGG --vgg_type A'.split()))
    path = tmp_path_factory.mktemp('vgg') / 'vgg.pt'
    torch.save(vgg.state_dict(), path)
    plan = auto_plan(vgg, torch.zeros(1, 3, 32, 32)).to_dict()
    return path.read_bytes(), json.dumps({'plan': plan, 'layer_weights': None, 'base': 'VGG'})


@pytest.mark.parametrize('argv,fragment', BAD, ids=[c[1][:40] for c in BAD])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, monkeypatch, vgg_files, argv, fragment):
    monkeypatch.chdir(tmp_path)
    if UNTRACEABLE in argv:
        monkeypatch.setattr(torchvision.models.ResNet, 'forward',
                            lambda self, x: self.fc(x.flatten(1)) if x.sum() > 0 else x)
    (tmp_path / 'vgg.pt').write_bytes(vgg_files[0])
    runs = tmp_path / 'runs'
    (runs / 'run' / 'model').mkdir(parents=True)
    (runs / 'run' / 'log.txt').write_text('an earlier run\n')
    (runs / 'run' / 'plan.json').write_text(vgg_files[1])
    before = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob('*'))
    assert main_hinge.main(shlex.split(f'{argv} --dir_save {runs} --cpu')) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'Traceback' not in err and fragment in err, err
    assert sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob('*')) == before


# Slow: a second torchrun run (three processes) in the default suite; tests/test_distributed.py keeps the one that
# checks two processes against one, and the tests above the automatic plan's pipeline in one process.
@pytest.mark.slow
def test_two_processes_through_torchrun(tmp_path):
    """--n_GPUs 2 on the CPU: both processes plan the same network; rank 0 writes plan.json once. Started by
    torchrun as the relaunch does (tests/test_main_hinge.py checks its command), so that both processes run on the
    tiny demo set."""
    flags = f'{R8} {SEARCH} --batch_size 16 --ratio 0.5 --n_GPUs 2 --cpu --save two --dir_save {tmp_path / "runs"}'
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
    done = subprocess.run([*torchrun, str(runner_script(tmp_path)), *flags.split()], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads((tmp_path / 'runs' / 'two' / 'results.json').read_text())
    assert (r['stage'], r['epoch'], r['base']) == ('converging', 1, 'ResNet') and abs(r['flops_ratio'] - 0.5) <= 0.02


def _record(tmp_path: Path, zoo: Path) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run scripts/hinge_imagenet.sh with a `python` that only records its arguments."""
    bin_dir, calls = tmp_path / 'bin', tmp_path / 'calls.txt'
    bin_dir.mkdir(exist_ok=True)
    calls.unlink(missing_ok=True)
    fake = bin_dir / 'python'
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {calls}\necho >> {calls}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', MODEL_PATH=str(zoo), SAVE_PATH=str(tmp_path / 's'),
               DATA_PATH=str(tmp_path / 'd'))
    done = subprocess.run(['bash', str(ROOT / 'scripts' / 'hinge_imagenet.sh')], env=env, capture_output=True,
                          text=True)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return done, [shlex.split(line)[1:] for line in lines]


def test_imagenet_script_runs_the_papers_resnet50_experiment_on_torchvisions_network(tmp_path):
    zoo = tmp_path / 'zoo'
    zoo.mkdir()
    done, calls = _record(tmp_path, zoo)
    assert done.returncode == 1 and calls == [] and 'resnet50-0676ba61.pth' in done.stderr
    assert 'nothing was run' in done.stderr and not (tmp_path / 's').exists()
    (zoo / 'resnet50-0676ba61.pth').touch()
    done, calls = _record(tmp_path, zoo)
    assert done.returncode == 0, done.stderr
    [argv] = calls
    args = main_hinge.option.parse_args(argv)
    main_hinge.validate(args)
    assert (args.model, args.base, args.ratio, args.data_train) == ('Hinge', 'torchvision:resnet50', 0.465, 'ImageNet')
    assert args.pretrain == args.teacher == str(zoo / 'resnet50-0676ba61.pth') and args.distillation
    assert (args.dir_save, args.dir_data) == (str(tmp_path / 's'), str(tmp_path / 'd'))
