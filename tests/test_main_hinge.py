"""main_hinge.py end to end: the original's command lines and checkpoints, clear failures, all four phases."""

import json
import subprocess
import sys

import pytest
import torch

import main_hinge
from conftest import CIFAR_SUBSET, FIXTURES, ROOT
from data import cifar
from utils.io import load_torch, save_torch

RESULT_KEYS = {'model', 'dataset', 'stage', 'epoch', 'flops', 'params', 'flops_compressed', 'params_compressed',
               'flops_ratio', 'params_ratio', 'threshold', 'top1_err', 'top5_err', 'best_top1_err', 'loss',
               'images_per_second', 'history'}


def _run(argv: str, tmp_path, budget=None) -> dict:
    args = main_hinge.option.parse_args(f'{argv} --dir_save {tmp_path / "runs"} --cpu --print_every 1000'.split())
    return main_hinge.run(args, epoch_budget=budget)


def _results(tmp_path, save: str) -> dict:
    return json.loads((tmp_path / 'runs' / save / 'results.json').read_text())


@pytest.mark.parametrize('which,argv', [
    ('baseline', '--template CIFAR10 --model ResNet --depth 20 --downsample_type A'),
    ('compressed', '--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A'),
])
def test_original_checkpoints_give_the_originals_numbers(shared, tmp_path, which, argv):
    expected = json.loads((FIXTURES / 'expected.json').read_text())[which]
    assert main_hinge.main(f'{argv} --test_only --save {which} --pretrain {FIXTURES / expected["file"]} '
                           f'--dir_save {tmp_path} --dir_data {CIFAR_SUBSET}'.split()) == 0
    r = json.loads((tmp_path / which / 'results.json').read_text())
    assert RESULT_KEYS <= set(r)
    for key in ('flops', 'params', 'flops_compressed', 'params_compressed', 'top1_err', 'top5_err'):
        assert r[key] == expected.get(key, r['flops'] if key == 'flops_compressed' else r['params']), key
    assert r['loss'] == pytest.approx(expected['loss'], rel=1e-6)


def _fails_cleanly(argv: str, tmp_path, capsys, fragment: str) -> None:
    assert main_hinge.main(f'{argv} --dir_save {tmp_path / "runs"} --save bad'.split()) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / 'runs').exists()


def test_bad_inputs_exit_2_with_one_sentence_and_write_nothing(shared, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cifar, '_download', lambda name, root: (_ for _ in ()).throw(OSError('network unreachable')))
    baseline = FIXTURES / 'resnet20' / 'baseline.pt'
    cases = [
        ('--model ResNet99', '--model ResNet99 is unknown'),
        ('--template CIFAR10 --model ResNet --depth 20 --dir_data /nonexistent', 'could not be downloaded'),
        (f'--template CIFAR10 --model ResNet --depth 56 --downsample_type A --test_only --pretrain {baseline} '
         f'--dir_data {CIFAR_SUBSET}', 'another architecture'),
        (f'--template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A --test_only '
         f'--pretrain {baseline} --dir_data {CIFAR_SUBSET}', 'another architecture'),
        (f'--template CIFAR10 --model ResNet --depth 20 --test_only --pretrain {tmp_path}/none.pt '
         f'--dir_data {CIFAR_SUBSET}', 'does not exist'),
        ('--template Demo --model Hinge_VGG --ratio 1.5', '--ratio 1.5 must be in (0, 1]'),
        ('--template Demo --model ResNet --depth 20 --decay cosine', '--decay cosine'),
        ('--template Demo --model ResNet --depth 20 --optimizer PG', '--optimizer PG'),
        ('--template Demo --model ResNet --depth 20 --export out', '--export writes the evaluated network'),
        (f'--template Demo --model ResNet --depth 20 --test_only --pretrain {baseline} --export {baseline}',
         'is a file'),
        (f'--report {tmp_path / "nowhere"}', 'is not a run directory'),
        ('--template Demo --model ResNet --depth 20 --csv', '--csv formats the --report table'),
        ('--template Demo --model ResNet --depth 20 --export_merge cheaper', '--export_merge chooses'),
    ]
    for argv, fragment in cases:
        _fails_cleanly(argv, tmp_path, capsys, fragment)


def test_cli_process_exit_codes(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / 'main_hinge.py'), '--model', 'nope', '--dir_save', str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith('main_hinge.py: error: --model nope')
    assert 'Traceback' not in done.stderr
    done = subprocess.run([sys.executable, str(ROOT / 'main_hinge.py'), '--help'], capture_output=True, text=True)
    assert done.returncode == 0 and 'Hinge compression:' in done.stdout


