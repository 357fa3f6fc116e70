"""The automatic planner: a compression plan for any CNN that torch.fx traces.

The model is traced and run once on one example; next to every tensor the tracer carries an integer tensor of
the same shape whose entries name the channel each element belongs to (-1: a channel nobody may cut, such as the
input's colours, a constant or the output of an operation that is not understood). Structural operations
(reshape, permute, concatenation, flatten, ...) are applied to these id tensors themselves, so channel shuffles,
concatenation offsets and flatten -> Linear positions come out as index maps without special cases; element-wise
operations between tensors couple the channels they combine (residual sums, squeeze-excitation scales).

Then, per convolution with groups == 1: if its output channels are free (no other channel is ever combined with
them and every place that reads them can be cut), A's rows prune them and every tensor that reads them follows.
Convolutions whose channels are coupled channel for channel with each other's and nothing else (the writers of a
residual stream) are pruned together by default: one family per set of writers, whose groups span their A's rows.
A pad of the channel axis adds new channels; inside a parameter-free module with one input and one output (a
zero-padding shortcut) the module is cut by index (core.ChannelIndexed), so a stream and the wider stream it is
padded into are pruned together; a pad anywhere else leaves what it reads and adds whole.
Otherwise A's columns decompose the convolution and its output width stays. Grouped convolutions are left alone
(a depthwise convolution passes its input channels through, so it is cut with them). Anything not understood
leaves the channels involved uncut, and the plan's notes say which operation and why.
"""

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from model_hinge.errors import HingeError
from model_hinge.plan import Cut, Family, Insertion, Member, Plan, Policy, split_path

FIXED = -1  # the id of a channel that can never be cut

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
               nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout2d,
               nn.AlphaDropout)
POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample,
           nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    operator.itruediv, operator.neg, torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.sigmoid, torch.tanh,
    torch.relu, torch.clamp, F.relu, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.gelu, F.sigmoid, F.tanh, F.mish,
    F.leaky_relu, F.elu, F.dropout, F.dropout2d, F.hardtanh}
ELEMENTWISE_METHODS = {'add', 'add_', 'sub', 'sub_', 'mul', 'mul_', 'div', 'div_', 'neg', 'sigmoid', 'sigmoid_',
                       'tanh', 'relu', 'relu_', 'clamp', 'clamp_', 'clamp_min', 'clamp_min_'}
ELEMENTWISE_NAMES = {'stochastic_depth'}   # torchvision.ops.stochastic_depth: identity in eval, a per-sample scale
POOLING_FUNCTIONS = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d, F.interpolate}
SHAPE_FREE_FUNCTIONS = {torch.permute, torch.transpose, torch.unsqueeze, torch.t}
SHAPE_FREE_METHODS = {'permute', 'transpose', 'contiguous', 'unsqueeze', 't'}
MERGING_FUNCTIONS = {torch.flatten, torch.squeeze}
MERGING_METHODS = {'flatten', 'squeeze', 'expand', 'expand_as'}
RESHAPES = {torch.reshape, 'view', 'reshape'}
SLICES = {torch.split: 'split', torch.chunk: 'chunk', torch.narrow: 'narrow', 'split': 'split', 'chunk': 'chunk',
          'narrow': 'narrow', 'unbind': 'unbind', torch.unbind: 'unbind'}
REDUCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin, 'mean', 'sum', 'amax', 'amin'}


