"""model_hinge/init.py: every initialisation, and that SVD-based ones reproduce the convolution."""

import pytest
import torch

from model_hinge.init import METHODS, factorize


def _product(new_weight, matrix):
    """A * W' as one weight (c_out, c_in, k, k)."""
    return torch.einsum('om,mikl->oikl', matrix.flatten(1), new_weight)


@pytest.mark.parametrize('shape', [(16, 16, 3, 3), (32, 16, 3, 3), (64, 3, 3, 3), (12, 40, 1, 1)])
@pytest.mark.parametrize('method', ['svd', 'svd2', 'p-identity'])
def test_product_reconstructs_the_convolution(shape, method):
    torch.manual_seed(0)
    w = torch.randn(shape)
    new_weight, matrix = factorize(w, method)
    assert matrix.shape[:2] == (shape[0], new_weight.shape[0]) and matrix.shape[2:] == (1, 1)
    assert torch.allclose(_product(new_weight, matrix), w, atol=1e-5)


def test_svd2_puts_the_singular_values_in_a_and_svd_in_the_basis():
    torch.manual_seed(1)
    w = torch.randn(8, 4, 3, 3)
    basis, matrix = factorize(w, 'svd2')
    flat = basis.flatten(1)
    assert torch.allclose(flat @ flat.t(), torch.eye(8), atol=1e-5)            # orthonormal basis filters
    singular = torch.linalg.svdvals(w.flatten(1))
    assert torch.allclose(matrix.squeeze().norm(dim=0), singular, atol=1e-4)   # column norms = sigma
    basis, matrix = factorize(w, 'svd')
    assert torch.allclose(matrix.squeeze() @ matrix.squeeze().t(), torch.eye(8), atol=1e-5)
    assert torch.allclose(basis.flatten(1).norm(dim=1), singular, atol=1e-4)


def test_fewer_rows_than_filters_keeps_only_the_basis_with_svd2():
    basis, matrix = factorize(torch.randn(64, 3, 3, 3), 'svd2')
    assert basis.shape == (27, 3, 3, 3) and matrix.shape == (64, 27, 1, 1)


@pytest.mark.parametrize('method', ['p-disturbance-u', 'p-disturbance-n'])
@pytest.mark.parametrize('dim', [0, 1])
def test_disturbed_identity_is_normalised_along_the_groups(method, dim):
    torch.manual_seed(2)
    w = torch.randn(6, 4, 3, 3)
    new_weight, matrix = factorize(w, method, group_dim=dim, scale=0.05)
    a = matrix.squeeze()
    assert torch.equal(new_weight, w)
    assert torch.allclose(a.norm(dim=1 - dim), torch.ones(6), atol=1e-6)
    assert (a - torch.eye(6)).abs().max() < 0.2


def _normal(t: torch.Tensor, std: float) -> None:
    """Drawn from N(0, std^2): mean about 0, that standard deviation, and a normal's 68.3% of the values within
    one std (a uniform draw has 57.7%, a constant 0% or 100%)."""
    assert abs(float(t.mean())) < 4 * std / t.numel() ** 0.5
    assert float(t.std()) == pytest.approx(std, rel=0.05)
    assert float((t.abs() < std).float().mean()) == pytest.approx(0.683, abs=0.03)


def test_p_random_keeps_w_and_draws_a_from_xavier_normal():
    w = torch.randn(64, 8, 3, 3)
    torch.manual_seed(3)
    kept, a = factorize(w, 'p-random')
    assert torch.equal(kept, w) and a.shape == (64, 64, 1, 1)
    _normal(a, (2 / (64 + 64)) ** 0.5)                 # Glorot: sqrt(2 / (fan_in + fan_out))
    torch.manual_seed(4)
    assert not torch.equal(factorize(w, 'p-random')[1], a)
    assert set(METHODS) == {'svd', 'svd2', 'p-identity', 'p-random', 't-random', 'p-disturbance-u', 'p-disturbance-n'}


def test_t_random_draws_both_independently_of_w_at_the_scale_of_torchs_default_init():
    """torch's default conv init (Kaiming uniform, a = sqrt(5)) has std 1 / sqrt(3 fan_in)."""
    w = torch.randn(64, 8, 3, 3)
    torch.manual_seed(3)
    drawn, a = factorize(w, 't-random')
    assert drawn.shape == w.shape and a.shape == (64, 64, 1, 1)
    _normal(drawn, (3 * 8 * 3 * 3) ** -0.5)
    _normal(a, (3 * 64) ** -0.5)
    torch.manual_seed(3)
    other_w, other_a = factorize(10 * w, 't-random')
    assert torch.equal(other_w, drawn) and torch.equal(other_a, a)
    torch.manual_seed(4)
    assert not torch.equal(factorize(w, 't-random')[0], drawn)
