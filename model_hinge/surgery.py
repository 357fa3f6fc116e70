"""Physical compression by index selection, conv+A merging, and loading checkpoints into a network.

Nothing here knows an architecture: the bound group families say which tensor positions each family
occupies, one keep-mask per (tensor, axis) is built from all of them and applied once, and module
attributes (channel counts, groups) are re-derived from the tensor shapes afterwards.
"""

import torch
import torch.nn as nn

from model_hinge.errors import HingeError
from model_hinge.groups import GroupFamily
from model_hinge.plan import Insertion, split_path

OPTIONAL_KEYS = ('running_grad_ratio',)


def select_kept(norms: torch.Tensor, threshold: float, percentage: float, fixed: int = 0) -> torch.Tensor:
    """Indices (sorted) of the groups that survive nullification, with the original's rule and arithmetic.

    Keep groups with norm >= min(t, threshold), t being the k-th largest norm (k = remain percentage of the
    groups, at least one), so at least the k largest survive; norms and threshold compare in float32, as in
    the original. With `fixed` > 0 (--p1_p2_same_ratio) keep the `fixed` largest. If the k-th largest norm
    is zero, keep the nonzero groups plus the first k; if every norm is zero, keep the first k.
    """
    norms = norms.float()
    k = fixed if fixed else max(1, int(len(norms) * percentage))
    k = min(k, len(norms))
    first_k = torch.arange(k)
    if norms.max() == 0:
        return first_k
    t = norms.topk(k).values[-1]
    if t == 0:
        keep = (norms > 0).nonzero().view(-1)
        return torch.unique(torch.cat([first_k, keep]))
    if fixed:
        return (norms >= t).nonzero().view(-1)
    bound = torch.minimum(t, torch.tensor(threshold, dtype=torch.float32))
    keep = norms > bound if threshold == 0 else norms >= bound
    return keep.nonzero().view(-1)


def kept_groups(families: list[GroupFamily], norms: dict, threshold: float, percentage: float,
                same_ratio: bool, multiple: int = 1) -> dict:
    """The surviving groups of every family; a family with `same_as` keeps as many as its partner; with
    `multiple`, each family's survivors grow to a multiple of it (grown_to_multiple)."""
    kept = {}
    for fam in families:
        fixed = len(kept[fam.same_as]) if same_ratio and fam.same_as is not None else 0
        kept[fam] = grown_to_multiple(norms[fam], select_kept(norms[fam], threshold, percentage, fixed), multiple)
    return kept


