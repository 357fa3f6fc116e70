"""The compression plan of a network: plain data, keyed by module paths and tensor names.

A plan says where each sparsity-inducing matrix A is inserted (or which existing 1x1 convolutions act as A),
which groups are regularised (family members: tensor, dimension, channels per group), which tensor axes
follow each family when it is compressed (cuts, with an offset into concatenated axes), which (conv, A)
pairs merge back into one convolution, and the search policy of the model. Adapters write plans by hand;
an automatic planner can emit the same format. A plan holds no module references: it round-trips through
JSON, is saved with every run (plan.json) and rebuilds a compressed network without re-planning.
"""

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from model_hinge.errors import HingeError

INSERT_STYLES = ('wrap', 'after')
PROX_LR_CHOICES = ('last_group', 'role_group')


@dataclass
class Insertion:
    """A after the convolution at `conv` (a module path of the baseline).

    'wrap': the conv becomes Sequential(conv, A) at the same path (keys `path.0.*`, `path.1.*`);
    'after': A is inserted right after the conv in its parent Sequential, later entries move up by one.
    A takes over the conv's bias. `group_dim` is the group direction the disturbance initialisations
    normalise (0: rows, 1: columns); `merge` folds conv and A back into one convolution for deployment.
    """

    conv: str
    style: str = 'wrap'
    group_dim: int = 1
    merge: bool = False

    @property
    def conv_path(self) -> str:
        """Where the conv sits once A is inserted."""
        return f'{self.conv}.0' if self.style == 'wrap' else self.conv

    @property
    def matrix_path(self) -> str:
        """Where A sits once inserted."""
        if self.style == 'wrap':
            return f'{self.conv}.1'
        parent, index = split_path(self.conv)
        return f'{parent}.{int(index) + 1}' if parent else str(int(index) + 1)


@dataclass
class Member:
    """A tensor whose slices along `dim`, `chunk` channels at a time, belong to the family's groups; with
    `positions`, only the listed slices do (group g owns positions[g * chunk:(g + 1) * chunk]), the others
    belonging to other families or to none (the rows of a residual stream's writer split by the streams that
    carry them on)."""

    tensor: str
    dim: int
    chunk: int = 1
    positions: list[int] | None = None


@dataclass
class Cut:
    """The family's channels occupy positions offset .. offset + channels of this tensor axis, or, with
    `positions`, the listed positions: group g of the family owns positions[g * r:(g + 1) * r], r being
    len(positions) / groups (an index map: a channel shuffle, the H*W inputs of a Linear after flatten, or the
    output channels of a grouped convolution that loses whole groups with the convolution feeding it).

    Under --legacy_search the original's indexing errors are reproduced where it made them:
    `legacy_transposed`, it built this tensor's selection in the transposed (in, out) layout and reshaped it
    without transposing back; `legacy_offset`, it indexed these positions from this offset instead.
    """

    tensor: str
    axis: int
    offset: int = 0
    legacy_transposed: bool = False
    legacy_offset: int | None = None
    positions: list[int] | None = None


@dataclass
class Family:
    """One regularised set of groups (e.g. the columns of one A) and what compressing it removes.

    `role` is the penalty term (P1, P2, ...) and optimizer role it belongs to; `block` and `layer` label the
    compression report; `same_as` (index of another family) keeps as many groups as that family under
    --p1_p2_same_ratio. `weight` is the group-lasso weight of its groups: the proximal step shrinks a group by
    weight * lambda and the threshold search compares ||g|| / weight (the square root of the member count for
    coupled writers, so that a coupled channel competes with a single one by its rows' root mean square).
    """

    block: int
    layer: int
    role: int
    members: list[Member]
    cuts: list[Cut] = field(default_factory=list)
    same_as: int | None = None
    weight: float = 1.0


@dataclass
class Legacy:
    """The original code's quirks, reproduced under --legacy_search where they shaped published numbers."""

    prox_ignores_annealing: bool = False      # the proximal threshold uses --regularization_factor as is
    prox_ignores_layer_balancing: bool = False
    layer_weight_shift: int = 0               # family i uses the layer weight of family i - shift
    unmerged_search: bool = False             # the search measures FLOPs without folding the merging pairs