def test_training_then_test_only_reproduces_the_logged_error(shared, tmp_path):
    argv = f'--template CIFAR10 --model ResNet --depth 8 --downsample_type A --dir_data {CIFAR_SUBSET} --batch_size 128'
    trained = _run(f'{argv} --epochs 1 --save train', tmp_path)
    assert trained['stage'] == 'baseline' and trained['epoch'] == 1
    files = {p.name for p in (tmp_path / 'runs' / 'train').rglob('*')}
    assert {'model_latest.pt', 'model_best.pt', 'optimizer.pt', 'epochs.pt', 'loss.pt', 'train_log.pt',
            'test_log.pt', 'log.txt', 'config.txt', 'results.json', 'NLL_Test.pdf'} <= files
    tested = _run(f'{argv} --test_only --save check --pretrain {tmp_path / "runs" / "train"}', tmp_path)
    assert (tested['top1_err'], tested['top5_err']) == (trained['top1_err'], trained['top5_err'])
    assert tested['loss'] == pytest.approx(trained['loss'], rel=1e-6)


def _baseline(tmp_path) -> str:
    _run('--template Demo --model ResNet --depth 8 --downsample_type A --epochs 2 --batch_size 64 --save base',
         tmp_path)
    return str(tmp_path / 'runs' / 'base' / 'model' / 'model_latest.pt')


HINGE = ('--template Demo --model {model} --depth 8 --downsample_type A --pretrain {pretrain} --teacher {pretrain} '
         '--batch_size 64 --epochs 2 --decay hingestep-50 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG '
         '--ratio 0.5 --regularization_factor 3 --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing '
         '--distillation')


def _files(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob('*'))


def test_resuming_both_stages_equals_an_uninterrupted_run(small_demo, tmp_path):
    pretrain = _baseline(tmp_path)
    argv = HINGE.format(model='Hinge_ResNet_Basic_SVD', pretrain=pretrain)
    whole = _run(f'{argv} --save whole', tmp_path)
    assert whole['stage'] == 'converging' and whole['epoch'] == 2
    assert whole['flops_ratio'] <= 0.6 and whole['flops_compressed'] < whole['flops']
    parts = _run(f'{argv} --save parts', tmp_path, budget=1)
    calls = 1
    while parts.get('stage') != 'converging' or parts.get('epoch') != 2:
        parts = _run(f'{argv} --load parts', tmp_path, budget=1)
        calls += 1
    run_a, run_b = tmp_path / 'runs' / 'whole', tmp_path / 'runs' / 'parts'
    assert calls == len(whole['history'])       # one epoch per call; compression joins the first converging call
    assert [(h['stage'], h['epoch'], h['top1_err']) for h in whole['history']] == \
           [(h['stage'], h['epoch'], h['top1_err']) for h in parts['history']]
    assert _files(run_a) == _files(run_b)
    a = load_torch(run_a / 'model' / 'model_converging_latest.pt', 'a')
    b = load_torch(run_b / 'model' / 'model_converging_latest.pt', 'b')
    assert all(torch.equal(a[k], b[k]) for k in a)
    info = load_torch(run_a / 'compression_information.pt', 'info')
    assert info['epoch_continue'] == whole['search_epochs'] + 1
    tested = _run(f'--template Demo --model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A --test_only '
                  f'--save tested --pretrain {run_a / "model" / "model_converging_latest.pt"}', tmp_path)
    assert (tested['top1_err'], tested['flops_compressed']) == (whole['top1_err'], whole['flops_compressed'])


def test_vgg_with_the_legacy_search(small_demo, tmp_path):
    _run('--template Demo --model VGG --vgg_type A --epochs 1 --batch_size 64 --save vgg', tmp_path)
    pretrain = tmp_path / 'runs' / 'vgg' / 'model' / 'model_latest.pt'
    r = _run(f'--template Demo --model Hinge_VGG --vgg_type A --pretrain {pretrain} --batch_size 64 --epochs 1 '
             f'--decay hingestep-50 --lr 0.05 --lr_ratio 0.01 --optimizer PG --ratio 0.6 --threshold 5e-2 '
             f'--regularization_factor 2 --stop_limit 0.3 --legacy_search --save hvgg', tmp_path)
    assert r['stage'] == 'converging' and r['flops_ratio'] <= 0.9
    assert r['flops_compressed'] < r['flops'] and r['params_compressed'] < r['params']
    log = (tmp_path / 'runs' / 'hvgg' / 'log.txt').read_text()
    assert 'Iter 1: current step=0.0100' in log and 'Converging Stage (Searching Epoch' in log