class ChannelSets:
    """Union-find over channel ids; a set is frozen when something that cannot be cut reads or mixes it."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.frozen: list[bool] = []

    def new(self, count: int) -> torch.Tensor:
        start = len(self.parent)
        self.parent += range(start, start + count)
        self.size += [1] * count
        self.frozen += [False] * count
        return torch.arange(start, start + count)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        self.frozen[ra] = self.frozen[ra] or self.frozen[rb]

    def freeze(self, ids: torch.Tensor) -> None:
        for x in torch.unique(spatially_distinct(ids)[0]).tolist():
            if x >= 0:
                self.frozen[self.find(x)] = True

    def is_free(self, x: int) -> bool:
        """Whether x is the only channel of its set and nothing fixed touches it."""
        root = self.find(x)
        return self.size[root] == 1 and not self.frozen[root]


@dataclass
class Site:
    """A tensor axis whose positions hold the channels `ids` (one entry per position): cut with them."""

    tensor: str
    axis: int
    ids: torch.Tensor


def fixed_like(value):
    """Ids of a value whose channels nobody may cut (tensors, and tuples or lists of them)."""
    if isinstance(value, torch.Tensor):
        return torch.full((1,) * value.dim(), FIXED, dtype=torch.long)
    if isinstance(value, (tuple, list)) and not isinstance(value, torch.Size):
        return type(value)(fixed_like(v) for v in value)
    return None


def holds_tensors(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (tuple, list)) and any(holds_tensors(v) for v in value)


def spatially_distinct(*ids: torch.Tensor) -> list[torch.Tensor]:
    """The ids of same-shaped tensors with their spatial axes (2 on) reduced to one position where none varies
    there (the usual case: a channel per (batch, channel) position), so that set operations stay small."""
    if ids[0].dim() >= 3 and all(bool((t.flatten(2) == t.flatten(2)[..., :1]).all()) for t in ids):
        return [t.flatten(2)[..., 0] for t in ids]
    return list(ids)


def varies_along(ids: torch.Tensor, dim: int) -> bool:
    return bool((ids != ids.narrow(dim, 0, 1)).any())


def channel_vector(ids: torch.Tensor, axis: int, size: int) -> torch.Tensor | None:
    """The channel id of each of the `size` positions of `axis`, or None when ids vary along the other axes."""
    moved = ids.movedim(axis, 0).reshape(ids.shape[axis], -1)
    if bool((moved != moved[:, :1]).any()):
        return None
    return moved[:, 0].expand(size).clone() if moved.shape[0] == 1 else moved[:, 0].clone()


def broadcast_vector(vector: torch.Tensor, dims: int, axis: int) -> torch.Tensor:
    """Ids holding `vector` along `axis`, of size 1 along the others (they broadcast to the value's shape)."""
    view = [1] * dims
    view[axis] = len(vector)
    return vector.view(view)


def reshape_splits_varying(ids: torch.Tensor, in_shape: list[int], out_shape: tuple) -> bool:
    """Whether a reshape splits an axis along which ids vary into several axes (e.g. a channel shuffle): cutting
    a channel then changes which positions the later axes see."""
    i = j = 0
    while i < len(in_shape) and j < len(out_shape):
        in_dims, out_dims = [i], [j]
        a, b = in_shape[i], out_shape[j]
        while a != b:
            if a < b:
                i += 1
                in_dims.append(i)
                a *= in_shape[i]
            else:
                j += 1
                out_dims.append(j)
                b *= out_shape[j]
        i, j = i + 1, j + 1
        varying = any(ids.shape[d] > 1 and varies_along(ids, d) for d in in_dims)
        if varying and sum(out_shape[d] > 1 for d in out_dims) > 1:
            return True
    return False


class ChannelTracer(fx.Interpreter):
    """Runs the traced model on one example while carrying the channel ids of every tensor."""

    def __init__(self, gm: fx.GraphModule, model: nn.Module):
        super().__init__(gm, garbage_collect_values=False)
        self.model = model
        self.sets = ChannelSets()
        self.ids: dict[fx.Node, object] = {}
        self.sites: dict[tuple[str, int], Site] = {}
        self.producers: dict[str, torch.Tensor] = {}  # conv path -> its output channel ids (groups == 1)
        self.order: list[str] = []
        self.notes: list[str] = []
        self.grouped: dict[str, tuple[torch.Tensor, int, torch.Tensor]] = {}  # path -> (input ids, groups, output ids)
        self.added: list[torch.Tensor] = []  # the ids of the channels that pads add
        self.pads: dict[str, list[fx.Node]] = {}  # module path -> its pads of the channel axis
        self.indexed: dict[str, list[int]] = {}  # module path -> [input, output channels] (plan.Plan.indexed)
        self.fake = FakeTensorMode(allow_non_fake_inputs=True)  # shapes only: the planner needs no values

    def run_node(self, n: fx.Node):
        with self.fake:
            result = super().run_node(n)
        try:
            self.ids[n] = self.channel_ids(n, result)
        except (RuntimeError, TypeError, ValueError, IndexError) as err:
            self.ids[n] = self.not_understood(n, result, f'its channels could not be followed ({err})')
        return result

    def channel_ids(self, n: fx.Node, result):
        if n.op == 'placeholder':
            return fixed_like(result)
        if n.op == 'get_attr':
            return None
        if n.op == 'output':
            for ids in self.tensor_ids(n.args):
                self.sets.freeze(ids)
            return None
        if n.op == 'call_module':
            return self.module_ids(n, self.model.get_submodule(n.target), result)
        return self.function_ids(n, result)

    def tensor_ids(self, args) -> list[torch.Tensor]:
        """The id tensors among (nested) node arguments."""
        found = []
        fx.node.map_arg(args, lambda a: found.append(self.ids.get(a)))
        flat = []
        for ids in found:
            flat += [t for t in (ids if isinstance(ids, (tuple, list)) else [ids]) if isinstance(t, torch.Tensor)]
        return flat

    def not_understood(self, n: fx.Node, result, why: str):
        """Freeze every channel the node reads; its outputs are fixed."""
        for ids in self.tensor_ids((n.args, n.kwargs)):
            self.sets.freeze(ids)
        self.notes.append(f'{describe_node(n)}: {why}; the channels it reads are not cut.')
        return fixed_like(result)

    def input_ids(self, n: fx.Node) -> torch.Tensor:
        return self.ids[n.args[0]]

    def full(self, a: fx.Node) -> torch.Tensor:
        """The ids of a node's tensor at the tensor's full shape (stored ids have size 1 where they are constant)."""
        return self.ids[a].expand(self.env[a].shape).contiguous()

    def add_site(self, tensor: str, axis: int, ids: torch.Tensor) -> None:
        """A tensor axis that reads channels; a module called twice on different channels cuts nothing."""
        key = (tensor, axis)
        known = self.sites.get(key)
        if known is not None and not torch.equal(known.ids, ids):
            self.sets.freeze(known.ids)
            self.sets.freeze(ids)
            self.notes.append(f'{tensor} reads different channels in different calls; they are not cut.')
            ids = torch.full_like(ids, FIXED)
        self.sites[key] = Site(tensor, axis, ids)

    def module_ids(self, n: fx.Node, m: nn.Module, result):
        ids = self.input_ids(n) if n.args else None
        if ids is None:
            return fixed_like(result)   # applied to a constant (a buffer, an attribute): it reads no channels
        if isinstance(m, nn.Conv2d):
            return self.conv_ids(n, m, ids, result)
        if isinstance(m, nn.Linear):
            vector = channel_vector(ids, ids.dim() - 1, m.in_features)
            if vector is None:
                return self.not_understood(n, result, 'its input mixes channels along the features')
            self.add_site(f'{n.target}.weight', 1, vector)
            return fixed_like(result)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            vector = channel_vector(ids, 1, m.num_features)
            if vector is None:
                return self.not_understood(n, result, 'its input mixes channels')
            for name in ('weight', 'bias', 'running_mean', 'running_var'):
                if isinstance(getattr(m, name, None), torch.Tensor):
                    self.add_site(f'{n.target}.{name}', 0, vector)
            return ids
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            self.sets.freeze(ids)
            self.notes.append(f'{n.target} ({type(m).__name__}): its statistics span channels; they are not cut.')
            return ids
        if isinstance(m, ACTIVATIONS) and result.dim() == ids.dim():
            return ids
        if isinstance(m, POOLING):
            return self.pooled(n, result)
        if isinstance(m, nn.Flatten):
            return self.full(n.args[0]).flatten(m.start_dim, m.end_dim)
        return self.not_understood(n, result, f'the module {type(m).__name__} is not understood')

    def conv_ids(self, n: fx.Node, m: nn.Conv2d, ids: torch.Tensor, result: torch.Tensor):
        vector = channel_vector(ids, 1, m.in_channels)
        if vector is None:
            return self.not_understood(n, result, 'its input channels vary over space')
        if m.groups == 1:
            self.add_site(f'{n.target}.weight', 1, vector)
            if n.target not in self.producers:
                self.producers[n.target] = self.sets.new(m.out_channels)
                self.order.append(n.target)
            return broadcast_vector(self.producers[n.target], result.dim(), 1)
        if m.groups == m.in_channels == m.out_channels:
            for name in ('weight', 'bias'):
                if getattr(m, name) is not None:
                    self.add_site(f'{n.target}.{name}', 0, vector)
            return broadcast_vector(vector, result.dim(), 1)
        if n.target not in self.grouped:
            self.grouped[n.target] = (vector, m.groups, self.sets.new(m.out_channels))
        outputs = self.grouped[n.target][2]
        for name in ('weight', 'bias'):
            if getattr(m, name) is not None:
                self.add_site(f'{n.target}.{name}', 0, outputs)
        return broadcast_vector(outputs, result.dim(), 1)

    def pooled(self, n: fx.Node, result: torch.Tensor):
        """Per-channel spatial operations: the channel vector spread over the output."""
        ids, channels = self.input_ids(n), self.env[n.args[0]].shape[1]
        vector = channel_vector(ids, 1, channels) if ids.dim() >= 3 and result.dim() == ids.dim() else None
        if vector is None or result.shape[1] != channels:
            return self.not_understood(n, result, 'it changes the channels')
        return broadcast_vector(vector, result.dim(), 1)

    def function_ids(self, n: fx.Node, result):
        target = n.target
        named = getattr(target, '__name__', '') if n.op == 'call_function' else ''
        if not holds_tensors(result):
            return None
        if target in ELEMENTWISE_FUNCTIONS or target in ELEMENTWISE_METHODS or named in ELEMENTWISE_NAMES:
            return self.elementwise(n, result)
        if target in POOLING_FUNCTIONS:
            return self.pooled(n, result)
        if target is F.pad:
            return self.padded(n, result)
        if target is operator.getitem:
            return self.item(n, result)
        if target in (torch.cat, torch.concat):
            return self.joined(n, result)
        if target in SHAPE_FREE_FUNCTIONS or target in SHAPE_FREE_METHODS:
            return self.replay(n, full=False)
        if target in MERGING_FUNCTIONS or target in MERGING_METHODS:
            return self.replay(n)
        if target in RESHAPES:
            if reshape_splits_varying(self.input_ids(n), list(self.env[n.args[0]].shape), tuple(result.shape)):
                return self.not_understood(n, result, 'it splits the channel axis (a channel shuffle or grouping)')
            return self.replay(n)
        if target in SLICES:
            return self.sliced(n, SLICES[target], result)
        if target in REDUCTIONS:
            return self.reduced(n, result)
        if not self.tensor_ids((n.args, n.kwargs)):
            return fixed_like(result)
        return self.not_understood(n, result, 'the operation is not understood')

    def replay(self, n: fx.Node, full: bool = True):
        """Apply the node's own operation to the id tensors (shapes and positions move exactly as the data), at
        the tensors' full shapes unless the operation does not depend on them (`full` False)."""
        def substitute(a: fx.Node):
            value = self.env.get(a)
            if isinstance(value, torch.Tensor):
                ids = self.ids.get(a)
                ids = ids if ids is not None else fixed_like(value)
                return ids.expand(value.shape).contiguous() if full else ids
            return value

        args = fx.node.map_arg(n.args, substitute)
        kwargs = fx.node.map_arg(n.kwargs, substitute)
        if n.op == 'call_method':
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        return n.target(*args, **kwargs)

    def joined(self, n: fx.Node, result: torch.Tensor):
        """A concatenation: the parts' ids side by side, at full size only along the axes where they differ."""
        parts = n.args[0]
        dim = (n.args[1] if len(n.args) > 1 else n.kwargs.get('dim', 0)) % result.dim()
        ids = [self.ids[p] if self.ids.get(p) is not None else fixed_like(self.env[p]) for p in parts]
        shape = [max(i.shape[d] for i in ids) if d != dim else -1 for d in range(result.dim())]
        return torch.cat([i.expand([s if s != -1 else self.env[p].shape[dim] for s in shape])
                          for i, p in zip(ids, parts, strict=True)], dim)

    def elementwise(self, n: fx.Node, result):
        """Channels combined position by position belong together; a fixed one or a constant tensor freezes them."""
        operands, constants = [], False
        for a in [*n.args, *n.kwargs.values()]:
            if isinstance(a, fx.Node) and isinstance(self.env.get(a), torch.Tensor):
                ids = self.ids.get(a)
                if ids is None:
                    constants = constants or self.env[a].numel() > 1
                else:
                    operands.append(ids)
        if not isinstance(result, torch.Tensor) or not operands:
            return fixed_like(result)
        operands = [o.view((1,) * (result.dim() - o.dim()) + tuple(o.shape)) for o in operands]
        operands = list(torch.broadcast_tensors(*operands))
        if constants:
            for o in operands:
                self.sets.freeze(o)
            self.notes.append(f'{describe_node(n)}: combined with a constant tensor; its channels are not cut.')
        combined = operands[0].clone()
        for other in operands[1:]:
            self.couple(combined, other)
            combined = torch.where(combined >= 0, combined, other)
        return combined

    def couple(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = spatially_distinct(a, b)
        both = (a >= 0) & (b >= 0) & (a != b)
        span = len(self.sets.parent)
        pairs = torch.unique(a[both] * span + b[both])
        for x, y in zip((pairs // span).tolist(), (pairs % span).tolist(), strict=True):
            self.sets.union(x, y)
        self.sets.freeze(a[(b == FIXED) & (a >= 0)])
        self.sets.freeze(b[(a == FIXED) & (b >= 0)])

    def padded(self, n: fx.Node, result: torch.Tensor):
        """F.pad: new positions of the channel axis are new channels (see `added_channels`), new spatial positions
        belong to theirs."""
        ids = self.input_ids(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        pad = list(args[1] if len(args) > 1 else kwargs['pad'])
        for k in range(len(pad) // 2):
            dim, before, after = ids.dim() - 1 - k, pad[2 * k], pad[2 * k + 1]
            if dim == 1:
                self.pads.setdefault(module_path(n), []).append(n)
                shape = list(ids.shape)
                ids = torch.cat([self.added_channels(n, shape[:1] + [before] + shape[2:]), ids,
                                 self.added_channels(n, shape[:1] + [after] + shape[2:])], 1)
            elif ids.shape[dim] > 1:
                index = torch.arange(-before, ids.shape[dim] + after).clamp(0, ids.shape[dim] - 1)
                ids = ids.index_select(dim, index)
        if any(i not in (1, r) for i, r in zip(ids.shape, result.shape, strict=True)):
            return self.not_understood(n, result, 'its padding could not be followed')
        return ids

    def added_channels(self, n: fx.Node, shape: list[int]) -> torch.Tensor:
        """Channels a pad adds: new ids (they read nothing), which the sums they enter couple with what they
        meet. They can be cut only where the module that pads can be cut by index (see `index_padding_modules`)."""
        ids = self.sets.new(shape[1])
        self.added.append(ids)
        return ids.view([1, -1] + [1] * (len(shape) - 2)).expand(shape)

    def index_padding_modules(self) -> None:
        """After the run: each module that pads the channel axis is cut by index (core.ChannelIndexed) where it
        has no parameters and one input and one output, both with a channel per position of axis 1; elsewhere
        the channels its pads read and add (and all they meet) stay whole."""
        for path, pads in self.pads.items():
            ends = self.module_ends(path) if path else None
            if ends is None:
                for n in pads:
                    self.sets.freeze(self.full(n))
                self.notes.append(f'{path or type(self.model).__name__}: it pads the channel axis and cannot be cut by '
                                  'index (it has parameters, or not one input and one output); the channels it pads '
                                  'are not cut.')
                continue
            for name, vector in zip(('inputs', 'outputs'), ends, strict=True):
                self.add_site(f'{path}.{name}', 0, vector)
            self.indexed[path] = [len(ends[0]), len(ends[1])]

    def module_ends(self, path: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The channel vectors of the one tensor a parameter-free module reads and the one it returns, or None."""
        if next(self.model.get_submodule(path).parameters(), None) is not None:
            return None
        inside = {n for n in self.module.graph.nodes if path in module_paths(n)}
        reads = {a for n in inside for a in n.all_input_nodes
                 if a not in inside and isinstance(self.env.get(a), torch.Tensor)}
        returns = [n for n in inside if any(u not in inside for u in n.users)]
        if len(reads) != 1 or len(returns) != 1:
            return None
        vectors = []
        for node in (*reads, *returns):
            value = self.env.get(node)
            ids = self.ids.get(node)
            if not isinstance(value, torch.Tensor) or not isinstance(ids, torch.Tensor) or value.dim() < 2:
                return None
            vectors.append(channel_vector(ids, 1, value.shape[1]))
        return None if vectors[0] is None or vectors[1] is None else (vectors[0], vectors[1])

    def item(self, n: fx.Node, result):
        source = self.ids.get(n.args[0])
        if isinstance(source, (tuple, list)):
            return source[n.args[1]]
        if not isinstance(source, torch.Tensor):
            return fixed_like(result)
        source = self.full(n.args[0])
        index = n.args[1] if isinstance(n.args[1], tuple) else (n.args[1],)
        if any(not isinstance(i, (slice, int)) for i in index):
            return self.not_understood(n, result, 'it indexes with tensors, None or Ellipsis')
        for dim, i in enumerate(index):
            if i != slice(None) and varies_along(source, dim):
                return self.not_understood(n, result, 'it selects channels by position')
        return source[n.args[1]]

    def sliced(self, n: fx.Node, kind: str, result):
        source = self.full(n.args[0])
        args = [self.env.get(a, a) if isinstance(a, fx.Node) else a for a in n.args[1:]]
        if kind == 'narrow':
            dim = args[0] if args else n.kwargs.get('dim')
        elif kind == 'unbind':
            dim = args[0] if args else n.kwargs.get('dim', 0)
        else:
            dim = args[1] if len(args) > 1 else n.kwargs.get('dim', 0)
        if varies_along(source, dim % source.dim()):
            return self.not_understood(n, result, f'a {kind} of the channel axis fixes positions')
        return self.replay(n)

    def reduced(self, n: fx.Node, result):
        source = self.input_ids(n)
        dims = n.args[1] if len(n.args) > 1 else n.kwargs.get('dim')
        if dims is None:
            return fixed_like(result) if not bool((source >= 0).any()) else self.not_understood(
                n, result, 'it reduces every axis')
        dims = sorted({d % source.dim() for d in (dims if isinstance(dims, (tuple, list)) else [dims])}, reverse=True)
        if any(varies_along(source, d) for d in dims):
            return self.not_understood(n, result, 'it reduces over channels')
        keep = n.args[2] if len(n.args) > 2 else n.kwargs.get('keepdim', False)
        out = source
        for d in dims:
            out = out.narrow(d, 0, 1)
            if not keep:
                out = out.squeeze(d)
        return out.contiguous()


def module_paths(n: fx.Node) -> list[str]:
    """The paths of the modules whose forward the node belongs to, outermost first."""
    return [entry[0] for entry in (n.meta.get('nn_module_stack') or {}).values()]


def module_path(n: fx.Node) -> str:
    """The path of the innermost module the node belongs to ('' for the model's own forward)."""
    paths = module_paths(n)
    return paths[-1] if paths else ''


def describe_node(n: fx.Node) -> str:
    name = n.target if isinstance(n.target, str) else getattr(n.target, '__name__', str(n.target))
    return f'{n.name} ({name})'


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - any tracing failure is reported as the model's
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HingeError(f'the model {type(model).__name__} does not trace with torch.fx ({first}); pass a Plan '
                         'written by hand (model_hinge.Plan) or make the untraceable part a leaf module.') from None


def first_example(model: nn.Module, example_inputs) -> torch.Tensor:
    """One example (batch of 1) on the model's device and dtype; a wrong shape is refused by running it."""
    x = example_inputs[0] if isinstance(example_inputs, (tuple, list)) and example_inputs else example_inputs
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise HingeError('example_inputs must be a batch tensor (N, C, H, W) (or a tuple holding one), e.g. '
                         'torch.randn(1, 3, 224, 224).')
    param = next(model.parameters(), None)
    return x[:1].to(param.device, param.dtype) if param is not None else x[:1]


def trace_channels(model: nn.Module, example_inputs) -> ChannelTracer:
    """Trace the model and follow the channels of one example through it (eval mode; modes are restored)."""
    gm = trace(model)
    x = first_example(model, example_inputs)
    tracer = ChannelTracer(gm, model)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            tracer.run(tracer.fake.from_tensor(x))
        tracer.index_padding_modules()
    except HingeError:
        raise
    except Exception as err:  # noqa: BLE001 - the model rejected the example
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HingeError(f'the model does not run on example_inputs of shape {tuple(x.shape)} ({first}); pass an '
                         'input of the shape it expects.') from None
    finally:
        for m, training in modes.items():
            m.training = training
    return tracer


def sites_by_owner(tracer: ChannelTracer, owners: dict[str, torch.Tensor]) -> dict[str, list[Site]]:
    """The sites that read each owner's channels (owners: convolutions, with disjoint id sets)."""
    names = list(owners)
    owner = torch.full((len(tracer.sets.parent) + 1,), -1, dtype=torch.long)   # the last entry: FIXED
    for index, name in enumerate(names):
        owner[owners[name]] = index
    found: dict[str, list[Site]] = {name: [] for name in names}
    for site in tracer.sites.values():
        for index in torch.unique(owner[site.ids]).tolist():
            if index >= 0:
                found[names[index]].append(site)
    return found


def grouped_reader(tracer: ChannelTracer, channels: torch.Tensor) -> tuple[str, int] | None | str:
    """The grouped convolution that reads these channels and the channels per group with which they can be cut
    in whole groups (it reads exactly them, in order, and its outputs are free); None when none reads them;
    its path alone when one does but whole groups cannot be cut."""
    first, count = int(channels[0]), len(channels)
    readers = [q for q, (ids, _, _) in tracer.grouped.items() if bool(((ids >= first) & (ids < first + count)).any())]
    if not readers:
        return None
    q = readers[0]
    ids, groups, outputs = tracer.grouped[q]
    if len(readers) == 1 and torch.equal(ids, channels) and all(tracer.sets.is_free(int(c)) for c in outputs):
        return q, count // groups
    return q


def group_lookup(size: int, channel_lists: list[torch.Tensor]) -> torch.Tensor:
    """The group of every channel id (-1: none; the last entry answers FIXED): channel g of each list is group g."""
    lookup = torch.full((size + 1,), -1, dtype=torch.long)
    for channels in channel_lists:
        lookup[channels] = torch.arange(len(channels))
    return lookup


def consumer_cuts(sites: list[Site], lookup: torch.Tensor, count: int, renamed: dict[str, str],
                  as_offset: bool = True) -> list[Cut] | None:
    """The cuts of every axis that reads the `count` groups of `lookup`, in group order; None when some axis holds
    them in unequal numbers of positions (then they cannot be pruned as groups). A contiguous block of one position
    per group is written as an offset unless `as_offset` is False (the family's groups hold other channel counts)."""
    cuts = []
    for site in sites:
        groups = lookup[site.ids]
        positions = (groups >= 0).nonzero().view(-1)
        owner = groups[positions]
        per_channel = torch.bincount(owner, minlength=count)
        if bool((per_channel != per_channel[0]).any()):
            return None
        ordered = positions[torch.argsort(owner * len(site.ids) + positions)]
        tensor = renamed.get(site.tensor, site.tensor)
        start = int(ordered[0])
        if as_offset and torch.equal(ordered, torch.arange(start, start + len(ordered))) and per_channel[0] == 1:
            cuts.append(Cut(tensor, site.axis, start))
        else:
            cuts.append(Cut(tensor, site.axis, positions=ordered.tolist()))
    return cuts


def pruning_cuts(tracer: ChannelTracer, path: str, readers: dict[str, list[Site]], renamed: dict[str, str],
                 notes: list[str]) -> tuple[list[Cut] | None, int]:
    """(cuts, channels per group) that prune a free convolution's output channels: one at a time, or in whole
    groups of the grouped convolution that reads them, together with that convolution's groups of outputs and
    whatever reads those; (None, 1) when neither is possible (the reason goes to the notes)."""
    channels = tracer.producers[path]
    grouped = grouped_reader(tracer, channels)
    if isinstance(grouped, str):
        notes.append(f'{path}: the grouped convolution {grouped} reads its channels, and whole groups of both cannot '
                     'be cut together; decomposed instead.')
        return None, 1
    size = len(tracer.sets.parent)
    cuts = consumer_cuts(readers[path], group_lookup(size, [channels]), len(channels), renamed)
    chunk = 1
    if grouped is not None and cuts is not None:
        q, chunk = grouped
        outputs = tracer.grouped[q][2]
        follow = consumer_cuts(readers[q], group_lookup(size, [outputs]), len(outputs), renamed,
                               as_offset=len(outputs) == len(channels))
        cuts = None if follow is None else cuts + follow
    if cuts is None:
        notes.append(f'{path}: its channels are read in unequal numbers of positions; decomposed instead.')
    return cuts, chunk


@dataclass
class Coupling:
    """Channel sets coupled across convolutions, pruned as one family: set g is `roots[g]`, and `rows[w][g]` is
    the output channel (row of A) of writer w in it."""

    roots: list[int]
    rows: dict[str, list[int]]


def set_roots(tracer: ChannelTracer) -> torch.Tensor:
    """The set of every channel id, with one more entry (-1) that answers FIXED."""
    return torch.tensor([tracer.sets.find(x) for x in range(len(tracer.sets.parent))] + [-1], dtype=torch.long)


def couplings(tracer: ChannelTracer, roots: torch.Tensor) -> list[Coupling]:
    """The channel sets that convolutions' outputs share and that can be pruned together, grouped by the
    convolutions writing them: a set qualifies when it holds one output channel of each of its writers and
    otherwise only channels that an index-cut pad adds, nothing fixed touches it, and no grouped convolution
    reads its writers (the writers of a residual stream, across zero-padding shortcuts; a convolution and the
    squeeze-excitation scale that multiplies it)."""
    sets = tracer.sets
    written: dict[int, list[tuple[str, int]]] = {}
    for path in tracer.order:
        for row, root in enumerate(roots[tracer.producers[path]].tolist()):
            written.setdefault(root, []).append((path, row))
    added = torch.zeros(len(roots), dtype=torch.long)   # the pads that cannot be cut froze their channels' sets
    for ids in tracer.added:
        added += torch.bincount(roots[ids], minlength=len(roots))
    ungrouped = {p for p in tracer.order if grouped_reader(tracer, tracer.producers[p]) is None}
    found: dict[tuple[str, ...], Coupling] = {}
    for root, members in written.items():
        writers = tuple(path for path, _ in members)
        if (sets.frozen[root] or sets.size[root] < 2 or len(set(writers)) < len(writers)
                or sets.size[root] != len(members) + int(added[root]) or not set(writers) <= ungrouped):
            continue
        coupling = found.setdefault(writers, Coupling([], {w: [] for w in writers}))
        coupling.roots.append(root)
        for path, row in members:
            coupling.rows[path].append(row)
    return list(found.values())


def coupling_cuts(tracer: ChannelTracer, coupling: Coupling, roots: torch.Tensor, renamed: dict[str, str],
                  notes: list[str]) -> list[Cut] | None:
    """The cuts of every axis that reads a coupling's channels (its writers' readers, index-cut modules), in
    set order; None (noted) when some axis reads them in unequal numbers of positions."""
    group_of_root = torch.full((len(roots),), -1, dtype=torch.long)
    group_of_root[coupling.roots] = torch.arange(len(coupling.roots))
    lookup = group_of_root[roots]
    sites = [s for s in tracer.sites.values() if bool((lookup[s.ids] >= 0).any())]
    cuts = consumer_cuts(sites, lookup, len(coupling.roots), renamed)
    if cuts is None:
        notes.append(f'{", ".join(coupling.rows)}: their coupled channels are read in unequal numbers of positions; '
                     'decomposed instead.')
    return cuts


def coupling_family(block: int, coupling: Coupling, model: nn.Module, cuts: list[Cut]) -> Family:
    """The family pruning a coupling: the rows of every writer's A (and the biases they take over) in set order,
    weighted by the square root of the writer count (group lasso's weight for a group of that many rows)."""
    members, own = [], []
    for path, rows in coupling.rows.items():
        conv = model.get_submodule(path)
        listed = None if rows == list(range(conv.out_channels)) else rows
        members.append(Member(f'{path}.1.weight', 0, positions=listed))
        own += [Cut(c.tensor, 0, positions=listed) for c in own_cuts(path, conv)]
    return Family(block, 1, 0, members, own + cuts, weight=len(members) ** 0.5)


def auto_plan(model: nn.Module, example_inputs, decompose_free: bool = False, prune_coupled: bool = True,
              name: str = 'Hinge') -> Plan:
    """The compression plan of any torch.fx-traceable CNN (see the module docstring); the model is not changed.

    `decompose_free`: the convolutions whose outputs are pruned also get their A's columns regularised
    (decomposition and pruning with one matrix, which then stays unmerged).
    `prune_coupled`: convolutions whose outputs are coupled channel for channel (the writers of a residual
    stream, also across zero-padding shortcuts) are pruned together, one group per coupled channel over the rows
    of all their matrices, instead of decomposed; coupled channels that cannot be cut together are decomposed.
    """
    tracer = trace_channels(model, example_inputs)
    sets = tracer.sets
    renamed = {f'{p}.weight': f'{p}.0.weight' for p in tracer.order}
    free = {p for p in tracer.order if all(sets.is_free(int(c)) for c in tracer.producers[p])}
    readers = sites_by_owner(tracer, {**tracer.producers, **{q: g[2] for q, g in tracer.grouped.items()}})
    insertions, pruning, decomposing, notes = [], [], [], list(tracer.notes)
    roots = set_roots(tracer)
    joint = []
    for coupling in couplings(tracer, roots) if prune_coupled else []:
        cuts = coupling_cuts(tracer, coupling, roots, renamed, notes)
        if cuts is not None:
            joint.append((coupling, cuts))
    pruned_together = {w for coupling, _ in joint for w in coupling.rows}
    for block, path in enumerate(tracer.order):
        conv = model.get_submodule(path)
        a = f'{path}.1'
        cuts, chunk = pruning_cuts(tracer, path, readers, renamed, notes) if path in free else (None, 1)
        prune = cuts is not None or path in pruned_together
        insertions.append(Insertion(path, group_dim=0 if prune else 1, merge=prune and not decompose_free))
        if cuts is not None:
            pruning.append(Family(block, 1, 0, [Member(f'{a}.weight', 0, chunk)], own_cuts(path, conv) + cuts))
        pruning += [coupling_family(block, coupling, model, shared) for coupling, shared in joint
                    if next(iter(coupling.rows)) == path]
        if not prune or decompose_free:
            decomposing.append(Family(block, 2, 0, [Member(f'{a}.weight', 1)],
                                      [Cut(f'{path}.0.weight', 0), Cut(f'{a}.weight', 1)]))
    roles = 2 if pruning and decomposing else 1
    for fam in decomposing:
        fam.role = roles - 1
    families = sorted(pruning + decomposing, key=lambda f: (f.block, f.layer))
    cut = {split_path(c.tensor)[0] for fam in families for c in fam.cuts}
    indexed = {path: widths for path, widths in tracer.indexed.items() if path in cut}
    return Plan(name, insertions, {}, families, Policy(label='Conv', roles=roles), notes=notes, indexed=indexed)


def own_cuts(path: str, conv: nn.Module) -> list[Cut]:
    """The rows of the A after the convolution at `path` (and of the bias it takes over)."""
    a = f'{path}.1'
    return [Cut(f'{a}.weight', 0)] + ([Cut(f'{a}.bias', 0)] if conv.bias is not None else [])


def summary(plan: Plan, model: nn.Module) -> dict[str, list[str]]:
    """Which convolutions of the (unconverted) model a plan prunes (the rows of its A), decomposes (the columns)
    and leaves alone; a family whose matrix is an existing convolution names that convolution."""
    conv_of = {i.matrix_path: i.conv for i in plan.insertions}
    kinds: dict[str, set[str]] = {'pruned': set(), 'decomposed': set()}
    for fam in plan.families:
        for member in fam.members:
            matrix = split_path(member.tensor)[0]
            kinds['pruned' if member.dim == 0 else 'decomposed'].add(conv_of.get(matrix, matrix))
    touched = kinds['pruned'] | kinds['decomposed'] | set(conv_of.values())
    convs = [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return {'pruned': sorted(kinds['pruned']), 'decomposed': sorted(kinds['decomposed']),
            'left alone': [p for p in convs if p not in touched]}
