"""trainer.py: a real short training run, evaluation, NaN detection, history and learning rates."""

import pytest
import torch
import torch.nn as nn

from conftest import CIFAR_SUBSET, make_args
from data import build_data
from loss import Loss
from model import build_baseline
from trainer import BatchHooks, History, Trainer, describe_lrs, forward, match_parameter_layouts, set_learning_rates
from utils.board import Board
from utils.errors import NonFiniteError
from utils.io import load_torch, save_torch
from utils.rundir import ConsoleLog


def _trainer(argv: str, net=None):
    args = make_args(argv)
    torch.manual_seed(args.seed)
    data = build_data(args)
    net = net if net is not None else build_baseline(args)
    return Trainer(args, net, Loss(args.loss), data, ConsoleLog(), torch.device('cpu')), args


# Slow: beating chance by these margins takes two epochs of the whole CIFAR-10 subset (about 10,000 images through
# ResNet-8, some 20 s of one core); a quarter or half of it leaves the top-1 error at 74-80%.
@pytest.mark.slow
def test_short_real_training_lowers_the_loss_and_beats_chance(shared):
    trainer, args = _trainer(f'--template CIFAR10 --model ResNet --depth 8 --downsample_type A '
                             f'--dir_data {CIFAR_SUBSET} --batch_size 64 --print_every 1000')
    initial_loss, _, _ = trainer.evaluate()
    optimizer = torch.optim.SGD(trainer.net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for g in optimizer.param_groups:
        g['initial_lr'] = 0.1
    stats = [trainer.train_epoch(e, optimizer, 1.0, BatchHooks(), e) for e in (1, 2)]
    loss, top1, top5 = trainer.evaluate()
    assert stats[1]['train_loss'] < stats[0]['train_loss']
    assert loss < initial_loss
    assert top1 < 75.0 and top5 < 40.0          # chance: 90% and 50% error
    assert stats[1]['images_per_second'] > 0


class _NaNHooks(BatchHooks):
    def extra_loss(self):
        return torch.tensor(float('nan'))


def test_nan_stops_the_epoch_naming_epoch_and_batch(tiny_demo):
    trainer, _ = _trainer('--template Demo --model ResNet --depth 8 --downsample_type A --batch_size 16')
    optimizer = torch.optim.SGD(trainer.net.parameters(), lr=0.1)
    for g in optimizer.param_groups:
        g['initial_lr'] = 0.1
    with pytest.raises(NonFiniteError, match='the loss became NaN/inf in epoch 3, batch 1'):
        trainer.train_epoch(3, optimizer, 1.0, _NaNHooks(), 3)


class _InfGradientAtBatch(BatchHooks):
    """A finite loss whose gradient is inf at one batch, and a matrix flag raised at another."""

    def __init__(self, net, bad_batch, flag_batch):
        self.net, self.bad_batch, self.flag_batch, self.batch = net, bad_batch, flag_batch, 0

    def extra_loss(self):
        self.batch += 1
        if self.batch != self.bad_batch:
            return None
        return torch.sqrt((self.net.classifier.weight * 0).sum().abs())      # 0, with a NaN gradient

    def nonfinite(self):
        return torch.tensor(self.batch == self.flag_batch)


@pytest.mark.parametrize('bad,flag,message', [(2, 0, '^the gradients became NaN/inf in epoch 1, batch 2'),
                                              (0, 3, '^a sparsity-inducing matrix became NaN/inf in epoch 1, batch 3')])
def test_nonfinite_gradients_and_matrices_name_their_batch(tiny_demo, bad, flag, message):
    trainer, _ = _trainer('--template Demo --model ResNet --depth 8 --downsample_type A --batch_size 16')
    optimizer = torch.optim.SGD(trainer.net.parameters(), lr=0.1)
    for g in optimizer.param_groups:
        g['initial_lr'] = 0.1
    with pytest.raises(NonFiniteError, match=message):
        trainer.train_epoch(1, optimizer, 1.0, _InfGradientAtBatch(trainer.net, bad, flag), 1)


class _Constant(nn.Module):
    """Always ranks classes 0 > 1 > 2 > ... (ignores the input)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * torch.arange(10.0, 0.0, -1.0).expand(x.shape[0], 10)


def test_evaluation_counts_errors_and_restores_the_mode():
    trainer, _ = _trainer('--template Demo --model ResNet --depth 8', net=_Constant())
    trainer.net.train()
    loss, top1, top5 = trainer.evaluate()
    labels = trainer.data.test.labels
    assert trainer.net.training
    assert top1 == pytest.approx(100.0 * float((labels != 0).float().mean()), abs=1e-4)
    assert top5 == pytest.approx(100.0 * float((labels >= 5).float().mean()), abs=1e-4)
    logits = torch.arange(10.0, 0.0, -1.0).expand(len(labels), 10)
    assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, labels)), rel=1e-5)


def test_multi_crop_input_averages_the_logits():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    crops = torch.randn(2, 5, 3, 2, 2)
    expected = torch.stack([net(crops[:, i]) for i in range(5)], 1).mean(1)
    assert torch.allclose(forward(net, crops), expected, atol=1e-6)
    assert torch.equal(forward(net, crops[:, 0]), net(crops[:, 0]))


def test_history_best_flags_and_restored_logs(tmp_path):
    history = History(tmp_path, {'model': 'm'}, Board(tmp_path, False))
    for epoch, err in ((1, 50.0), (2, 40.0), (3, 45.0)):
        train = {'train_loss': 1.0 / epoch, 'train_top1_err': err + 5, 'train_top5_err': 1.0}
        history.add_epoch('search', epoch, train, (2.0 / epoch, err, 10.0), {})
        assert history.is_best('search', 1) == (epoch != 3)
    history.add_epoch('converging', 1, train, (0.5, 60.0, 20.0), {})
    assert history.is_best('converging', 1) and history.results['best_top1_err'] == 60.0
    assert history.best_of_stage('search', 'top1_err') == (40.0, 2)
    assert history.best_of_stage('converging', 'top1_err') == (60.0, 1)     # the stage's own epoch numbers
    restored = History(tmp_path, {'model': 'm'}, Board(tmp_path, False))
    restored.restore(history.results)
    assert torch.equal(restored.log_test, history.log_test) and torch.equal(restored.log_train, history.log_train)


def test_learning_rates_follow_the_schedule_and_multipliers():
    p, q = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{'params': [p], 'lr': 0.001, 'initial_lr': 0.001},
                           {'params': [q], 'lr': 0.1, 'initial_lr': 0.1}], lr=0.1)
    set_learning_rates(opt, 0.1, [0.5, 2.0])
    assert [g['lr'] for g in opt.param_groups] == pytest.approx([5e-5, 0.02])
    assert describe_lrs(opt) == 'Learning rate: Group 0 - 5e-05 / Group 1 - 0.02'


def test_loaded_optimizer_state_takes_the_layout_of_its_parameter(tmp_path):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
    conv(torch.randn(2, 3, 5, 5)).sum().backward()
    optimizer.step()
    save_torch(optimizer.state_dict(), tmp_path / 'optimizer.pt')
    resumed = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
    resumed.load_state_dict(load_torch(tmp_path / 'optimizer.pt', 'test'))
    match_parameter_layouts(resumed)
    buffer, original = (o.state[conv.weight]['momentum_buffer'] for o in (resumed, optimizer))
    assert buffer.stride() == conv.weight.stride() != torch.empty(conv.weight.shape).stride()
    assert torch.equal(buffer, original)