def test_merging_models_save_the_merged_network_after_converging(small_demo, tmp_path):
    pretrain = _baseline(tmp_path)
    r = _run(HINGE.format(model='Hinge_ResNet_Basic', pretrain=pretrain).replace('--epochs 2', '--epochs 1')
             + ' --save basic', tmp_path)
    run = tmp_path / 'runs' / 'basic'
    merged_file = run / 'model' / 'model_merge_latest.pt'
    assert 'features.1.0.body.0.weight' in load_torch(merged_file, 'merged')
    argv = '--template Demo --model Hinge_ResNet_Basic --depth 8 --downsample_type A --test_only'
    merged = _run(f'{argv} --save merged --pretrain {merged_file}', tmp_path)
    unmerged = _run(f'{argv} --save unmerged --pretrain {run / "model" / "model_converging_latest.pt"}', tmp_path)
    assert merged['top1_err'] == pytest.approx(r['top1_err'], abs=1e-6) == pytest.approx(unmerged['top1_err'])
    assert merged['flops_compressed'] == unmerged['flops_compressed'] == r['flops_compressed']   # the merged view
    assert r['flops_compressed'] / r['flops'] == pytest.approx(r['flops_ratio'])


def test_reset_starts_the_run_directory_afresh(small_demo, tmp_path):
    argv = '--template Demo --model ResNet --depth 8 --downsample_type A --epochs 1 --save again'
    _run(argv, tmp_path)
    (tmp_path / 'runs' / 'again' / 'stale.txt').write_text('x')
    _run(f'{argv} --reset', tmp_path)
    assert not (tmp_path / 'runs' / 'again' / 'stale.txt').exists()
    assert (tmp_path / 'runs' / 'again' / 'log.txt').read_text().count('[Epoch 1]') == 1


def test_load_original_param_compresses_the_teachers_weights(small_demo, tmp_path):
    from model import build_baseline
    from model_hinge.init import factorize

    pretrain = _baseline(tmp_path)
    argv = HINGE.format(model='Hinge_ResNet_Basic_SVD', pretrain=pretrain).replace('--epochs 2', '--epochs 0')
    _run(f'{argv} --load_original_param --save original', tmp_path)
    run = tmp_path / 'runs' / 'original'
    state = load_torch(run / 'model' / 'model_converging_latest.pt', 'compressed')
    kept = load_torch(run / 'compression_information.pt', 'info')['info_layer0'][0]['pindex']
    teacher = build_baseline(main_hinge.option.parse_args(
        '--template Demo --model ResNet --depth 8 --downsample_type A'.split()))
    teacher.load_state_dict(load_torch(pretrain, 'teacher'))
    basis, matrix = factorize(teacher.features[1][0].body[0].weight, 'svd2')
    assert torch.allclose(state['features.1.0.body.0.0.weight'], basis[kept], atol=1e-6)
    assert torch.allclose(state['features.1.0.body.0.1.weight'], matrix[:, kept], atol=1e-6)


def test_evaluating_a_run_with_load_appends_to_its_results(small_demo, tmp_path):
    argv = '--template Demo --model ResNet --depth 8 --downsample_type A'
    trained = _run(f'{argv} --epochs 2 --save run', tmp_path)
    test_log = load_torch(tmp_path / 'runs' / 'run' / 'test_log.pt', 'log')
    tested = _run(f'{argv} --test_only --load run', tmp_path)
    assert [h['stage'] for h in tested['history']] == ['baseline', 'baseline', 'test']
    assert tested['top1_err'] == trained['top1_err']
    assert torch.equal(load_torch(tmp_path / 'runs' / 'run' / 'test_log.pt', 'log'), test_log)
    assert _results(tmp_path, 'run')['stage'] == 'test'


