"""Proximal operators of the group-sparsity regularizers, as scale factors for a batch of group norms.

Each operator maps group norms n and thresholds lam (same shape) to the factor that multiplies each group:
the proximal point of lam * R(||g||) along the group's direction is scale * g.
"""

import math

import torch

EPS = 1e-8
HALF_THRESHOLD = 54 ** (1 / 3) / 4


def l1(n: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Group soft thresholding: max(0, 1 - lam / n)."""
    return (1 - lam / (n + EPS)).clamp_min(0)


def l1_2(n: torch.Tensor, lam: torch.Tensor, family: torch.Tensor, n_families: int) -> torch.Tensor:
    """l1 - l2: the l1 scale times (1 + lam / ||max(n - lam, 0)||), the norm taken over each matrix's groups.

    A matrix whose groups all fall below the threshold is zeroed (the original divides 0 by 0 there).
    """
    w = (n - lam).clamp_min(0)
    w_norm = torch.zeros(n_families, dtype=n.dtype, device=n.device).index_add(0, family, w * w).sqrt()[family]
    safe = torch.where(w_norm > 0, w_norm, torch.ones_like(w_norm))
    return torch.where(w_norm > 0, (1 + lam / safe) * l1(n, lam), torch.zeros_like(n))


def l1d2(n: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Half thresholding (l1/2): zero up to 54^(1/3)/4 lam^(2/3), else 2/3 (1 + cos(2/3 (pi - phi)))."""
    above = n > HALF_THRESHOLD * lam.pow(2 / 3)
    safe_n = torch.where(above, n, torch.ones_like(n))
    phi = torch.acos((lam / 8 * (safe_n / 3).pow(-1.5)).clamp(-1, 1))
    scale = 2 / 3 * (1 + torch.cos(2 / 3 * (math.pi - phi)))
    return torch.where(above, scale, torch.zeros_like(n))


def logsum(n: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Log-sum penalty lam * log(eps + ||g||): the larger root (c1 + sqrt(c2)) / (2n) where it is real."""
    c1 = n - EPS
    c2 = c1 * c1 - 4 * (lam - n * EPS)
    real = (c2 > 0) & (n > 0)
    safe_n = torch.where(real, n, torch.ones_like(n))
    scale = (c1 + c2.clamp_min(0).sqrt()) / (2 * safe_n)
    return torch.where(real, scale, torch.zeros_like(n))


def l0(n: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Group hard thresholding: keep a group when ||g||^2 / 2 > lam, i.e. n > sqrt(2 lam)."""
    return (n > (2 * lam).sqrt()).to(n.dtype)


def scale(kind: str, n: torch.Tensor, lam: torch.Tensor, family: torch.Tensor, n_families: int) -> torch.Tensor:
    """Dispatch on --sparsity_regularizer."""
    if kind == 'l1':
        return l1(n, lam)
    if kind == 'l1-2':
        return l1_2(n, lam, family, n_families)
    if kind == 'l1d2':
        return l1d2(n, lam)
    if kind == 'logsum':
        return logsum(n, lam)
    if kind == 'l0':
        return l0(n, lam)
    raise ValueError(f'unknown regularizer {kind}')
