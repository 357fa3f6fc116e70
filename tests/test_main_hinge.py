"""main_hinge.py end to end: the original's command lines and checkpoints, clear failures, all four phases."""

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main_hinge
from conftest import CIFAR_SUBSET, FIXTURES, ROOT, reference_flops, unrendered_save
from data import cifar, demo
from utils import plot
from utils.io import load_torch, save_torch

# Every run writes its plot files empty (rendering them is most of a demo run's time; tests/test_report.py renders
# them), and the training runs use the tiny demo set at --batch_size 16: 5 batches an epoch, 1 test batch.
pytestmark = pytest.mark.usefixtures('unrendered_plots')

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
    assert sorted(p.name for p in (tmp_path / which).iterdir()) == ['config.txt', 'log.txt', 'report.md',
                                                                   'results.json', 'test_log.pt']
    assert RESULT_KEYS <= set(r)
    for key in ('flops', 'params', 'flops_compressed', 'params_compressed', 'top1_err', 'top5_err'):
        assert r[key] == expected.get(key, r['flops'] if key == 'flops_compressed' else r['params']), key
    assert r['loss'] == pytest.approx(expected['loss'], rel=1e-6)


R8 = '--template Demo --model ResNet --depth 8 --downsample_type A --epochs 1'
H8 = '--template Demo --model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A --ratio 0.5'
BAD_INPUTS = [
    ('--model ResNet99', '--model ResNet99 is unknown'),
    ('--template Demo --model ResNet --depth 7', '--depth 7 cannot be built'),
    (f'{R8} --depth 0', '--depth 0 must be at least 1'),
    ('--template Demo --model ResNeXt --depth 11 --cardinality 0', '--cardinality 0 must be at least 1'),
    ('--template Demo --model ResNeXt --depth 11 --bottleneck_width 0', '--bottleneck_width 0'),
    ('--template Demo --model Wide_ResNet --depth 10 --widen_factor -1', '--widen_factor -1 must be at least 1'),
    ('--template Demo --model DenseNet --depth 10 --k 0', '--k 0 must be at least 1'),
    ('--template Demo --model DenseNet --depth 10 --reduction 0', '--reduction 0 must be in (0, 1]'),
    ('--template Demo --model Wide_ResNet --depth 10 --dropout_rate 1', '--dropout_rate 1 must be in [0, 1)'),
    (f'{R8} --kernel_size 0', '--kernel_size 0 must be an odd number'),
    (f'{R8} --kernel_size 4', '--kernel_size 4 must be an odd number'),
    (f'{R8} --n_colors 1', '--n_colors 1'),
    (f'{R8} --momentum -1', '--momentum -1 must be in [0, 1)'),
    (f'{R8} --momentum 1.5', '--momentum 1.5'),
    (f'{R8} --weight_decay -1', '--weight_decay -1 must be at least 0'),
    (f'{R8} --lr 0', '--lr 0 must be greater than 0'),
    (f'{R8} --lr nan', '--lr nan must be greater than 0'),
    (f'{R8} --gamma 0', '--gamma 0 must be in (0, 1]'),
    (f'{R8} --linear 0', '--linear 0 must be at least 1'),
    (f'{R8} --epochs -1', '--epochs -1 must be at least 0'),
    (f'{R8} --batch_size 0', '--batch_size 0 must be at least 1'),
    (f'{R8} --print_every 0', '--print_every 0'),
    (f'{R8} --n_threads -1', '--n_threads -1'),
    (f'{R8} --n_GPUs 0', '--n_GPUs 0 must be at least 1'),
    (f'{R8} --epsilon 0', '--epsilon 0'),
    (f'{R8} --betas 1.5,0.9', '--betas 1.5'),
    (f'{R8} --nesterov --momentum 0', '--nesterov needs a --momentum'),
    (f'{R8} --decay cosine', '--decay cosine'),
    (f'{R8} --decay step-a', '--decay step-a'),
    (f'{R8} --loss 1*FOO', '--loss 1*FOO'),
    (f'{R8} --optimizer PG', '--optimizer PG'),
    (f'{R8} --optimizer Foo', "argument --optimizer: invalid choice: 'Foo'"),
    (f'{R8} --epochs 1.5', "argument --epochs: invalid int value: '1.5'"),
    (f'{R8} --no_such_flag 3', 'unrecognized arguments: --no_such_flag 3'),
    (f'{R8} --precision half', '--precision half needs a GPU'),
    (f'{R8} --crop 7', '--crop 7 must be 1, 5 or 10'),
    (f'{R8} --crop 5', '--crop 5: multi-crop evaluation is for ImageNet'),
    (f'{R8} --data_train foo', '--data_train foo is not a known data set'),
    (f'{R8} --data_test CIFAR100', '--data_test CIFAR100 conflicts with --template Demo'),
    ('--model ResNet --depth 8 --data_train CIFAR100', '--data_test CIFAR10 differs from --data_train CIFAR100'),
    ('--template CIFAR1O_ResNet --model ResNet --depth 8', "--template CIFAR1O_ResNet: 'CIFAR1O' is not a known"),
    (f'{R8} --save ../outside', "--save '../outside' is not a run name"),
    (f'{R8} --save /tmp/absolute', "--save '/tmp/absolute' is not a run name"),
    (f'{R8} --save a;b', "--save 'a;b' is not a run name"),
    (f'{R8} --save .', "--save '.' is not a run name"),
    (f'{R8} --save x/../y', "--save 'x/../y' is not a run name"),
    (f'{R8} --save existing/log.txt', "--save 'existing/log.txt' is a file inside --dir_save"),
    (f'{R8} --save existing/log.txt/run', "--save 'existing/log.txt/run' leads through a file (existing/log.txt)"),
    (f'{R8} --resume 3', '--resume 3 needs --load RUN'),
    (f'{R8} --load missing', '--load: '),
    (f'{R8} --load existing --reset', '--reset cannot be combined with --load'),
    (f'{H8} --ratio 0', '--ratio 0 must be in (0, 1]'),
    ('--template Demo --model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A', '--ratio 0.2 cannot be reached'),
    (f'{H8} --ratio -0.5', '--ratio -0.5 must be in (0, 1]'),
    (f'{H8} --ratio 1.5', '--ratio 1.5 must be in (0, 1]'),
    (f'{H8} --ratio 0.01', '--ratio 0.01 cannot be reached'),
    (f'{H8} --q 0', '--q 0 must be greater than 0'),
    (f'{H8} --stop_limit -1', '--stop_limit -1 must be at least 0'),
    (f'{H8} --regularization_factor -1', '--regularization_factor -1 must be greater than 0'),
    (f'{H8} --annealing_factor -2', '--annealing_factor -2 must be at least 0'),
    (f'{H8} --lr_factor -1', '--lr_factor -1 must be greater than 0'),
    (f'{H8} --lr_ratio 0', '--lr_ratio 0 must be greater than 0'),
    (f'{H8} --remain_percentage 0', '--remain_percentage 0 must be in (0, 1]'),
    (f'{H8} --prox_freq 0', '--prox_freq 0 must be at least 1'),
    (f'{H8} --channel_multiple 0', '--channel_multiple 0 must be at least 1'),
    (f'{H8} --threshold -1', '--threshold -1 must be at least 0'),
    (f'{H8} --optimizer Adam', '--optimizer Adam cannot train a Hinge model'),
    (f'{H8} --distillation --teacher ""', '--distillation and --load_original_param need --teacher'),
    (f'{H8} --distillation --teacher missing.pt', '--teacher: file missing.pt does not exist'),
    (f'{H8} --test_only', '--test_only needs a checkpoint'),
    (f'{H8} --pretrain missing.pt', '--pretrain: file missing.pt does not exist'),
    (f'{H8} --pretrain notes.txt', 'notes.txt is not a PyTorch file'),
    (f'{H8} --pretrain nan.pt', 'tensor features.0.0.weight holds NaN or inf'),
    (f'{H8} --pretrain other.pt', 'was written for another architecture'),
    (f'{H8} --test_only --pretrain nan.pt', 'tensor features.0.0.weight holds NaN or inf'),
    (f'{R8} --test_only --pretrain nan.pt', 'tensor features.0.0.weight holds NaN or inf'),
    (f'{H8} --dir_save afile', '--dir_save afile is a file'),
    (f'{R8} --export out', '--export writes the evaluated network'),
    (f'{R8} --test_only --pretrain base.pt --export notes.txt', 'is a file'),
    ('--report nowhere', 'is not a run directory'),
    (f'{R8} --csv', '--csv formats the --report table'),
    (f'{R8} --export_merge cheaper', '--export_merge chooses'),
]