def test_a_resumed_legacy_search_equals_an_uninterrupted_one(small_demo, tmp_path):
    """Interrupted after search epoch 1 and resumed without --pretrain: the same epochs, errors and tensors
    (compressible tensors frozen from the first resumed epoch; layer weights from the run's plan.json)."""
    pretrain = _baseline(tmp_path)
    argv = (HINGE.format(model='Hinge_ResNet_Basic_SVD', pretrain=pretrain).replace('--distillation', '')
            + ' --legacy_search --threshold 0 --stop_limit 0.01 --regularization_factor 0.5')
    whole = _run(f'{argv} --save whole', tmp_path, budget=3)
    _run(f'{argv} --save parts', tmp_path, budget=1)
    resume = ' '.join(part for part in argv.split() if part != pretrain and part not in ('--pretrain', '--teacher'))
    parts = _run(f'{resume} --load parts', tmp_path, budget=2)
    assert [h['stage'] for h in whole['history']] == ['search'] * 3
    assert [(h['epoch'], h['top1_err'], h['loss']) for h in whole['history']] == \
           [(h['epoch'], h['top1_err'], h['loss']) for h in parts['history']]
    a = load_torch(tmp_path / 'runs' / 'whole' / 'model' / 'model_latest.pt', 'a')
    b = load_torch(tmp_path / 'runs' / 'parts' / 'model' / 'model_latest.pt', 'b')
    assert all(torch.equal(a[k], b[k]) for k in a)
    plan = json.loads((tmp_path / 'runs' / 'parts' / 'plan.json').read_text())
    assert len(plan['layer_weights']) == len(plan['plan']['families'])


def _random_baseline(tmp_path, argv: str) -> str:
    from model import build_baseline
    from model_hinge import adapter_for

    args = main_hinge.option.parse_args(f'--template Demo {argv}'.split())
    torch.manual_seed(0)
    path = tmp_path / 'baseline.pt'
    save_torch(build_baseline(args, adapter_for(args.model).baseline).state_dict(), path)
    return str(path)


FAMILIES = {
    'Hinge_ResNet_Basic_SVD': '--depth 8 --downsample_type A',
    'Hinge_ResNet_Basic': '--depth 8 --downsample_type A',
    'Hinge_VGG': '--vgg_type ef',
    'Hinge_RESNET_BOTTLENECK': '--depth 11 --bottleneck',
    'Hinge_RESNEXT': '--depth 11 --cardinality 8 --bottleneck_width 2',
    'Hinge_DENSENET_SVD': '--depth 10 --k 4',
    'Hinge_DenseNet': '--depth 10 --k 4',
    'Hinge_WIDE_RESNET': '--depth 10 --widen_factor 1',
}


@pytest.mark.parametrize('model', list(FAMILIES))
def test_every_hinge_model_runs_the_method_and_its_checkpoints_evaluate_the_same(small_demo, tmp_path, model):
    flags = f'--model {model} {FAMILIES[model]}'
    pretrain = _random_baseline(tmp_path, flags)
    r = _run(f'--template Demo {flags} --pretrain {pretrain} --teacher {pretrain} --distillation --batch_size 64 '
             '--epochs 1 --decay hingestep-50 --lr 0.05 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG --ratio 0.6 '
             '--threshold 1e9 --stop_limit 0.1 --layer_balancing --save run', tmp_path)
    assert (r['stage'], r['epoch'], r['search_epochs']) == ('converging', 1, 1)   # 1e9: every group would go
    assert abs(r['flops_ratio'] - 0.6) < 0.05 and r['flops_compressed'] == round(r['flops_ratio'] * r['flops'])
    run = tmp_path / 'runs' / 'run'
    files = ['model_converging_latest.pt'] + (['model_merge_latest.pt'] if (run / 'model' /
                                                                            'model_merge_latest.pt').exists() else [])
    assert (len(files) == 2) == (model in ('Hinge_ResNet_Basic', 'Hinge_DenseNet', 'Hinge_WIDE_RESNET'))
    for name in files:
        tested = _run(f'--template Demo {flags} --test_only --save test_{name} --pretrain {run / "model" / name}',
                      tmp_path)
        assert tested['top1_err'] == pytest.approx(r['top1_err'], abs=1e-6)
        assert (tested['flops_compressed'], tested['params_compressed']) == (r['flops_compressed'],
                                                                             r['params_compressed'])
    assert 'plan' in json.loads((run / 'plan.json').read_text())


def test_a_searched_run_without_plan_or_results_compresses_at_a_given_threshold(small_demo, tmp_path):
    """The original's run directories have neither plan.json nor results.json: resuming one re-plans, and
    --stop_limit 1 with the original's threshold walk compresses it at --threshold without further training."""
    pretrain = _baseline(tmp_path)
    argv = HINGE.format(model='Hinge_ResNet_Basic_SVD', pretrain=pretrain).replace('--distillation', '')
    _run(f'{argv} --regularization_factor 1e-4 --threshold 0 --stop_limit 0.01 --save searched', tmp_path, budget=1)
    run = tmp_path / 'runs' / 'searched'
    assert not (run / 'compression_information.pt').exists()
    searched = load_torch(run / 'model' / 'model_latest.pt', 'searched')
    (run / 'plan.json').unlink()
    (run / 'results.json').unlink()
    r = _run(f'{argv} --legacy_search --stop_limit 1 --epochs 0 --ratio 0.6 --threshold 0.02 --load searched',
             tmp_path)
    assert r['search_epochs'] == 1 and (run / 'plan.json').exists()
    from model_hinge.surgery import select_kept

    info = load_torch(run / 'compression_information.pt', 'info')
    a1 = searched['features.1.0.body.0.1.weight']
    expected = select_kept(a1.squeeze().norm(dim=0), info['threshold'], 0.2)
    assert torch.equal(info['info_layer0'][0]['pindex'], expected)
    compressed = load_torch(run / 'model' / 'model_converging_latest.pt', 'compressed')
    assert torch.equal(compressed['features.1.0.body.0.1.weight'], a1[:, expected])


