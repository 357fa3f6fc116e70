"""model_hinge/prox.py: each operator against its closed form, edge cases, and both group directions."""

import math

import pytest
import torch

from model_hinge import prox
from model_hinge.groups import GroupBank, GroupFamily, Member

LAM = torch.tensor(0.5, dtype=torch.float64)


def _n(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_l1_soft_thresholds_the_norm():
    n = _n(0.0, 0.25, 0.5, 1.0, 2.0)
    scale = prox.l1(n, LAM.expand(5))
    assert scale[0] == 0 and scale[1] == 0
    assert scale[2] < 1e-7                      # exactly at the threshold: zero up to the 1e-8 guard
    assert torch.allclose(scale[3:] * n[3:], n[3:] - 0.5)


def test_l1_2_scales_by_the_matrix_norm_of_the_survivors():
    n, lam = _n(3.0, 4.0, 0.5), torch.full((3,), 1.0, dtype=torch.float64)
    family = torch.tensor([0, 0, 1])
    scale = prox.l1_2(n, lam, family, 2)
    w_norm = math.sqrt(2 ** 2 + 3 ** 2)
    assert torch.allclose(scale[:2], torch.tensor([(1 + 1 / w_norm) * (1 - 1 / 3), (1 + 1 / w_norm) * (1 - 1 / 4)],
                                                  dtype=torch.float64))
    assert scale[2] == 0                        # every group of matrix 1 is below the threshold: zero, not NaN


def test_half_thresholding_solves_its_stationarity_condition():
    lam = 0.5
    threshold = 54 ** (1 / 3) / 4 * lam ** (2 / 3)
    n = _n(0.0, threshold, threshold * 1.01, 1.0, 3.0)
    x = prox.l1d2(n, torch.full((5,), lam, dtype=torch.float64)) * n
    assert x[0] == 0 and x[1] == 0              # at the threshold the operator still returns 0
    # Nonzero outputs minimise (x - y)^2 + lam * sqrt(x): 2 (x - y) + lam / (2 sqrt(x)) = 0.
    residual = 2 * (x[2:] - n[2:]) + lam / (2 * x[2:].sqrt())
    assert torch.allclose(residual, torch.zeros(3, dtype=torch.float64), atol=1e-9)


def test_logsum_solves_its_stationarity_condition():
    eps, lam = prox.EPS, 0.04
    n = _n(0.0, 0.1, 0.5, 2.0)
    x = prox.logsum(n, torch.full((4,), lam, dtype=torch.float64)) * n
    assert x[0] == 0 and x[1] == 0              # (0.1 - eps)^2 < 4 (lam - 0.1 eps): no real root
    # Nonzero outputs solve x - y + lam / (eps + x) = 0 (the larger root).
    assert torch.allclose(x[2:] - n[2:] + lam / (eps + x[2:]), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.equal(prox.logsum(n[2:], torch.zeros(2, dtype=torch.float64)), torch.ones(2, dtype=torch.float64))


def test_l0_hard_thresholds_at_sqrt_two_lambda():
    n = _n(0.0, 0.99, 1.0, 1.01)
    assert prox.l0(n, LAM.expand(4)).tolist() == [0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize('dim,norms,expected', [
    (0, [3.0, 6.0], [[0.0, 0.0, 0.5], [7 / 6, 14 / 6, 14 / 6]]),      # rows scaled by 1 - 2.5/3, 1 - 2.5/6
    (1, [2.0, 4.0, 5.0], [[0.0, 0.0, 1.5], [0.0, 1.5, 2.0]]),         # columns by 0, 1 - 2.5/4, 1 - 2.5/5
])
def test_groups_are_rows_or_columns(dim, norms, expected):
    """By hand: A = [[0, 0, 3], [2, 4, 4]] has row norms 3, 6 and column norms 2, 4, 5; l1 at lambda 2.5."""
    a = torch.nn.Parameter(torch.tensor([[0.0, 0.0, 3.0], [2.0, 4.0, 4.0]]).view(2, 3, 1, 1))
    bank = GroupBank([GroupFamily(0, 1, 0, [Member(a, dim)])])
    assert torch.allclose(bank.norms(), torch.tensor(norms))
    lam = torch.full((len(norms),), 2.5)
    bank.scale_(prox.scale('l1', bank.norms(), lam, bank.group_family, 1))
    assert torch.allclose(a.detach().squeeze(), torch.tensor(expected))


def test_unknown_regularizer():
    with pytest.raises(ValueError):
        prox.scale('l3', _n(1.0), LAM.expand(1), torch.zeros(1, dtype=torch.long), 1)