@pytest.mark.parametrize('argv,fragment', BAD_INPUTS, ids=[c[1][:40] for c in BAD_INPUTS])
def test_bad_inputs_exit_2_with_one_sentence_and_change_nothing(tmp_path, capsys, monkeypatch, argv, fragment):
    from model import build_baseline

    monkeypatch.chdir(tmp_path)
    (tmp_path / 'notes.txt').write_text('not a checkpoint')
    (tmp_path / 'afile').write_text('x')
    torch.manual_seed(0)
    state = build_baseline(main_hinge.option.parse_args(R8.split())).state_dict()
    torch.save(state, tmp_path / 'base.pt')
    torch.save({k: v.float().fill_(float('nan')) if k == 'features.0.0.weight' else v for k, v in state.items()},
               tmp_path / 'nan.pt')
    torch.save(build_baseline(main_hinge.option.parse_args('--template Demo --model ResNet --depth 14 '
                                                           '--downsample_type A'.split())).state_dict(),
               tmp_path / 'other.pt')
    runs = tmp_path / 'runs'
    (runs / 'existing' / 'model').mkdir(parents=True)
    (runs / 'existing' / 'log.txt').write_text('an earlier run\n')
    before = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob('*'))
    dir_save = '' if '--dir_save' in argv else f' --dir_save {runs}'
    assert main_hinge.main(shlex.split(f'{argv}{dir_save} --save bad --cpu')
                           if '--save' not in argv else shlex.split(f'{argv}{dir_save} --cpu')) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'Traceback' not in err and fragment in err, err
    assert sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob('*')) == before


