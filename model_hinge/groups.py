"""Groups as data: which tensor, which dimension, and which tensor axes follow each group family.

A GroupFamily is one set of channel groups, e.g. the columns of one sparsity-inducing matrix A. Its
`members` are the tensors whose slices along `dim` (in chunks of `chunk` channels) form the groups; the
norm of a group is the l2 norm over all its members' slices. Its `cuts` are every tensor axis that is
index-selected when the family is compressed. A GroupBank computes the norms of many families at once
and applies proximal scaling to all of them with a fixed number of kernels, whatever the layer count.
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class Member:
    """A tensor whose slices along `dim` belong to the groups of a family, `chunk` channels per group."""

    param: torch.Tensor
    dim: int
    chunk: int = 1

    def group_ids(self, offset: int) -> torch.Tensor:
        """The group id (offset + local group) of every element, flattened."""
        shape = self.param.shape
        local = torch.arange(shape[self.dim], device=self.param.device) // self.chunk + offset
        view = [1] * len(shape)
        view[self.dim] = shape[self.dim]
        return local.view(view).expand(shape).reshape(-1)


@dataclass
class Cut:
    """A tensor (module attribute `name`) whose axis `axis` keeps only the selected channels of a family."""

    module: nn.Module
    name: str
    axis: int

    @property
    def tensor(self) -> torch.Tensor:
        return getattr(self.module, self.name)


@dataclass(eq=False)
class GroupFamily:
    """One regularised set of groups; `role` 0/1 is the P1/P2 term it belongs to (the matrix A1 or A2)."""

    block: int
    layer: int
    role: int
    members: list[Member]
    cuts: list[Cut] = field(default_factory=list)
    same_as: 'GroupFamily | None' = None

    @property
    def size(self) -> int:
        m = self.members[0]
        return m.param.shape[m.dim] // m.chunk

    @property
    def chunk(self) -> int:
        return self.members[0].chunk

    def channels(self, groups: torch.Tensor) -> torch.Tensor:
        """Channel indices covered by the given (sorted) group indices."""
        c = self.chunk
        return (groups.view(-1, 1) * c + torch.arange(c, device=groups.device)).reshape(-1)


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
        ids, family_of_group, offset = [], [], 0
        for index, fam in enumerate(families):
            ids += [m.group_ids(offset) for m in fam.members]
            family_of_group += [index] * fam.size
            offset += fam.size
        self.n_groups = offset
        self.element_group = torch.cat(ids)
        device = self.element_group.device
        self.group_family = torch.tensor(family_of_group, dtype=torch.long, device=device)
        self.family_role = torch.tensor([f.role for f in families], dtype=torch.long, device=device)
        self.family_slices = []
        start = 0
        for fam in families:
            self.family_slices.append(slice(start, start + fam.size))
            start += fam.size

    def squared_norms(self, tensors: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Sum of squares of every group (differentiable); `tensors` defaults to the members themselves."""
        tensors = tensors if tensors is not None else [m.param for m in self.members]
        flat = torch.cat([t.reshape(-1) for t in tensors])
        return flat.new_zeros(self.n_groups).index_add(0, self.element_group, flat * flat)

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