@dataclass
class Policy:
    """How the search treats this model."""

    label: str = 'Block'            # prefix of the compression report's lines
    roles: int = 1                  # penalty terms P1 (, P2)
    separate_roles: bool = False    # one optimizer group per role, with the gradient-ratio lr adjustment
    mean_penalty: bool = False      # a role's penalty is the mean (True) or the sum over its matrices
    grad_ratio_buffer: bool = False  # the model carries the running_grad_ratio buffer
    prox_lr: str = 'last_group'     # proximal threshold from the last optimizer group's lr, or each role's own
    legacy: Legacy = field(default_factory=Legacy)


@dataclass
class Plan:
    """Everything the generic core needs to convert, search, compress and merge one network."""

    model: str
    insertions: list[Insertion] = field(default_factory=list)
    replacements: dict[str, str] = field(default_factory=dict)   # module path -> module kind (core.MODULE_KINDS)
    families: list[Family] = field(default_factory=list)
    policy: Policy = field(default_factory=Policy)
    notes: list[str] = field(default_factory=list)  # what a planner left alone, and why
    # parameter-free modules that move channels (a zero-padding shortcut): module path -> [input channels,
    # output channels]; each is wrapped so that its inputs and outputs are cut by index (core.ChannelIndexed)
    indexed: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> 'Plan':
        """A plan from to_json() text; text that is not a plan is a HingeError."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise HingeError(f'the compression plan is not JSON ({err}).') from None
        if not isinstance(data, dict):
            raise HingeError('the compression plan is not a JSON object; pass the text of Plan.to_json().')
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'Plan':
        """Rebuild a plan from to_dict() output (e.g. plan.json); malformed data is a HingeError."""
        try:
            policy = dict(data.get('policy', {}))
            policy['legacy'] = Legacy(**policy.get('legacy', {}))
            families = [Family(**{**f, 'members': [Member(**m) for m in f['members']],
                                  'cuts': [Cut(**c) for c in f.get('cuts', [])]}) for f in data['families']]
            plan = cls(model=data['model'], insertions=[Insertion(**i) for i in data.get('insertions', [])],
                       replacements=dict(data.get('replacements', {})), families=families, policy=Policy(**policy),
                       notes=list(data.get('notes', [])), indexed=dict(data.get('indexed', {})))
        except (KeyError, TypeError, ValueError) as err:
            raise HingeError(f'the compression plan is malformed ({err}); delete plan.json to plan again.') from None
        plan.check_form()
        return plan

    def check_form(self) -> None:
        """Checks that need no network: styles, roles, partners."""
        problems = [f'insertion style {i.style!r}' for i in self.insertions if i.style not in INSERT_STYLES]
        after_parents = [split_path(i.conv)[0] for i in self.insertions if i.style == 'after']
        if len(set(after_parents)) < len(after_parents):
            problems.append("two 'after' insertions in one Sequential")
        problems += [f'family {n} role {f.role}' for n, f in enumerate(self.families)
                     if not 0 <= f.role < self.policy.roles]
        problems += [f'family {n} same_as {f.same_as}' for n, f in enumerate(self.families)
                     if f.same_as is not None and not 0 <= f.same_as < len(self.families)]
        problems += [f'family {n} has no members' for n, f in enumerate(self.families) if not f.members]
        problems += [f'family {n} weight {f.weight}' for n, f in enumerate(self.families) if not f.weight > 0]
        if self.policy.prox_lr not in PROX_LR_CHOICES:
            problems.append(f'prox_lr {self.policy.prox_lr!r}')
        if problems:
            raise HingeError(f'the compression plan of {self.model} is invalid: {", ".join(problems)}.')

    @property
    def merges(self) -> list[Insertion]:
        return [i for i in self.insertions if i.merge]


def split_path(path: str) -> tuple[str, str]:
    """'a.b.c' -> ('a.b', 'c'); 'c' -> ('', 'c')."""
    parent, _, last = path.rpartition('.')
    return parent, last


def bn_tensors(path: str) -> list[str]:
    """The per-channel tensors of the BatchNorm at `path`."""
    return [f'{path}.{name}' for name in ('weight', 'bias', 'running_mean', 'running_var')]


def cuts_of(tensors: list[str], axis: int, offset: int = 0) -> list[Cut]:
    return [Cut(t, axis, offset) for t in tensors]
