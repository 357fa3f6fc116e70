"""Initialisations of a convolution W (c_out, c_in, k, k) as W' followed by a sparsity-inducing 1x1 matrix A.

svd:  W'^T = U S (basis filters scaled by the singular values), A = V.
svd2: W'^T = U, A = V S (singular values in A); with fewer rows than filters W' keeps only the basis.
p-identity keeps W with A = I; p-random keeps W with a Xavier A; t-random draws both at random;
p-disturbance-u/-n keep W with A = I plus uniform/normal noise, normalised along the group direction.
"""

import math

import torch
from torch.nn import init

METHODS = ('svd', 'svd2', 'p-identity', 'p-random', 't-random', 'p-disturbance-u', 'p-disturbance-n')


def _svd(weight: torch.Tensor, singular_in_matrix: bool) -> tuple[torch.Tensor, torch.Tensor]:
    c_out = weight.shape[0]
    rows = weight[0].numel()
    w = weight.detach().reshape(c_out, -1).t().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=rows < c_out)
    r = s.numel()
    if singular_in_matrix:
        if rows < c_out:
            basis = u.t()
            matrix = torch.zeros(rows, c_out, dtype=w.dtype, device=w.device)
            matrix[:, :r] = torch.diag(s)
            matrix = (matrix @ vh).t()
        else:
            basis = u[:, :c_out].t()
            matrix = (torch.diag(s) @ vh).t()
    else:
        scaled = torch.zeros(rows, c_out, dtype=w.dtype, device=w.device)
        scaled[:, :r] = u[:, :r] * s
        basis = scaled.t()
        matrix = vh.t()
    new_weight = basis.reshape(-1, *weight.shape[1:]).to(weight.dtype)
    return new_weight, matrix.reshape(c_out, -1, 1, 1).to(weight.dtype)


def _disturbed_identity(c: int, noise: torch.Tensor, dim: int) -> torch.Tensor:
    """I + noise, with unit-norm rows (dim 0: output groups) or columns (dim 1: input groups) of A."""
    p = torch.eye(c) + noise
    p = p / p.norm(dim=1, keepdim=True) if dim == 0 else p / p.norm(dim=0, keepdim=True)
    return p.view(c, c, 1, 1)


def factorize(weight: torch.Tensor, method: str, group_dim: int = 1,
              scale: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', A) with W' the new convolution weight and A (c_out, m, 1, 1); `group_dim` is the direction whose
    groups the disturbance methods normalise (0: rows/output channels, 1: columns/input channels)."""
    c = weight.shape[0]
    if method in ('svd', 'svd2'):
        return _svd(weight, singular_in_matrix=method == 'svd2')
    if method == 'p-identity':
        return weight.detach().clone(), torch.eye(c, dtype=weight.dtype).view(c, c, 1, 1)
    if method == 'p-random':
        a = torch.zeros(c, c, 1, 1)
        init.xavier_normal_(a)
        return weight.detach().clone(), a
    if method == 't-random':
        w, a = torch.zeros_like(weight), torch.zeros(c, c, 1, 1)
        init.kaiming_normal_(w, a=math.sqrt(5))
        init.kaiming_normal_(a, a=math.sqrt(5))
        return w, a
    if method == 'p-disturbance-u':
        return weight.detach().clone(), _disturbed_identity(c, torch.rand(c, c) * scale, group_dim)
    if method == 'p-disturbance-n':
        return weight.detach().clone(), _disturbed_identity(c, torch.randn(c, c) * scale, group_dim)
    raise ValueError(f'unknown initialisation {method}')
