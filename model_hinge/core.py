"""The Hinge model: a baseline network converted by its compression plan.

`convert` applies a plan to a baseline (module replacements, A insertions with their initialisation, the
gradient-ratio buffer); HingeModel binds the plan's families to the converted tensors and keeps the
baseline's complexity and the complexity model of the converted network. Search, proximal steps, counting,
compression and merging are generic and live in search.py, groups.py and surgery.py; an Adapter only
writes the plan of its architecture.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from model_hinge.complexity import ComplexityModel, Merges, ShapeOf, actual_shape
from model_hinge.groups import bind
from model_hinge.init import factorize
from model_hinge.plan import Insertion, Plan, split_path
from model_hinge.surgery import merge_insertion, sync_module_attributes


class DReLU(nn.Module):
    """Two-slope activation slope_p * relu(x) + slope_n * relu(-x) (learnable scalars, init 1 and 0)."""

    def __init__(self):
        super().__init__()
        self.slope_p = nn.Parameter(torch.tensor(1.0))
        self.slope_n = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slope_p * F.relu(x) + self.slope_n * F.relu(-x)


MODULE_KINDS: dict[str, type[nn.Module]] = {'two_slope_relu': DReLU}


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
                      padding=conv.padding, dilation=conv.dilation, bias=False)
    a = nn.Conv2d(new_weight.shape[0], matrix.shape[0], 1, bias=conv.bias is not None)
    with torch.no_grad():
        basis.weight.copy_(new_weight)
        a.weight.copy_(matrix)
        if conv.bias is not None:
            a.bias.copy_(conv.bias.detach())
    return nn.Sequential(basis, a).to(conv.weight.device)


def set_module(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, key = split_path(path)
    setattr(net.get_submodule(parent) if parent else net, key, module)


def insert_matrix(net: nn.Module, insertion: Insertion, method: str | None) -> None:
    """Put A after the conv at `insertion.conv`, in the insertion's style (see plan.Insertion)."""
    conv = net.get_submodule(insertion.conv)
    pair = factorized_pair(conv, method, insertion.group_dim)
    if insertion.style == 'wrap':
        set_module(net, insertion.conv, pair)
        return
    parent_path, key = split_path(insertion.conv)
    parent = net.get_submodule(parent_path) if parent_path else net
    parent[int(key)] = pair[0]
    parent.insert(int(key) + 1, pair[1])


def convert(net: nn.Module, plan: Plan, method: str | None) -> None:
    """Apply the plan to a baseline in place; `method` initialises A (None: structure only, values follow)."""
    for path, kind in plan.replacements.items():
        set_module(net, path, MODULE_KINDS[kind]().to(next(net.parameters()).device))
    for insertion in plan.insertions:
        insert_matrix(net, insertion, method)
    if plan.policy.grad_ratio_buffer:
        net.register_buffer('running_grad_ratio', None)


class Adapter:
    """Per-architecture knowledge: which baseline family it converts and the plan for a built baseline."""

    name = ''      # the --model name (the registry matches it case-insensitively)
    baseline = ''  # baseline family in model.BASELINES

    def plan(self, net: nn.Module) -> Plan:
        raise NotImplementedError


def class_is(module: nn.Module, *names: str) -> bool:
    """Whether the module's class is called one of names: adapters recognise blocks without importing model/."""
    return type(module).__name__ in names


def blocks_named(net: nn.Module, *names: str) -> list[tuple[str, nn.Module]]:
    """(path, module) of every submodule whose class is called one of names, in module order."""
    return [(path, m) for path, m in net.named_modules() if class_is(m, *names)]


class HingeModel:
    """A converted network with its bound group families and complexity counters."""

    def __init__(self, net: nn.Module, plan: Plan, input_dim: tuple, init_method: str | None):
        self.net, self.plan, self.input_dim = net, plan, input_dim
        baseline = ComplexityModel.trace(net, input_dim)
        self.baseline_flops, self.baseline_params = baseline.flops(), baseline.params()
        convert(net, plan, init_method)
        self.families = bind(plan, net)
        self.merged = False
        self.folded: list[Insertion] = []
        self.retrace()

    @property
    def policy(self):
        return self.plan.policy

    def retrace(self) -> None:
        """Re-record the complexity model (after a structural change or a shape-adapting load)."""
        self.complexity = ComplexityModel.trace(self.net, self.input_dim)

    def merge_pairs(self) -> Merges:
        """The (conv, A) modules that merge for deployment (none once merged)."""
        if self.merged:
            return []
        return [(self.net.get_submodule(i.conv_path), self.net.get_submodule(i.matrix_path)) for i in self.plan.merges]

    def cost(self, shape_of: ShapeOf = actual_shape, merged: bool = True) -> tuple[int, int]:
        """(FLOPs, params) of the deployable network: its merging pairs folded (unless `merged` is False)."""
        merges = self.merge_pairs() if merged else []
        return self.complexity.flops(shape_of, merges), self.complexity.params(shape_of, merges)

    def matrices(self) -> list[list[torch.Tensor]]:
        """The sparsity-inducing matrices per optimizer role (one role unless the policy separates them)."""
        separate = self.policy.separate_roles
        roles: list[list[torch.Tensor]] = [[] for _ in range(self.policy.roles if separate else 1)]
        seen = set()
        for fam in self.families:
            for m in fam.members:
                if id(m.param) not in seen:
                    seen.add(id(m.param))
                    roles[fam.role if separate else 0].append(m.param)
        return roles

    def merge(self) -> None:
        """Fold every merging (conv, A) pair into one convolution; the families no longer apply."""
        self._fold(self.plan.merges)

    def cheaper_folds(self) -> list[Insertion]:
        """The insertions the plan keeps apart whose conv and A would cost fewer FLOPs as the one convolution
        they fold into (decided by the complexity counter, from the shapes alone).

        A decomposed layer whose basis kept nearly all of its filters pays more for the separate 1x1
        convolution than it saves. Grouped convolutions are left alone: a dense A folded into one would need a
        dense convolution.
        """
        current = self.complexity.flops()
        chosen = []
        for insertion in self.plan.insertions:
            if insertion.merge or insertion in self.folded:
                continue
            conv, matrix = self.net.get_submodule(insertion.conv_path), self.net.get_submodule(insertion.matrix_path)
            if conv.groups == 1 and self.complexity.flops(merges=[(conv, matrix)]) < current:
                chosen.append(insertion)
        return chosen

    def merge_where_cheaper(self) -> list[Insertion]:
        """The deployable network with the fewest FLOPs: the plan's merges folded (if not yet), then every pair
        of cheaper_folds(). Returns the insertions folded beyond the plan's."""
        if not self.merged:
            self.merge()
        extra = self.cheaper_folds()
        self._fold(extra)
        return extra

    def _fold(self, insertions: list[Insertion]) -> None:
        for insertion in insertions:
            merge_insertion(self.net, insertion)
        self.folded += insertions
        sync_module_attributes(self.net)
        self.families, self.merged = [], True
        self.retrace()
