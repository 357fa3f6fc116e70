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


def test_random_methods_have_the_right_shapes():
    w = torch.randn(5, 3, 3, 3)
    kept, a = factorize(w, 'p-random')
    assert torch.equal(kept, w) and a.shape == (5, 5, 1, 1)
    drawn, a = factorize(w, 't-random')
    assert drawn.shape == w.shape and not torch.equal(drawn, w) and a.shape == (5, 5, 1, 1)
    assert set(METHODS) == {'svd', 'svd2', 'p-identity', 'p-random', 't-random', 'p-disturbance-u', 'p-disturbance-n'}
