"""The Hinge model: a baseline network with sparsity-inducing matrices, described by an adapter.

An adapter says *where* A sits (insert), which groups it has (families) and, optionally, which
Sequential(conv, A) pairs merge back into one convolution. Everything else (search, proximal steps,
counting, compression) is generic and lives in search.py, groups.py and surgery.py.
"""

from argparse import Namespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from model_hinge.groups import Cut, GroupFamily
from model_hinge.init import factorize
from model_hinge.surgery import merge_pair, sync_module_attributes
from utils.complexity import ComplexityModel


class DReLU(nn.Module):
    """Two-slope activation slope_p * relu(x) + slope_n * relu(-x) (learnable scalars, init 1 and 0)."""

    def __init__(self):
        super().__init__()
        self.slope_p = nn.Parameter(torch.tensor(1.0))
        self.slope_n = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slope_p * F.relu(x) + self.slope_n * F.relu(-x)


def factorized_pair(conv: nn.Conv2d, method: str | None, group_dim: int = 1) -> nn.Sequential:
    """Sequential(conv', A) computing `conv` (for svd/svd2/p-identity) with A a bias-carrying 1x1 conv.

    With `method` None the pair only gets the right structure (its values are about to be loaded).
    """
    weight = conv.weight.detach().cpu()
    if method is None:
        new_weight, matrix = weight.clone(), torch.eye(weight.shape[0]).view(weight.shape[0], -1, 1, 1)
    else:
        new_weight, matrix = factorize(weight, method, group_dim)
    basis = nn.Conv2d(conv.in_channels, new_weight.shape[0], conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, bias=False)
    a = nn.Conv2d(new_weight.shape[0], matrix.shape[0], 1, bias=conv.bias is not None)
    with torch.no_grad():
        basis.weight.copy_(new_weight)
        a.weight.copy_(matrix)
        if conv.bias is not None:
            a.bias.copy_(conv.bias.detach())
    return nn.Sequential(basis, a).to(conv.weight.device)


def bn_cuts(bn: nn.BatchNorm2d) -> list[Cut]:
    """The per-channel tensors of a BatchNorm."""
    names = [n for n in ('weight', 'bias', 'running_mean', 'running_var') if getattr(bn, n) is not None]
    return [Cut(bn, n, 0) for n in names]


class Adapter:
    """Per-architecture declarations; subclasses fill in the class attributes and the three methods."""

    baseline = ''            # baseline family in model.BASELINES
    separate_roles = False   # A1 and A2 in separate optimizer groups (and the gradient-ratio lr adjustment)
    mean_penalty = True      # P1/P2 averaged over blocks (True) or summed (False)
    grad_ratio_buffer = False  # the checkpoint carries running_grad_ratio

    def insert(self, net: nn.Module, method: str | None) -> None:
        """Insert the sparsity-inducing matrices (and any module changes) in place."""
        raise NotImplementedError

    def families(self, net: nn.Module) -> list[GroupFamily]:
        """The group families of the converted network, P1 terms before their P2 partners."""
        raise NotImplementedError

    def merge_points(self, net: nn.Module) -> list[tuple[nn.Module, str]]:
        """(parent, key) of each Sequential(conv, A) that merges into one convolution."""
        return []


class HingeModel:
    """A converted network with its group families and complexity counters."""

    def __init__(self, net: nn.Module, adapter: Adapter, args: Namespace, input_dim: tuple, init: bool):
        self.net, self.adapter, self.input_dim = net, adapter, input_dim
        baseline = ComplexityModel.trace(net, input_dim)
        self.baseline_flops, self.baseline_params = baseline.flops(), baseline.params()
        adapter.insert(net, args.init_method if init else None)
        if adapter.grad_ratio_buffer:
            net.register_buffer('running_grad_ratio', None)
        self.families = adapter.families(net)
        self.merged = False
        self.retrace()

    def retrace(self) -> None:
        """Re-record the complexity model (after a structural change or a shape-adapting load)."""
        self.complexity = ComplexityModel.trace(self.net, self.input_dim)

    def flops_params(self) -> tuple[int, int]:
        return self.complexity.flops(), self.complexity.params()

    def matrices(self) -> list[list[torch.Tensor]]:
        """The sparsity-inducing matrices per optimizer role (one role unless the adapter separates them)."""
        roles: list[list[torch.Tensor]] = [[], []] if self.adapter.separate_roles else [[]]
        seen = set()
        for fam in self.families:
            for m in fam.members:
                if id(m.param) not in seen:
                    seen.add(id(m.param))
                    roles[fam.role if self.adapter.separate_roles else 0].append(m.param)
        return roles

    def merge(self) -> None:
        """Fold every declared (conv, A) pair into one convolution; the families no longer apply."""
        for parent, key in self.adapter.merge_points(self.net):
            parent[int(key)] = merge_pair(parent[int(key)])
        sync_module_attributes(self.net)
        self.families, self.merged = [], True
        self.retrace()
