"""Group families bound to a network's tensors: group norms, vectorised proximal scaling, channel counts.

A plan (plan.py) names tensors; `bind` turns each of its families into a GroupFamily holding the live
tensors, checks that the plan fits the network, and keeps the plan's order. A GroupBank computes the norms of
many families at once and scales their groups in place with a fixed number of kernels, whatever the layer
count (the proximal step's hot path). `exact_norms` computes the norms that decide compression the way the
original code does (same reductions over the same views), so thresholds select the same channels bit for bit.
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from model_hinge.errors import HingeError
from model_hinge.plan import Plan, split_path


@dataclass
class Member:
    """A tensor whose slices along `dim` belong to the groups of a family, `chunk` channels per group; with
    `positions`, only those slices (see plan.Member)."""

    param: torch.Tensor
    dim: int
    chunk: int = 1
    positions: torch.Tensor | None = None

    @property
    def slices(self) -> int:
        """How many slices along `dim` belong to the family."""
        return self.param.shape[self.dim] if self.positions is None else len(self.positions)

    def slices_of(self, channels: torch.Tensor) -> torch.Tensor:
        """The positions along `dim` of the family's (local) channels."""
        return channels if self.positions is None else self.positions[channels]

    def group_ids(self, offset: int, outside: int) -> torch.Tensor:
        """The group id (offset + local group) of every element, flattened; `outside` for the elements of slices
        that are not the family's."""
        shape = self.param.shape
        device = self.param.device
        local = torch.arange(self.slices, device=device) // self.chunk + offset
        if self.positions is not None:
            local = torch.full((shape[self.dim],), outside, device=device).index_put_(
                (self.positions.to(device),), local)
        view = [1] * len(shape)
        view[self.dim] = shape[self.dim]
        return local.view(view).expand(shape).reshape(-1)

    def group_rows(self) -> torch.Tensor:
        """(groups, elements per group), rows in channel order: the original's layout of joint groups."""
        p = self.param.detach()
        if self.positions is not None:
            p = p.index_select(self.dim, self.positions.to(p.device))
        moved = p.reshape(p.shape[0], -1) if self.dim == 0 else p.movedim(self.dim, 0).reshape(p.shape[self.dim], -1)
        return moved.reshape(p.shape[self.dim] // self.chunk, -1)


@dataclass
class Cut:
    """A tensor (module attribute `name`) whose axis `axis` holds the family's channels from `offset` on, or
    at `positions` (an index map, the same number of positions per group; see plan.Cut)."""

    module: nn.Module
    name: str
    axis: int
    offset: int = 0
    legacy_transposed: bool = False
    legacy_offset: int | None = None
    positions: torch.Tensor | None = None

    @property
    def tensor(self) -> torch.Tensor:
        return getattr(self.module, self.name)

    def per_group(self, fam: 'GroupFamily') -> int:
        """Positions of this axis per group of the family."""
        return fam.chunk if self.positions is None else len(self.positions) // fam.size

    def owned(self, fam: 'GroupFamily') -> torch.Tensor:
        """Every position of the axis that the family's groups occupy."""
        return torch.arange(self.offset, self.offset + fam.channels_total) if self.positions is None else self.positions

    def kept(self, fam: 'GroupFamily', groups: torch.Tensor, legacy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions kept, where they go in the axis' order) for the family's kept groups. With `legacy`, a
        block the original indexed from another offset (plan.Cut.legacy_offset) is indexed from there."""
        if self.positions is not None:
            kept = self.positions.view(fam.size, -1)[groups].reshape(-1)
            return kept, kept
        channels = fam.channels(groups)
        base = self.legacy_offset if legacy and self.legacy_offset is not None else self.offset
        return base + channels, self.offset + torch.arange(len(channels))


@dataclass(eq=False)
class GroupFamily:
    """One regularised set of groups; `role` is the penalty term (P1, P2) and optimizer role it belongs to."""

    block: int
    layer: int
    role: int
    members: list[Member]
    cuts: list[Cut] = field(default_factory=list)
    same_as: 'GroupFamily | None' = None
    weight: float = 1.0   # group-lasso weight (see plan.Family)

    @property
    def size(self) -> int:
        m = self.members[0]
        return m.slices // m.chunk

    @property
    def chunk(self) -> int:
        return self.members[0].chunk

    @property
    def channels_total(self) -> int:
        return self.size * self.chunk

    def channels(self, groups: torch.Tensor) -> torch.Tensor:
        """Channel indices (local to the family) covered by the given (sorted) group indices."""
        c = self.chunk
        return (groups.view(-1, 1) * c + torch.arange(c, device=groups.device)).reshape(-1)


def resolve(net: nn.Module, name: str, what: str) -> tuple[nn.Module, str]:
    """(module, attribute) of a tensor named like a state-dict key; a name the network lacks is refused."""
    parent, attr = split_path(name)
    try:
        module = net.get_submodule(parent) if parent else net
    except AttributeError:
        module = None
    if module is None or not isinstance(getattr(module, attr, None), torch.Tensor):
        raise HingeError(f'the compression plan names {what} {name}, which this network does not have; '
                         'the plan was made for another architecture.')
    return module, attr


def bind(plan: Plan, net: nn.Module) -> list[GroupFamily]:
    """The plan's families over the live tensors of `net` (which must already have its matrices inserted)."""
    families = []
    for spec in plan.families:
        members = [Member(getattr(*resolve(net, m.tensor, 'the group tensor')), m.dim, m.chunk,
                          index_or_none(m.positions)) for m in spec.members]
        cuts = [Cut(*resolve(net, c.tensor, 'the cut tensor'), c.axis, c.offset, c.legacy_transposed, c.legacy_offset,
                    index_or_none(c.positions)) for c in spec.cuts]
        families.append(GroupFamily(spec.block, spec.layer, spec.role, members, cuts, weight=spec.weight))
    for fam, spec in zip(families, plan.families, strict=True):
        if spec.same_as is not None:
            fam.same_as = families[spec.same_as]
    check_fit(families, plan.model)
    return families


def index_or_none(positions: list[int] | None) -> torch.Tensor | None:
    return None if positions is None else torch.tensor(positions, dtype=torch.long)


def check_fit(families: list[GroupFamily], model: str) -> None:
    """Every family's members agree on the group count, and its cuts fit their axes without overlapping."""
    taken: dict[tuple[int, int], torch.Tensor] = {}
    for index, fam in enumerate(families):
        for member in fam.members:
            check_positions(member, index, model)
        counts = {m.slices // m.chunk for m in fam.members}
        divisible = all(m.slices % m.chunk == 0 for m in fam.members)
        if len(counts) != 1 or not divisible:
            raise HingeError(f'the compression plan of {model} does not fit the network: the members of family '
                             f'{index} do not have the same number of groups.')
        for cut in fam.cuts:
            size = cut.tensor.shape[cut.axis] if cut.axis < cut.tensor.dim() else 0
            owned = cut.owned(fam)
            whole = len(owned) > 0 and len(owned) % fam.size == 0
            if not whole or int(owned.min()) < 0 or int(owned.max()) >= size:
                raise HingeError(f'the compression plan of {model} does not fit the network: family {index} cuts '
                                 f'positions {int(owned.min())}..{int(owned.max()) + 1} of {cut.name} axis '
                                 f'{cut.axis} (size {size}) for {fam.channels_total} channels.')
            mask = taken.setdefault((id(cut.tensor), cut.axis), torch.zeros(size, dtype=torch.bool))
            if bool(mask[owned].any()):
                raise HingeError(f'the compression plan of {model} is inconsistent: two families cut the same '
                                 'positions of one tensor.')
            mask[owned] = True


def check_positions(member: Member, index: int, model: str) -> None:
    """A member's listed slices exist along its axis (a plan written for another network's widths would not)."""
    if member.positions is None:
        return
    if not len(member.positions):
        raise HingeError(f'the compression plan of {model} does not fit the network: a member of family {index} '
                         'lists no positions; list at least one, or none to give it the whole axis.')
    low, high, size = int(member.positions.min()), int(member.positions.max()), member.param.shape[member.dim]
    if low < 0 or high >= size:
        raise HingeError(f'the compression plan of {model} does not fit the network: a member of family {index} '
                         f'lists positions {low}..{high} of a tensor with {size} slices along axis {member.dim} '
                         f'(0..{size - 1} would fit).')


def exact_norms(fam: GroupFamily) -> torch.Tensor:
    """Group norms (float32, CPU) computed as the original does: one member with one channel per group is
    reduced along its matrix view; joint groups are concatenated row by row first. Divided by the family's
    weight where it has one (never in the original's plans)."""
    return _weighted(fam, _device_norms(fam).float()).cpu()


def exact_norms_of(families: list[GroupFamily]) -> dict:
    """`exact_norms` of several families, copied to the CPU in one transfer."""
    if not families:
        return {}
    norms = torch.cat([_weighted(f, _device_norms(f).float()) for f in families]).cpu()
    return dict(zip(families, norms.split([f.size for f in families]), strict=True))


def _weighted(fam: GroupFamily, norms: torch.Tensor) -> torch.Tensor:
    return norms if fam.weight == 1 else norms / fam.weight


def _device_norms(fam: GroupFamily) -> torch.Tensor:
    """torch.norm(p=2) along a dimension is this vector norm; called directly to spare its dispatch."""
    if len(fam.members) == 1 and fam.chunk == 1 and fam.members[0].positions is None:
        m = fam.members[0]
        p = m.param.detach()
        if p.dim() == 2 or p.shape[2:].numel() == 1:
            matrix = p.reshape(p.shape[0], p.shape[1])
            return torch.linalg.vector_norm(matrix, 2, dim=1 - m.dim)
    return torch.linalg.vector_norm(torch.cat([m.group_rows() for m in fam.members], dim=1), 2, dim=1)


def split_into_banks(families: list[GroupFamily]) -> list[list[GroupFamily]]:
    """Order-preserving partition so that no tensor appears twice in a bank (rows and columns of the same
    matrix go to consecutive banks and are processed one after the other)."""
    banks: list[tuple[list[GroupFamily], set[int]]] = []
    for fam in families:
        ids = {id(m.param) for m in fam.members}
        for bank, seen in banks:
            if not ids & seen:
                bank.append(fam)
                seen |= ids
                break
        else:
            banks.append(([fam], set(ids)))
    return [bank for bank, _ in banks]


class GroupBank:
    """Group norms and in-place group scaling for several families, vectorised over all of them."""

    def __init__(self, families: list[GroupFamily]):
        self.families = families
        self.members = [m for f in families for m in f.members]
        self.sizes = [m.param.numel() for m in self.members]
        self.n_groups = sum(f.size for f in families)
        # the elements of slices no family owns (members with positions) fall into one spare group, never scaled
        self.spare = any(m.positions is not None for m in self.members)
        ids, family_of_group, offset = [], [], 0
        for index, fam in enumerate(families):
            ids += [m.group_ids(offset, self.n_groups) for m in fam.members]
            family_of_group += [index] * fam.size
            offset += fam.size
        self.element_group = torch.cat(ids)
        device = self.element_group.device
        self.group_family = torch.tensor(family_of_group, dtype=torch.long, device=device)
        self.family_role = torch.tensor([f.role for f in families], dtype=torch.long, device=device)
        weights = torch.tensor([f.weight for f in families], dtype=torch.float32, device=device)
        self.group_weight = None if bool((weights == 1).all()) else weights[self.group_family]
        self.family_slices = []
        start = 0
        for fam in families:
            self.family_slices.append(slice(start, start + fam.size))
            start += fam.size

    def squared_norms(self, tensors: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Sum of squares of every group (differentiable); `tensors` defaults to the members themselves."""
        tensors = tensors if tensors is not None else [m.param for m in self.members]
        flat = torch.cat([t.reshape(-1) for t in tensors])
        sums = flat.new_zeros(self.n_groups + self.spare).index_add(0, self.element_group, flat * flat)
        return sums[:self.n_groups] if self.spare else sums

    def norms(self) -> torch.Tensor:
        with torch.no_grad():
            return self.squared_norms().sqrt()

    def grad_norms(self) -> torch.Tensor:
        """Group norms of the members' gradients (zero where a gradient is missing)."""
        grads = [m.param.grad if m.param.grad is not None else torch.zeros_like(m.param) for m in self.members]
        with torch.no_grad():
            return self.squared_norms(grads).sqrt()

    @torch.no_grad()
    def scale_(self, factors: torch.Tensor) -> None:
        """Multiply every group by its factor, in place (one gather and one multi-tensor multiply)."""
        if self.spare:
            factors = torch.cat([factors, factors.new_ones(1)])
        per_element = factors[self.element_group].split(self.sizes)
        torch._foreach_mul_([m.param for m in self.members],
                            [e.view(m.param.shape) for e, m in zip(per_element, self.members, strict=True)])

    def per_family(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Split a per-group vector into one tensor per family."""
        return [values[s] for s in self.family_slices]

    def family_sums(self, values: torch.Tensor) -> torch.Tensor:
        """Per-family sum of a per-group vector."""
        return values.new_zeros(len(self.families)).index_add(0, self.group_family, values)

    def role_sums(self, family_values: torch.Tensor, n_roles: int) -> torch.Tensor:
        """Per-role sum of a per-family vector."""
        return family_values.new_zeros(n_roles).index_add(0, self.family_role, family_values)
