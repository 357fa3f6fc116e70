"""loss/: the --loss syntax, device-side error accounting, distillation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from loss import ErrorMeter, Loss, distillation
from utils.errors import UsageError


def test_weighted_sum_of_terms():
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(Loss('1*CE')(logits, labels), F.cross_entropy(logits, labels))
    expected = 0.5 * F.cross_entropy(logits, labels) + 2 * F.nll_loss(logits, labels)
    assert torch.allclose(Loss('0.5*CE+2*NLL')(logits, labels), expected)
    one_hot = F.one_hot(labels, 4).float()
    assert torch.allclose(Loss('1*MSE')(logits, labels), ((logits - one_hot) ** 2).mean())


@pytest.mark.parametrize('spec', ['CE', '1*XE', 'a*CE', '1*CE+'])
def test_bad_loss_specs(spec):
    with pytest.raises(UsageError, match='--loss'):
        Loss(spec)


def test_error_meter_counts_top1_and_top5_misses():
    # Six classes; the label's rank in each row is 1, 2, 6, 1 (rank 6 misses top-5 as well).
    logits = torch.tensor([[9., 1, 2, 3, 4, 5], [1., 9, 8, 3, 4, 5], [9., 8, 7, 6, 5, 1], [0., 0, 0, 0, 0, 9]])
    labels = torch.tensor([0, 2, 5, 5])
    meter = ErrorMeter(torch.device('cpu'))
    meter.update(torch.tensor(2.0), logits[:2], labels[:2])
    meter.update(torch.tensor(4.0), logits[2:], labels[2:])
    loss, top1, top5 = meter.result()
    assert (loss, top1, top5) == (3.0, 50.0, 25.0)


def test_errors_round_through_float32_like_the_original_log():
    meter = ErrorMeter(torch.device('cpu'))
    meter.wrong += torch.tensor([703, 159])
    meter.count = 1017
    _, top1, top5 = meter.result()
    assert top1 == float(np.float32(70300.0) / np.float32(1017)) == 69.1248779296875


def test_distillation_closed_form():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0]])
    t = 4.0
    p = torch.softmax(teacher / t, 1)[0]
    q = torch.softmax(student / t, 1)[0]
    kl = sum(float(p[i]) * math.log(float(p[i]) / float(q[i])) for i in range(2))
    assert float(distillation(student, teacher, t)) == pytest.approx(kl * t * t, rel=1e-5)
    assert float(distillation(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-5)
