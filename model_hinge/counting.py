"""The would-be cost of compressing at a threshold, fast: the search evaluates it many times per threshold walk.

`SurvivorCounter` counts the groups `surgery.select_kept` would keep in every family at once from the sorted
norms (the rare degenerate families, all or nearly all norms zero, go through `select_kept` itself), and
`CostPolynomial` gives FLOPs and parameters as a polynomial of the removed-group counts, obtained by running the
complexity counter once on symbolic shapes. Both are exact: they agree with `select_kept` and the counter.
"""

import torch

from model_hinge.complexity import ComplexityModel, Merges, Polynomial
from model_hinge.groups import GroupFamily
from model_hinge.surgery import rounded_up, select_kept


class SurvivorCounter:
    """How many groups of each family survive a threshold, for one set of group norms."""

    def __init__(self, families: list[GroupFamily], norms: dict, percentage: float, same_ratio: bool,
                 multiple: int = 1):
        self.families, self.multiple = families, multiple
        self.norms = [norms[f].float() for f in families]
        self.sizes = torch.tensor([f.size for f in families])
        padded = torch.nn.utils.rnn.pad_sequence(self.norms, batch_first=True, padding_value=float('-inf'))
        self.sorted = padded.sort(dim=1, descending=True).values
        self.minimum = torch.clamp((self.sizes * percentage).long(), min=1).minimum(self.sizes)
        index = {f: i for i, f in enumerate(families)}
        self.partner = torch.tensor([index[f.same_as] if same_ratio and f.same_as is not None else -1
                                     for f in families])
        self.percentage = percentage
        rows = torch.arange(len(families))
        self.kth = self.sorted[rows, self.minimum - 1]
        self.degenerate = ((self.sorted[:, 0] <= 0) | (self.kth <= 0)) & (self.partner < 0)

    def counts(self, threshold: float) -> torch.Tensor:
        """Survivors per family (long), as `select_kept` would keep them at `threshold`."""
        bound = torch.minimum(self.kth, torch.tensor(threshold, dtype=torch.float32)).unsqueeze(1)
        above = self.sorted > bound if threshold == 0 else self.sorted >= bound
        counts = above.sum(1)
        for row in self.degenerate.nonzero().view(-1).tolist():
            counts[row] = len(select_kept(self.norms[row], threshold, self.percentage))
        counts = rounded_up(counts, self.sizes, self.multiple)
        pending = self.partner >= 0
        while bool(pending.any()):
            ready = pending & ~pending[self.partner.clamp(min=0)]
            if not bool(ready.any()):
                raise ValueError('the --p1_p2_same_ratio partners of the compression plan form a cycle')
            self._count_fixed(counts, ready.nonzero().view(-1), threshold)
            pending &= ~ready
        return counts

    def _count_fixed(self, counts: torch.Tensor, rows: torch.Tensor, threshold: float) -> None:
        """Families that keep as many groups as their partner (ties at the last kept norm survive too)."""
        k = counts[self.partner[rows]].minimum(self.sizes[rows])
        kth = self.sorted[rows, k - 1]
        counts[rows] = (self.sorted[rows] >= kth.unsqueeze(1)).sum(1)
        degenerate = (self.sorted[rows, 0] <= 0) | (kth <= 0)
        for row, fixed in zip(rows[degenerate].tolist(), k[degenerate].tolist(), strict=True):
            counts[row] = len(select_kept(self.norms[row], threshold, self.percentage, fixed))
        counts[rows] = rounded_up(counts[rows], self.sizes[rows], self.multiple)


class CostPolynomial:
    """FLOPs and parameters of the network with r_f groups removed from each family f, as polynomials of r.

    Each pair of `foldable` is counted at the cheaper of its two forms (conv and A apart, or folded into one
    convolution), as compression then folds it: the FLOPs change of folding it is a polynomial too, and it is
    applied where it is negative.
    """

    def __init__(self, families: list[GroupFamily], complexity: ComplexityModel, merges: Merges,
                 foldable: Merges = ()):
        self.sizes = torch.tensor([f.size for f in families], dtype=torch.float64)
        shape_of = symbolic_shape_of(families)
        self.flops = Polynomial.total(complexity.flops_terms(shape_of, merges)).compile()
        self.params = Polynomial.total(complexity.params_terms(shape_of, merges)).compile()
        self.folds = [(Polynomial.total(complexity.fold_flops_terms(conv, a, shape_of)).compile(),
                       Polynomial.total(complexity.fold_params_terms(conv, a, shape_of)).compile())
                      for conv, a in foldable]

    def __call__(self, counts: torch.Tensor) -> tuple[int, int]:
        """(FLOPs, params) when each family keeps `counts` groups."""
        removed = self.sizes - counts.double()
        flops, params = float(self.flops(removed)), float(self.params(removed))
        for fold_flops, fold_params in self.folds:
            change = float(fold_flops(removed))
            if change < 0:
                flops, params = flops + change, params + float(fold_params(removed))
        return round(flops), round(params)


def symbolic_shape_of(families: list[GroupFamily]):
    """A shape function for the complexity counter whose cut axes are polynomials (the others stay integers, which
    keeps the one symbolic pass cheap): base size minus, for every family cutting the axis, its positions per group
    times its removed groups (variable number = family index)."""
    removed: dict[int, dict[int, Polynomial]] = {}
    for number, fam in enumerate(families):
        for cut in fam.cuts:
            lost = Polynomial({(number,): cut.per_group(fam)})
            axes = removed.setdefault(id(cut.tensor), {})
            axes[cut.axis] = axes.get(cut.axis, 0) + lost

    def shape_of(t: torch.Tensor) -> tuple:
        shape: list = list(t.shape)
        for axis, lost in removed.get(id(t), {}).items():
            shape[axis] = shape[axis] - lost
        return tuple(shape)

    return shape_of