def rounded_up(counts: torch.Tensor, sizes: torch.Tensor, multiple: int) -> torch.Tensor:
    """Counts rounded up to the next multiple of `multiple`, at most the sizes."""
    return counts if multiple == 1 else torch.minimum(sizes, (counts + multiple - 1) // multiple * multiple)


def grown_to_multiple(norms: torch.Tensor, kept: torch.Tensor, multiple: int) -> torch.Tensor:
    """`kept` (sorted indices) and the largest of the other groups, up to the next multiple of `multiple` or all
    groups: channel counts that are multiples of the vector width run faster than their FLOPs say."""
    size = torch.tensor(len(norms))
    extra = int(rounded_up(torch.tensor(len(kept)), size, multiple)) - len(kept)
    if extra == 0:
        return kept
    others = torch.ones(len(norms), dtype=torch.bool)
    others[kept] = False
    rest = others.nonzero().view(-1)
    added = rest[norms.float()[rest].topk(extra).indices]
    return torch.cat([kept, added]).sort().values


def kept_positions(families: list[GroupFamily], kept: dict,
                   legacy: bool = False) -> dict[int, tuple[torch.Tensor, dict[int, torch.Tensor]]]:
    """The positions to keep of every cut (tensor, axis), from every family that cuts it: positions no family
    owns stay, each family keeps its kept channels' positions, in the axis' order (see groups.Cut.kept)."""
    segments: dict[int, tuple[torch.Tensor, dict[int, list]]] = {}
    for fam in families:
        groups = kept[fam].cpu()
        for cut in fam.cuts:
            axes = segments.setdefault(id(cut.tensor), (cut.tensor, {}))[1]
            axes.setdefault(cut.axis, []).append((cut.owned(fam), *cut.kept(fam, groups, legacy)))
    positions = {}
    for key, (t, axes) in segments.items():
        positions[key] = (t, {axis: _join(t.shape[axis], blocks) for axis, blocks in axes.items()})
    return positions


def _join(size: int, blocks: list) -> torch.Tensor:
    """Kept positions of an axis: the positions no block owns, and each block's kept ones where they go."""
    free = torch.ones(size, dtype=torch.bool)
    for owned, _, _ in blocks:
        free[owned] = False
    unowned = free.nonzero().view(-1)
    values = torch.cat([unowned] + [kept for _, kept, _ in blocks])
    places = torch.cat([unowned] + [place for _, _, place in blocks])
    return values[torch.argsort(places, stable=True)]


@torch.no_grad()
def compress(families: list[GroupFamily], kept: dict, net: nn.Module, legacy: bool = False) -> None:
    """Index-select every cut tensor to the kept positions (tensors keep their identity) and update modules.
    With `legacy`, the original's indexing errors marked in the plan are reproduced (see plan.Cut)."""
    scrambled = {id(c.tensor) for f in families for c in f.cuts if legacy and c.legacy_transposed}
    positions = kept_positions(families, kept, legacy)
    _check_whole_groups(net, positions)
    for t, axes in positions.values():
        data = t.data
        for axis, index in axes.items():
            data = data.index_select(axis, index.to(data.device))
        if id(t) in scrambled:
            data = data.reshape(data.shape[0], -1).t().reshape(data.shape)
        if isinstance(t, nn.Parameter):
            t.grad = None
        t.data = data.contiguous()
    sync_module_attributes(net)


def _check_whole_groups(net: nn.Module, positions: dict) -> None:
    """Refuse, before any tensor changes, a cut keeping part of a group of a grouped conv's outputs: no grouped
    convolution computes what is left."""
    kept_outputs = {id(t): axes.get(0) for t, axes in positions.values()}
    for path, m in net.named_modules():
        index = kept_outputs.get(id(m.weight)) if isinstance(m, nn.Conv2d) and m.groups > 1 else None
        size = m.out_channels // m.groups if index is not None else 1
        if index is not None and not _whole_groups(index.cpu(), size):
            raise HingeError(f'the compression plan splits the groups of the grouped convolution {path} ({size} '
                             'output channels each); its families must keep or drop whole groups.')


def _whole_groups(index: torch.Tensor, size: int) -> bool:
    """Whether the sorted positions `index` are whole aligned blocks of `size`."""
    if len(index) % size:
        return False
    blocks = index.view(-1, size)
    return bool((blocks == blocks[:, :1] + torch.arange(size)).all() and (blocks[:, 0] % size == 0).all())


def sync_module_attributes(net: nn.Module) -> None:
    """Re-derive channel counts (and conv groups) from the tensor shapes after a compression or load."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            _sync_conv(m)
        elif isinstance(m, nn.BatchNorm2d):
            ref = m.running_mean if m.running_mean is not None else m.weight
            m.num_features = ref.shape[0]
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape


def _sync_conv(conv: nn.Conv2d) -> None:
    """Channel counts and groups from the weight. A grouped conv only loses whole groups (each input block
    with the outputs it feeds), so its outputs per group stay: groups = outputs / outputs per group, and
    inputs = inputs per group (weight.shape[1]) * groups; a depthwise conv stays depthwise."""
    out = conv.weight.shape[0]
    if conv.groups > 1:
        per_group = conv.out_channels // conv.groups
        if out % per_group:
            raise HingeError(f'a grouped convolution was left with {out} output channels, not a whole number of '
                             f'its groups of {per_group}; grouped convolutions lose whole groups only.')
        conv.groups = out // per_group
    conv.out_channels, conv.in_channels = out, conv.weight.shape[1] * conv.groups


@torch.no_grad()
def merge_pair(pair: nn.Sequential) -> nn.Conv2d:
    """Fold Sequential(conv, A) into the single convolution A * conv (biases folded too). A grouped conv is
    refused: folded with a dense A it would be a dense convolution, costlier than the pair."""
    conv, matrix = pair[0], pair[1]
    if conv.groups > 1:
        raise HingeError(f'a grouped convolution ({conv.groups} groups) cannot absorb its dense 1x1 matrix A (the '
                         'fold would be a dense convolution); keep the pair.')
    a = matrix.weight.flatten(1)
    weight = torch.einsum('om,mikl->oikl', a, conv.weight)
    bias = matrix.bias.clone() if matrix.bias is not None else None
    if conv.bias is not None:
        bias = (bias if bias is not None else 0) + a @ conv.bias
    merged = nn.Conv2d(conv.in_channels, a.shape[0], conv.kernel_size, stride=conv.stride, padding=conv.padding,
                       dilation=conv.dilation, bias=bias is not None, padding_mode=conv.padding_mode)
    merged.weight.data = weight.clone(memory_format=layout_of(conv.weight))
    if bias is not None:
        merged.bias.data = bias
    return merged.to(conv.weight.device)


def layout_of(t: torch.Tensor) -> torch.memory_format:
    """The memory format a 4-d tensor (a convolution weight, an activation) is held in: channels last when only its
    strides say so (a 1x1 weight passes both contiguity tests, and the runtime picks the layout a convolution runs
    in from its weight's strides)."""
    plain = t.is_contiguous() and t.stride() == torch.empty(t.shape, device='meta').stride()
    return torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) and not plain \
        else torch.contiguous_format


def merge_insertion(net: nn.Module, insertion: Insertion) -> None:
    """Undo an insertion by folding its conv and A into one convolution where the conv was."""
    parent_path, key = split_path(insertion.conv)
    parent = net.get_submodule(parent_path) if parent_path else net
    if insertion.style == 'wrap':
        setattr(parent, key, merge_pair(getattr(parent, key)))
        return
    index = int(key)
    parent[index] = merge_pair(nn.Sequential(parent[index], parent[index + 1]))
    del parent[index + 1]


def _describe(keys: list[str]) -> str:
    shown = ', '.join(keys[:3])
    return shown + (f' and {len(keys) - 3} more' if len(keys) > 3 else '')


def load_state(net: nn.Module, state: dict, what: str, adapt: bool) -> list[str]:
    """Copy a state dict into `net`. Strict unless `adapt`, where a tensor of smaller shape replaces the
    model's (the original's load of compressed checkpoints) and channel attributes follow.

    Keys must match; a missing num_batches_tracked is tolerated and reported. Anything else that does not
    fit (other keys, other ranks, larger shapes) means another architecture and is refused.
    Returns notes for the log.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HingeError(f'{what} is not a state_dict (a mapping of names to tensors); '
                         'save checkpoints with torch.save(model.state_dict(), path).')
    damaged = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if damaged:
        raise HingeError(f'{what}: tensor {damaged[0]} holds NaN or inf ({len(damaged)} such tensor(s)); the '
                         'checkpoint is damaged or comes from a run that diverged.')
    own = net.state_dict(keep_vars=True)
    optional = [k for k in OPTIONAL_KEYS if k in state and k in net._buffers]
    unexpected = [k for k in state if k not in own and k not in optional]
    missing = [k for k in own if k not in state]
    tolerated = [k for k in missing if k.endswith('num_batches_tracked')]
    missing = [k for k in missing if k not in tolerated]
    bad_shape = [k for k in state if k in own and not _fits(state[k], own[k], adapt)]
    if unexpected or missing or bad_shape:
        parts = []
        if missing:
            parts.append(f'{len(missing)} tensors of the model are missing ({_describe(missing)})')
        if unexpected:
            parts.append(f'{len(unexpected)} tensors are unknown to it ({_describe(unexpected)})')
        if bad_shape:
            k = bad_shape[0]
            parts.append(f'{len(bad_shape)} have incompatible shapes (e.g. {k}: checkpoint '
                         f'{tuple(state[k].shape)}, model {tuple(own[k].shape)})')
        raise HingeError(f'{what} was written for another architecture: {"; ".join(parts)}; '
                         'check --model, --depth and the other architecture flags.')
    with torch.no_grad():
        for k, v in state.items():
            if k in optional:
                setattr(net, k, v.to(_device_of(net)))
                continue
            t = own[k]
            if t.shape == v.shape:
                t.copy_(v)
            else:
                t.data = v.to(device=t.device, dtype=t.dtype).clone(memory_format=torch.contiguous_format)
    sync_module_attributes(net)
    return [f'{what}: {len(tolerated)} num_batches_tracked entries were absent (left at zero).'] if tolerated else []


def _fits(value: torch.Tensor, target: torch.Tensor, adapt: bool) -> bool:
    if value.shape == target.shape:
        return True
    return adapt and value.dim() == target.dim() and all(a <= b for a, b in zip(value.shape, target.shape, strict=True))


def _device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device