def test_load_original_param_compresses_the_bottleneck_teachers_convolutions(small_demo, tmp_path):
    flags = '--model Hinge_RESNET_BOTTLENECK --depth 11 --bottleneck'
    pretrain = _random_baseline(tmp_path, flags)
    _run(f'--template Demo {flags} --pretrain {pretrain} --teacher {pretrain} --load_original_param --batch_size 64 '
         '--epochs 0 --decay hingestep-50 --optimizer PG --ratio 0.6 --threshold 1e9 --stop_limit 0.1 '
         '--regularization_factor 1 --save original', tmp_path)
    run = tmp_path / 'runs' / 'original'
    teacher = load_torch(pretrain, 'teacher')
    state = load_torch(run / 'model' / 'model_converging_latest.pt', 'compressed')
    first, second = load_torch(run / 'compression_information.pt', 'info')['info_layer0']
    conv1, middle = teacher['features.1.0.body.0.weight'], teacher['features.1.0.body.3.weight']
    assert torch.equal(state['features.1.0.body.0.weight'], conv1[first['pindex']])
    assert torch.equal(state['features.1.0.body.3.weight'], middle[second['pindex']][:, first['pindex']])


def test_test_only_exports_the_evaluated_network(small_demo, tmp_path, monkeypatch):
    """--export writes what --test_only evaluates: the plan's merges folded (with --export_merge cheaper also
    every cheaper pair), its FLOPs those of results.json, its outputs the checkpoint's network's."""
    from conftest import hinge_model, zero_groups
    from model_hinge.surgery import compress
    from utils import export

    monkeypatch.setattr(export, 'onnx_missing', lambda: 'not needed here')      # ONNX: tests/test_export.py
    flags = '--template Demo --model Hinge_WIDE_RESNET --depth 10 --widen_factor 1'
    hm, _ = hinge_model(flags, init='p-identity')
    kept = zero_groups(hm)
    kept[hm.families[-1]] = torch.arange(hm.families[-1].size)     # the last conv2 keeps every basis filter
    compress(hm.families, kept, hm.net)
    save_torch(hm.net.state_dict(), tmp_path / 'compressed.pt')
    argv = f'{flags} --test_only --pretrain {tmp_path / "compressed.pt"}'
    r = _run(f'{argv} --save plan --export {tmp_path / "plan"}', tmp_path)
    c = _run(f'{argv} --save cheaper --export {tmp_path / "cheaper"} --export_merge cheaper', tmp_path)
    plan, cheaper = (json.loads((tmp_path / d / 'export.json').read_text()) for d in ('plan', 'cheaper'))
    assert (plan['flops'], plan['params']) == (r['flops_compressed'], r['params_compressed'])
    assert plan['folded_beyond_plan'] == [] and cheaper['folded_beyond_plan'] == ['layer3.0.conv2']
    assert cheaper['flops'] < plan['flops'] and c['top1_err'] == r['top1_err']
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = hm.net.eval()(x)
        for d in ('plan', 'cheaper'):
            assert torch.allclose(torch.export.load(tmp_path / d / 'model.pt2').module()(x), expected, atol=1e-5)
    assert 'Exported the network' in (tmp_path / 'runs' / 'cheaper' / 'log.txt').read_text()
    pretrain = _random_baseline(tmp_path, '--model Hinge_ResNet_Basic --depth 8 --downsample_type A')
    baseline = _run(f'--template Demo --model ResNet --depth 8 --downsample_type A --test_only --save base '
                    f'--pretrain {pretrain} --export {tmp_path / "base"}', tmp_path)
    meta = json.loads((tmp_path / 'base' / 'export.json').read_text())
    assert (meta['flops'], meta['flops_ratio']) == (baseline['flops'], 1.0)
    assert meta['artefacts']['torchscript']['within_tolerance']

