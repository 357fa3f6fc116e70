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
from model_hinge.errors import HingeError
from model_hinge.groups import bind
from model_hinge.init import factorize
from model_hinge.plan import Insertion, Plan, split_path
from model_hinge.surgery import compress, merge_insertion, sync_module_attributes


class DReLU(nn.Module):
    """Two-slope activation slope_p * relu(x) + slope_n * relu(-x) (learnable scalars, init 1 and 0)."""

    def __init__(self):
        super().__init__()
        self.slope_p = nn.Parameter(torch.tensor(1.0))
        self.slope_n = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slope_p * F.relu(x) + self.slope_n * F.relu(-x)


class ChannelIndexed(nn.Module):
    """A parameter-free module that moves channels (a zero-padding shortcut), cut by index: the input's channels
    are placed at `inputs` of its full input width, the module runs at full width, and the channels at `outputs`
    are returned. Both buffers list every position until compression cuts them with the channels they carry."""

    def __init__(self, module: nn.Module, in_channels: int, out_channels: int):
        super().__init__()
        self.module, self.in_channels = module, in_channels
        self.register_buffer('inputs', torch.arange(in_channels))
        self.register_buffer('outputs', torch.arange(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inputs.numel() < self.in_channels:
            x = self.spread(x)
        y = self.module(x)
        return select_channels(y, self.outputs) if self.outputs.numel() < y.shape[1] else y

    def spread(self, x: torch.Tensor) -> torch.Tensor:
        """x's channels at `inputs` (sorted) of the full width, zeros elsewhere: zero channels appended, then one
        gather (several times faster on the CPU than scattering into zeros), with static shapes for export."""
        kept = torch.zeros(self.in_channels, dtype=torch.long, device=x.device).index_fill(0, self.inputs, 1)
        source = torch.where(kept.bool(), kept.cumsum(0) - 1, self.inputs.numel() + (1 - kept).cumsum(0) - 1)
        filler = x.new_zeros(x.shape[0], self.in_channels - self.inputs.numel(), *x.shape[2:])
        if channels_last(x):
            filler = filler.contiguous(memory_format=torch.channels_last)
        return select_channels(torch.cat([x, filler], 1), source)


def channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-d tensor is laid out channels last (and not also contiguous, as with one channel or pixel)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def select_channels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x's channels at `index`, in x's memory layout: a channels-last tensor gathers along its innermost axis and
    stays channels last, so the operations after it keep their fast kernels (torch.gather with the index expanded
    over the pixels: index_select along the last axis is several times slower on the CPU)."""
    if channels_last(x):
        pixels = x.permute(0, 2, 3, 1)
        spots = index.view(1, 1, 1, -1).expand(*pixels.shape[:3], index.numel())
        return torch.gather(pixels, 3, spots).permute(0, 3, 1, 2)
    return x.index_select(1, index)


MODULE_KINDS: dict[str, type[nn.Module]] = {'two_slope_relu': DReLU}
FILTER_MIXING = ('svd', 'svd2')  # initialisations whose conv' combines filters, which a grouped conv cannot


def factorized_pair(conv: nn.Conv2d, method: str | None, group_dim: int = 1) -> nn.Sequential:
    """Sequential(conv', A) computing `conv` (for svd/svd2/p-identity) with A a bias-carrying 1x1 conv.

    conv' keeps the groups and padding mode of `conv`. With `method` None the pair only gets the right
    structure (its values are about to be loaded). A grouped conv keeps its weight with A = I under svd/svd2:
    their conv' would mix filters of different groups.
    """
    weight = conv.weight.detach().cpu()
    if method is None or (conv.groups > 1 and method in FILTER_MIXING):
        new_weight, matrix = weight.clone(), torch.eye(weight.shape[0]).view(weight.shape[0], -1, 1, 1)
    else:
        new_weight, matrix = factorize(weight, method, group_dim)
    basis = nn.Conv2d(conv.in_channels, new_weight.shape[0], conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=False,
                      padding_mode=conv.padding_mode)
    a = nn.Conv2d(new_weight.shape[0], matrix.shape[0], 1, bias=conv.bias is not None)
    with torch.no_grad():
        basis.weight.copy_(new_weight)
        a.weight.copy_(matrix)
        if conv.bias is not None:
            a.bias.copy_(conv.bias.detach())
    return nn.Sequential(basis, a).to(conv.weight.device)


def module_at(net: nn.Module, path: str, what: str) -> nn.Module:
    """The module at `path`; a path the network lacks is a HingeError naming it and `what` the plan wanted."""
    parent, key = split_path(path)
    try:
        children = dict(net.get_submodule(parent).named_children())
    except AttributeError:
        children = {}
    if not key or key not in children:
        raise HingeError(f'the compression plan names {what} {path}, which this network does not have; '
                         'the plan was made for another architecture.')
    return children[key]


def set_module(net: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the module at an existing `path` (a missing one is a HingeError, never a new attribute)."""
    module_at(net, path, 'the module')
    parent, key = split_path(path)
    setattr(net.get_submodule(parent), key, module)


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


def check_plan(net: nn.Module, plan: Plan) -> None:
    """Refuse, naming the path, replacements and insertions that do not fit `net`, before anything changes."""
    for path, kind in plan.replacements.items():
        module_at(net, path, 'the module to replace')
        if kind not in MODULE_KINDS:
            raise HingeError(f'the compression plan replaces {path} by {kind!r}, an unknown module kind; '
                             f'use {", ".join(MODULE_KINDS)}.')
    for path in plan.indexed:
        if next(module_at(net, path, 'the channel-moving module').parameters(), None) is not None:
            raise HingeError(f'the compression plan cuts the channels of {path} by index, which has parameters; '
                             'only parameter-free modules can be cut this way.')
    convs = [i.conv for i in plan.insertions]
    twice = sorted({c for c in convs if convs.count(c) > 1})
    if twice:
        raise HingeError(f'the compression plan inserts two matrices after {twice[0]}; list each conv once.')
    for insertion in plan.insertions:
        _check_insertion(net, insertion)


def _check_insertion(net: nn.Module, insertion: Insertion) -> None:
    """The insertion names a Conv2d, in a Sequential for the 'after' style, and merges only an ungrouped one."""
    conv = module_at(net, insertion.conv, 'the convolution')
    if not isinstance(conv, nn.Conv2d):
        raise HingeError(f'the compression plan inserts A after {insertion.conv}, which is a {type(conv).__name__} '
                         'in this network, not a Conv2d; the plan was made for another architecture.')
    parent, key = split_path(insertion.conv)
    if insertion.style == 'after' and not (key.isdigit() and isinstance(net.get_submodule(parent), nn.Sequential)):
        raise HingeError(f"the compression plan inserts A after {insertion.conv} in the 'after' style, which needs "
                         "a convolution inside a Sequential; use the 'wrap' style.")
    if insertion.merge and conv.groups > 1:
        raise HingeError(f'the compression plan merges A into {insertion.conv}, a grouped convolution '
                         f'({conv.groups} groups), whose fold with a dense A would be dense; set merge to false.')


def convert(net: nn.Module, plan: Plan, method: str | None) -> dict[str, nn.Module]:
    """Apply the plan to a baseline in place, once check_plan accepts it; `method` initialises A (None:
    structure only, values follow). Returns the modules it replaced by path, which `restore` puts back."""
    check_plan(net, plan)
    originals = {path: net.get_submodule(path)
                 for path in [*plan.replacements, *plan.indexed, *(i.conv for i in plan.insertions)]}
    device = next(net.parameters()).device
    for path, kind in plan.replacements.items():
        set_module(net, path, MODULE_KINDS[kind]().to(device))
    for path, (in_channels, out_channels) in plan.indexed.items():
        set_module(net, path, ChannelIndexed(originals[path], in_channels, out_channels).to(device))
    for insertion in plan.insertions:
        insert_matrix(net, insertion, method)
    if plan.policy.grad_ratio_buffer:
        net.register_buffer('running_grad_ratio', None)
    return originals


def restore(net: nn.Module, plan: Plan, originals: dict[str, nn.Module]) -> None:
    """Undo `convert` (its inserted matrices, replacements and buffer), so a refused plan leaves `net` as it was."""
    for insertion in reversed(plan.insertions):
        if insertion.style == 'after':
            parent, key = split_path(insertion.conv)
            del net.get_submodule(parent)[int(key) + 1]
        set_module(net, insertion.conv, originals[insertion.conv])
    for path in [*plan.replacements, *plan.indexed]:
        set_module(net, path, originals[path])
    if plan.policy.grad_ratio_buffer:
        delattr(net, 'running_grad_ratio')


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
        self.originals = convert(net, plan, init_method)
        try:
            self.families = bind(plan, net)
        except HingeError:
            self.restore()
            raise
        self.merged = False
        self.folded: list[Insertion] = []
        self.retrace()

    @property
    def policy(self):
        return self.plan.policy

    def restore(self) -> None:
        """Give the network back its baseline modules (before any compression)."""
        restore(self.net, self.plan, self.originals)

    def retrace(self) -> None:
        """Re-record the complexity model (after a structural change or a shape-adapting load)."""
        self.complexity = ComplexityModel.trace(self.net, self.input_dim)

    def compress(self, kept: dict, legacy: bool = False) -> None:
        """Remove every group not in `kept` (indices per family) from the network, then recount (compressed)."""
        compress(self.families, kept, self.net, legacy)
        self.compressed()

    def compressed(self) -> None:
        """After compression or a load of compressed tensors: recount, and keep only the families that follow
        whole axes. A family whose members list positions of the uncompressed tensors (a residual stream's
        share of a writer's rows) no longer names the right rows; its channels are compressed already."""
        self.families = [f for f in self.families if all(m.positions is None for m in f.members)]
        self.retrace()

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
        self.fold(self.plan.merges)

    def cheaper_folds(self) -> list[Insertion]:
        """The insertions the plan keeps apart whose conv and A would cost fewer FLOPs as the one convolution
        they fold into (decided by the complexity counter, from the shapes alone).

        A decomposed layer whose basis kept nearly all of its filters pays more for the separate 1x1
        convolution than it saves. Grouped convolutions are left alone: a dense A folded into one would need a
        dense convolution.
        """
        current = self.complexity.flops()
        return [i for i, pair in zip(self.foldable(), self.foldable_pairs(), strict=True)
                if self.complexity.flops(merges=[pair]) < current]

    def foldable(self) -> list[Insertion]:
        """The insertions the plan keeps apart that could be folded: not folded yet, ungrouped conv."""
        return [i for i in self.plan.insertions if not i.merge and i not in self.folded
                and self.net.get_submodule(i.conv_path).groups == 1]

    def foldable_pairs(self) -> Merges:
        """The (conv, A) modules of foldable()."""
        return [(self.net.get_submodule(i.conv_path), self.net.get_submodule(i.matrix_path)) for i in self.foldable()]

    def merge_where_cheaper(self) -> list[Insertion]:
        """The deployable network with the fewest FLOPs: the plan's merges folded (if not yet), then every pair
        of cheaper_folds(). Returns the insertions folded beyond the plan's."""
        if not self.merged:
            self.merge()
        extra = self.cheaper_folds()
        self.fold(extra)
        return extra

    def fold(self, insertions: list[Insertion]) -> None:
        """Fold these (conv, A) pairs into single convolutions; the families no longer apply."""
        for insertion in insertions:
            merge_insertion(self.net, insertion)
        self.folded += insertions
        sync_module_attributes(self.net)
        self.families, self.merged = [], True
        self.retrace()