def test_data_that_cannot_be_downloaded_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cifar, '_download', lambda name, root: (_ for _ in ()).throw(OSError('network unreachable')))
    argv = f'--template CIFAR10 --model ResNet --depth 20 --dir_data {tmp_path}/none --dir_save {tmp_path}/runs'
    assert main_hinge.main(argv.split()) == 2
    assert 'could not be downloaded' in capsys.readouterr().err and not (tmp_path / 'runs').exists()


def test_original_checkpoints_of_another_architecture_are_refused(shared, tmp_path, capsys):
    baseline = FIXTURES / 'resnet20' / 'baseline.pt'
    for model in ('ResNet --depth 56', 'Hinge_ResNet_Basic_SVD --depth 20'):
        argv = (f'--template CIFAR10 --model {model} --downsample_type A --test_only --pretrain {baseline} '
                f'--dir_data {CIFAR_SUBSET} --dir_save {tmp_path}/runs')
        assert main_hinge.main(argv.split()) == 2
        assert 'another architecture' in capsys.readouterr().err and not (tmp_path / 'runs').exists()


def test_cli_process_exit_codes(tmp_path, capsys):
    done = subprocess.run([sys.executable, str(ROOT / 'main_hinge.py'), '--model', 'nope', '--dir_save', str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith('main_hinge.py: error: --model nope')
    assert 'Traceback' not in done.stderr
    with pytest.raises(SystemExit) as exit_help:      # in this process: the same parser, without a second start-up
        main_hinge.main(['--help'])
    assert exit_help.value.code == 0 and 'Hinge compression:' in capsys.readouterr().out


def test_training_then_test_only_reproduces_the_logged_error(tiny_demo, tmp_path):
    argv = '--template Demo --model ResNet --depth 8 --downsample_type A --batch_size 16'
    trained = _run(f'{argv} --epochs 1 --save train', tmp_path)
    assert trained['stage'] == 'baseline' and trained['epoch'] == 1
    files = {p.name for p in (tmp_path / 'runs' / 'train').rglob('*')}
    assert {'model_latest.pt', 'model_best.pt', 'optimizer.pt', 'epochs.pt', 'loss.pt', 'train_log.pt',
            'test_log.pt', 'log.txt', 'config.txt', 'results.json', 'NLL_Test.pdf'} <= files
    tested = _run(f'{argv} --test_only --save check --pretrain {tmp_path / "runs" / "train"}', tmp_path)
    assert (tested['top1_err'], tested['top5_err']) == (trained['top1_err'], trained['top5_err'])
    assert tested['loss'] == pytest.approx(trained['loss'], rel=1e-6)


@pytest.fixture(scope='module')
def trained_resnet8(tmp_path_factory) -> str:
    """A ResNet-8 trained for 2 epochs on the tiny demo set, once for the tests that start from it."""
    root = tmp_path_factory.mktemp('baseline')
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, 'N_TRAIN', 80)
        patch.setattr(demo, 'N_TEST', 40)
        patch.setattr(plot, '_save', unrendered_save)
        _run('--template Demo --model ResNet --depth 8 --downsample_type A --epochs 2 --batch_size 16 --save base',
             root)
    return str(root / 'runs' / 'base' / 'model' / 'model_latest.pt')


HINGE = ('--template Demo --model {model} --depth 8 --downsample_type A --pretrain {pretrain} --teacher {pretrain} '
         '--batch_size 16 --epochs 2 --decay hingestep-50 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG '
         '--ratio 0.5 --regularization_factor 3 --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing '
         '--distillation')


def _files(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob('*'))


def _counted_flops(flags: str, checkpoint: Path) -> tuple[int, int]:
    """FLOPs of the baseline of `flags` and of the network a checkpoint holds, by the independent hook counter
    (the checkpoint's shapes loaded into the Hinge model, merged first for a merged checkpoint)."""
    from model import build_baseline
    from model_hinge import adapter_for
    from model_hinge.core import HingeModel
    from model_hinge.surgery import load_state

    args = main_hinge.option.parse_args(f'--template Demo {flags}'.split())
    adapter = adapter_for(args.model)
    baseline = build_baseline(args, adapter.baseline)
    net = copy.deepcopy(baseline)
    hm = HingeModel(net, adapter.plan(net), (3, 32, 32), None)
    if 'merge' in checkpoint.name:
        hm.merge()
    load_state(net, load_torch(checkpoint, 'checkpoint'), 'checkpoint', adapt=True)
    return reference_flops(baseline, (3, 32, 32)), reference_flops(net, (3, 32, 32))


def test_resuming_both_stages_equals_an_uninterrupted_run(tiny_demo, tmp_path, trained_resnet8):
    pretrain = trained_resnet8
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
    assert info['epoch_continue'] == 1 + sum(h['stage'] == 'search' for h in whole['history'])
    tested = _run(f'--template Demo --model Hinge_ResNet_Basic_SVD --depth 8 --downsample_type A --test_only '
                  f'--save tested --pretrain {run_a / "model" / "model_converging_latest.pt"}', tmp_path)
    assert (tested['top1_err'], tested['flops_compressed']) == (whole['top1_err'], whole['flops_compressed'])


def test_vgg_with_the_legacy_search(tiny_demo, tmp_path):
    pretrain = _random_baseline(tmp_path, '--model Hinge_VGG --vgg_type A')
    r = _run(f'--template Demo --model Hinge_VGG --vgg_type A --pretrain {pretrain} --batch_size 16 --epochs 1 '
             f'--decay hingestep-50 --lr 0.05 --lr_ratio 0.01 --optimizer PG --ratio 0.6 --threshold 5e-2 '
             f'--regularization_factor 2 --stop_limit 0.3 --legacy_search --save hvgg', tmp_path)
    assert r['stage'] == 'converging' and r['flops_ratio'] <= 0.9
    assert r['flops_compressed'] < r['flops'] and r['params_compressed'] < r['params']
    log = (tmp_path / 'runs' / 'hvgg' / 'log.txt').read_text()
    assert 'Iter 1: current step=0.0100' in log and 'Converging Stage (Searching Epoch' in log
    searched = [e for e in r['history'] if e['stage'] == 'search'][-1]['top1_err']
    assert (f'Top-1 error: baseline {r["baseline_top1_err"]:.2f}%, end of the search {searched:.2f}%, right after '
            f'compression {r["compressed_top1_err"]:.2f}%, after converging {r["top1_err"]:.2f}%') in log


def test_merging_models_save_the_merged_network_after_converging(tiny_demo, tmp_path, trained_resnet8):
    pretrain = trained_resnet8
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
    flags = '--model Hinge_ResNet_Basic --depth 8 --downsample_type A'
    assert (r['flops'], r['flops_compressed']) == _counted_flops(flags, merged_file)


def test_reset_starts_the_run_directory_afresh(tiny_demo, tmp_path):
    argv = '--template Demo --model ResNet --depth 8 --downsample_type A --epochs 1 --save again'
    _run(argv, tmp_path)
    (tmp_path / 'runs' / 'again' / 'stale.txt').write_text('x')
    _run(f'{argv} --reset', tmp_path)
    assert not (tmp_path / 'runs' / 'again' / 'stale.txt').exists()
    assert (tmp_path / 'runs' / 'again' / 'log.txt').read_text().count('[Epoch 1]') == 1


def test_load_original_param_compresses_the_teachers_weights(tiny_demo, tmp_path, trained_resnet8):
    from model import build_baseline
    from model_hinge.init import factorize

    pretrain = trained_resnet8
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


def test_evaluating_a_run_with_load_appends_to_its_results(tiny_demo, tmp_path):
    argv = '--template Demo --model ResNet --depth 8 --downsample_type A'
    trained = _run(f'{argv} --epochs 2 --save run', tmp_path)
    test_log = load_torch(tmp_path / 'runs' / 'run' / 'test_log.pt', 'log')
    tested = _run(f'{argv} --test_only --load run', tmp_path)
    assert [h['stage'] for h in tested['history']] == ['baseline', 'baseline', 'test']
    assert tested['top1_err'] == trained['top1_err']
    assert torch.equal(load_torch(tmp_path / 'runs' / 'run' / 'test_log.pt', 'log'), test_log)
    assert _results(tmp_path, 'run')['stage'] == 'test'


def test_a_resumed_legacy_search_equals_an_uninterrupted_one(tiny_demo, tmp_path, trained_resnet8):
    """Interrupted after search epoch 1 and resumed without --pretrain: the same epochs, errors and tensors
    (compressible tensors frozen from the first resumed epoch; layer weights from the run's plan.json)."""
    pretrain = trained_resnet8
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
def test_every_hinge_model_runs_the_method_and_its_checkpoints_evaluate_the_same(tiny_demo, tmp_path, model):
    flags = f'--model {model} {FAMILIES[model]}'
    pretrain = _random_baseline(tmp_path, flags)
    r = _run(f'--template Demo {flags} --pretrain {pretrain} --teacher {pretrain} --distillation --batch_size 16 '
             '--epochs 1 --decay hingestep-50 --lr 0.05 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG --ratio 0.6 '
             '--threshold 1e9 --stop_limit 0.1 --layer_balancing --save run', tmp_path)
    assert (r['stage'], r['epoch'], r['search_epochs']) == ('converging', 1, 1)   # 1e9: every group would go
    run = tmp_path / 'runs' / 'run'
    files = ['model_converging_latest.pt'] + (['model_merge_latest.pt'] if (run / 'model' /
                                                                            'model_merge_latest.pt').exists() else [])
    assert (len(files) == 2) == (model in ('Hinge_ResNet_Basic', 'Hinge_DenseNet', 'Hinge_WIDE_RESNET'))
    baseline, compressed = _counted_flops(flags, run / 'model' / files[-1])     # the merged view where it merges
    assert (r['flops'], r['flops_compressed']) == (baseline, compressed) and abs(compressed / baseline - 0.6) < 0.05
    for name in files:
        tested = _run(f'--template Demo {flags} --test_only --save test_{name} --pretrain {run / "model" / name}',
                      tmp_path)
        assert tested['top1_err'] == pytest.approx(r['top1_err'], abs=1e-6)
        assert (tested['flops_compressed'], tested['params_compressed']) == (r['flops_compressed'],
                                                                             r['params_compressed'])
    assert 'plan' in json.loads((run / 'plan.json').read_text())


def test_a_searched_run_without_plan_or_results_compresses_at_a_given_threshold(tiny_demo, tmp_path, trained_resnet8):
    """The original's run directories have neither plan.json nor results.json: resuming one re-plans, and
    --stop_limit 1 with the original's threshold walk compresses it at --threshold without further training."""
    pretrain = trained_resnet8
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


def test_load_original_param_compresses_the_bottleneck_teachers_convolutions(tiny_demo, tmp_path):
    flags = '--model Hinge_RESNET_BOTTLENECK --depth 11 --bottleneck'
    pretrain = _random_baseline(tmp_path, flags)
    _run(f'--template Demo {flags} --pretrain {pretrain} --teacher {pretrain} --load_original_param --batch_size 16 '
         '--epochs 0 --decay hingestep-50 --optimizer PG --ratio 0.6 --threshold 1e9 --stop_limit 0.1 '
         '--regularization_factor 1 --save original', tmp_path)
    run = tmp_path / 'runs' / 'original'
    teacher = load_torch(pretrain, 'teacher')
    state = load_torch(run / 'model' / 'model_converging_latest.pt', 'compressed')
    first, second = load_torch(run / 'compression_information.pt', 'info')['info_layer0']
    conv1, middle = teacher['features.1.0.body.0.weight'], teacher['features.1.0.body.3.weight']
    assert torch.equal(state['features.1.0.body.0.weight'], conv1[first['pindex']])
    assert torch.equal(state['features.1.0.body.3.weight'], middle[second['pindex']][:, first['pindex']])


def test_nan_in_training_stops_with_exit_3_and_keeps_the_last_finished_epoch(tiny_demo, tmp_path, capsys,
                                                                             monkeypatch):
    from loss import Loss

    argv = f'{R8} --epochs 2 --batch_size 16 --save diverged --dir_save {tmp_path / "runs"} --cpu'.split()
    calls, real_forward = [0], Loss.forward

    def forward(self, logits, labels):
        calls[0] += 1
        value = real_forward(self, logits, labels)
        return value * float('nan') if calls[0] == 6 + 3 else value     # epoch 1: 5 batches and 1 test batch

    monkeypatch.setattr(Loss, 'forward', forward)
    assert main_hinge.main(argv) == 3
    assert 'became NaN/inf in epoch 2, batch 3' in capsys.readouterr().err
    run = tmp_path / 'runs' / 'diverged'
    assert load_torch(run / 'epochs.pt', 'epochs') == 1
    assert all(torch.isfinite(v).all() for v in load_torch(run / 'model' / 'model_latest.pt', 'm').values())


def test_an_interrupted_run_prints_its_resume_command_which_finishes_it_identically(tiny_demo, tmp_path, capsys,
                                                                                     monkeypatch):
    import signal

    import trainer
    from utils.errors import Interrupted

    argv = f'{R8} --epochs 2 --batch_size 16 --dir_save {tmp_path / "runs"} --cpu'
    assert main_hinge.main(f'{argv} --save whole'.split()) == 0
    checks, real_check = [0], trainer.stop_if_asked

    def stop_at_the_eighth_check(where):               # epoch 1: 5 batches and 1 test batch
        checks[0] += 1
        if checks[0] == 8:
            raise Interrupted(signal.SIGINT, where)
        real_check(where)

    monkeypatch.setattr(trainer, 'stop_if_asked', stop_at_the_eighth_check)
    assert main_hinge.main(f'{argv} --save parts --reset'.split()) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert 'SIGINT in epoch 2, batch 2 of 5' in err
    command = shlex.split(err.split('Resume with:')[1].strip())
    assert command[:2] == ['python', 'main_hinge.py'] and command[-2:] == ['--load', 'parts']
    assert '--reset' not in command
    monkeypatch.setattr(trainer, 'stop_if_asked', real_check)
    assert main_hinge.main(command[2:]) == 0
    whole, parts = _results(tmp_path, 'whole'), _results(tmp_path, 'parts')
    assert [(h['epoch'], h['loss'], h['top1_err']) for h in whole['history']] == \
           [(h['epoch'], h['loss'], h['top1_err']) for h in parts['history']]


def test_the_same_seed_gives_bit_identical_runs(tiny_demo, tmp_path):
    argv = f'{R8} --epochs 2 --batch_size 16 --seed 7'
    first, second = (_run(f'{argv} --save run{i}', tmp_path) for i in (1, 2))
    assert [(h['loss'], h['train_loss']) for h in first['history']] == \
           [(h['loss'], h['train_loss']) for h in second['history']]
    a, b = (load_torch(tmp_path / 'runs' / f'run{i}' / 'model' / 'model_latest.pt', 'm') for i in (1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_n_gpus_above_one_relaunches_the_same_command_through_torchrun(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(main_hinge.os, 'execv', lambda path, argv: calls.append(argv) or sys.exit(0))
    monkeypatch.setattr(main_hinge.os, 'cpu_count', lambda: 2)
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    argv = f'{R8} --cpu --n_GPUs 2 --save multi --dir_save {tmp_path}'.split()
    with pytest.raises(SystemExit):
        main_hinge.main(argv)
    (command,) = calls
    assert command[1:5] == ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
    assert command[5].endswith('main_hinge.py') and command[6:] == argv
    assert not (tmp_path / 'multi').exists()


class Relaunched(Exception):
    """Raised by the stand-in for os.execv: the command would have become torchrun."""


@pytest.mark.parametrize('cuda,flags,limit,unit', [(False, '', 4, 'CPU core'), (True, ' --cpu', 4, 'CPU core'),
                                                   (True, '', 2, 'GPU')], ids=['no GPU', '--cpu', 'GPUs'])
def test_n_gpus_beyond_what_the_machine_holds_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch,
                                                                                 cuda, flags, limit, unit):
    """A machine with 4 CPU cores and 2 GPUs: without GPUs (or with --cpu) at most 4 processes, else at most 2."""
    def execv(path, argv):
        raise Relaunched(argv)

    monkeypatch.setattr(main_hinge.os, 'execv', execv)
    monkeypatch.setattr(main_hinge.os, 'cpu_count', lambda: 4)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2 if cuda else 0)
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    argv = f'{R8}{flags} --save multi --dir_save {tmp_path / "runs"}'
    for processes in (limit + 1, 1_000_000_000):
        assert main_hinge.main(f'{argv} --n_GPUs {processes}'.split()) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f'--n_GPUs {processes}' in err and f'{limit} {unit}' in err, err
        assert f'use at most {limit}' in err
    assert not (tmp_path / 'runs').exists()
    with pytest.raises(Relaunched, match=f'--nproc_per_node={limit}'):
        main_hinge.main(f'{argv} --n_GPUs {limit}'.split())


def test_test_only_exports_the_evaluated_network(tiny_demo, tmp_path, monkeypatch):
    """--export writes what --test_only evaluates: the plan's merges folded (by default also every cheaper pair;
    --export_merge plan folds only the plan's), its FLOPs those of results.json, its outputs the checkpoint's
    network's."""
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
    r = _run(f'{argv} --save plan --export {tmp_path / "plan"} --export_merge plan', tmp_path)
    c = _run(f'{argv} --save cheaper --export {tmp_path / "cheaper"}', tmp_path)     # cheaper: the default
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

