"""FLOPs and parameters counted the way the original counter does, but analytically.

The original counts, per image: convolutions k*k*c_in/groups*c_out*H_out*W_out (no bias), linear layers
c_in*c_out, BatchNorm 2*C*H*W (affine), ReLU-like modules the elements of their output, and nothing for
pooling, dropout, functional ops or custom modules. Parameters are those that require grad.

For modern CNNs (none of which the original's networks contain) the same rules extend to: linear layers on
(N, ..., C) inputs, times the leading non-batch dims; BatchNorm1d, GroupNorm and LayerNorm, 2 x elements when
affine (1 x otherwise); the activations of ACTIVATIONS, the elements of their output; adaptive average and max
pooling modules, the elements of their input.

Here the spatial size of every counted module is recorded once by `trace` (one forward pass at build time);
afterwards FLOPs follow from tensor shapes alone, so the count of a would-be-compressed network is a cheap
function of channel counts (`shape_of` maps a tensor to its hypothetical shape). `merges` counts pairs of a
convolution and the 1x1 convolution after it as the single convolution they fold into (the merged view).
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from math import prod

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU)
ACTIVATIONS = RELU_LIKE + (nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Mish)
ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# Not charged, but their output has their input's channels: a counted module after them finds its source.
PASS_THROUGH = (nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Upsample)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
NORMS = BATCH_NORMS + (nn.GroupNorm, nn.LayerNorm)
CHANNEL_MODULES = (nn.Conv2d, nn.Linear) + NORMS  # their own tensors carry their output channel count
ShapeOf = Callable[[torch.Tensor], tuple]
Merges = list[tuple[nn.Conv2d, nn.Conv2d]]


def actual_shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


@dataclass
class CountedModule:
    """One module the counter charges for: `spatial` elements per channel of the tensor it is charged for."""

    module: nn.Module
    spatial: int                     # H*W for (N, C, H, W); the leading non-batch dims for a linear's (N, ..., C)
    source: 'nn.Module | Joined | None' = None  # whose tensors give the channel count (itself for CHANNEL_MODULES)
    channels: int = 0                # traced channel count, used when no tensor of the source carries it


def _channel_tensor(m: nn.Module) -> torch.Tensor | None:
    """The tensor whose first dimension is the output channel count of a CHANNEL_MODULES module (None if none)."""
    if isinstance(m, BATCH_NORMS) and m.running_mean is not None:
        return m.running_mean
    return m.weight


@dataclass(frozen=True)
class Joined:
    """The source of a concatenation along the channel axis: its parts' (source, traced channel count)."""

    parts: tuple


class FollowChannels(TorchFunctionMode):
    """While tracing, gives the outputs of functional operations a source too: a concatenation along the channel
    axis joins its inputs' sources, an operation that keeps the batch and channel axes keeps its input's."""

    def __init__(self, producers: dict):
        super().__init__()
        self.producers = producers

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or id(out) in self.producers:
            return out
        first = args[0] if args else None
        if func in (torch.cat, torch.concat) and isinstance(first, (list, tuple)):
            dim = args[1] if len(args) > 1 else kwargs.get('dim', 0)
            if dim % out.dim() == 1:
                parts = tuple((self.producers.get(id(t), (None,))[0], t.shape[1]) for t in first)
                self.producers[id(out)] = (Joined(parts), out)
        elif isinstance(first, torch.Tensor) and id(first) in self.producers and first.dim() == out.dim() and \
                first.shape[:2] == out.shape[:2]:
            self.producers[id(out)] = (self.producers[id(first)][0], out)
        return out


def _channels(source: 'nn.Module | Joined | None', traced: int, shape_of: ShapeOf) -> int:
    """A channel count from the source's channel tensor, so that cuts show in it; else the traced count."""
    if isinstance(source, Joined):
        return sum(_channels(part, count, shape_of) for part, count in source.parts)
    tensor = _channel_tensor(source) if source is not None else None
    return traced if tensor is None else shape_of(tensor)[0]


def module_flops(entry: CountedModule, shape_of: ShapeOf = actual_shape) -> int:
    """FLOPs of one counted module for the given (possibly hypothetical) tensor shapes."""
    m = entry.module
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        return entry.spatial * prod(shape_of(m.weight))
    factor = 2 if isinstance(m, NORMS) and m.weight is not None else 1
    return factor * entry.spatial * _channels(entry.source, entry.channels, shape_of)


def _record(module: nn.Module, inputs: tuple, output: torch.Tensor, producers: dict) -> CountedModule:
    """The entry of a module seen in the traced forward; its output becomes known as carrying its source's channels."""
    if isinstance(module, CHANNEL_MODULES):
        source, tensor = module, output
    else:  # an activation (its output has its input's shape) or a pooling charged for its input
        tensor = inputs[0]
        source = producers.get(id(tensor), (None, None))[0]
    fallback = tensor.shape[1] if tensor.dim() > 1 else tensor.numel()
    channels = _channels(source, fallback, actual_shape)
    producers[id(output)] = (source, output)  # the tensor is kept alive so that its id stays unique
    return CountedModule(module, tensor.numel() // channels, source, channels)


def probe(net: nn.Module, input_dim: tuple, handles: list, context=None) -> None:
    """One batch-1 forward pass of a zero input in eval mode, without gradients (and inside `context`), for the
    hooks whose `handles` are removed afterwards; the modules' training modes are restored."""
    modes = {m: m.training for m in net.modules()}
    param = next(net.parameters())
    try:
        net.eval()
        with torch.no_grad(), context or contextlib.nullcontext():
            net(torch.zeros(1, *input_dim, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training


class ComplexityModel:
    """Per-image FLOPs and parameter count of a network, evaluated without running it."""

    def __init__(self, net: nn.Module, counted: list[CountedModule]):
        self.net = net
        self.counted = counted
        self.entry = {e.module: e for e in counted}

    @classmethod
    def trace(cls, net: nn.Module, input_dim: tuple) -> 'ComplexityModel':
        """Record the size of each counted module's charged tensor with one batch-1 forward pass; modes are restored."""
        producers: dict[int, tuple[nn.Module | None, torch.Tensor]] = {}
        counted: list[CountedModule] = []

        def hook(module, inputs, output):
            counted.append(_record(module, inputs, output, producers))

        def pass_through(module, inputs, output):
            if isinstance(output, torch.Tensor) and id(inputs[0]) in producers:
                producers[id(output)] = (producers[id(inputs[0])][0], output)

        handles = [m.register_forward_hook(hook) for m in net.modules()
                   if isinstance(m, CHANNEL_MODULES + ACTIVATIONS + ADAPTIVE_POOLS)]
        handles += [m.register_forward_hook(pass_through) for m in net.modules() if isinstance(m, PASS_THROUGH)]
        probe(net, input_dim, handles, FollowChannels(producers))
        return cls(net, counted)

    def flops(self, shape_of: ShapeOf = actual_shape, merges: Merges = ()) -> int:
        """FLOPs per image, as the original counter would report them (for the merged network with `merges`)."""
        return sum(self.flops_terms(shape_of, merges))

    def flops_of(self, kinds: tuple[type, ...], shape_of: ShapeOf = actual_shape) -> int:
        """FLOPs of the counted modules of the given types alone, to compare with counters that see only those."""
        return sum(module_flops(e, shape_of) for e in self.counted if isinstance(e.module, kinds))

    def params(self, shape_of: ShapeOf = actual_shape, merges: Merges = ()) -> int:
        """Number of trainable parameters (of the merged network with `merges`)."""
        return sum(self.params_terms(shape_of, merges))

    def flops_terms(self, shape_of: ShapeOf, merges: Merges) -> list:
        """The summands of `flops`: one per counted module, and a correction per merged pair."""
        terms = [module_flops(e, shape_of) for e in self.counted]
        for conv, matrix in merges:
            terms += self.fold_flops_terms(conv, matrix, shape_of)
        return terms

    def fold_flops_terms(self, conv: nn.Conv2d, matrix: nn.Conv2d, shape_of: ShapeOf) -> list:
        """What folding the pair (conv, matrix) into one convolution changes in `flops`, as summands."""
        first, second = self.entry[conv], self.entry[matrix]
        return [first.spatial * prod(_merged_weight_shape(conv, matrix, shape_of)),
                -module_flops(first, shape_of), -module_flops(second, shape_of)]

    def params_terms(self, shape_of: ShapeOf, merges: Merges) -> list:
        """The summands of `params`: one per trainable tensor, and the merged pairs' corrections."""
        terms = [prod(shape_of(p)) for p in self.net.parameters() if p.requires_grad]
        for conv, matrix in merges:
            terms += self.fold_params_terms(conv, matrix, shape_of)
        return terms

    def fold_params_terms(self, conv: nn.Conv2d, matrix: nn.Conv2d, shape_of: ShapeOf) -> list:
        """What folding the pair (conv, matrix) into one convolution changes in `params`, as summands."""
        own = [p for m in (conv, matrix) for p in m.parameters() if p.requires_grad]
        merged_shape = _merged_weight_shape(conv, matrix, shape_of)
        has_bias = conv.bias is not None or matrix.bias is not None
        return [prod(merged_shape), merged_shape[0] if has_bias else 0] + [-prod(shape_of(p)) for p in own]


def _merged_weight_shape(conv: nn.Conv2d, matrix: nn.Conv2d, shape_of: ShapeOf) -> tuple:
    """The weight shape of the convolution that `conv` followed by the 1x1 `matrix` folds into."""
    return (shape_of(matrix.weight)[0],) + tuple(shape_of(conv.weight)[1:])


class Polynomial:
    """An integer polynomial in numbered variables, for counting FLOPs of symbolic shapes: the counter run once
    on shapes whose channel counts are polynomials yields the count as a polynomial of those variables.

    `terms` maps a monomial (sorted tuple of variable numbers, repeated for powers) to its coefficient.
    """

    def __init__(self, terms: dict[tuple[int, ...], int]):
        self.terms = {m: c for m, c in terms.items() if c}

    @staticmethod
    def of(value) -> 'Polynomial':
        return value if isinstance(value, Polynomial) else Polynomial({(): int(value)})

    def __add__(self, other) -> 'Polynomial':
        return Polynomial.total([self, other])

    __radd__ = __add__

    def __neg__(self) -> 'Polynomial':
        return Polynomial({m: -c for m, c in self.terms.items()})

    def __sub__(self, other) -> 'Polynomial':
        return self + -Polynomial.of(other)

    def __rsub__(self, other) -> 'Polynomial':
        return Polynomial.of(other) - self

    def __mul__(self, other) -> 'Polynomial':
        terms: dict[tuple[int, ...], int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in Polynomial.of(other).terms.items():
                m = tuple(sorted(m1 + m2))
                terms[m] = terms.get(m, 0) + c1 * c2
        return Polynomial(terms)

    __rmul__ = __mul__

    @staticmethod
    def total(summands: list) -> 'Polynomial':
        """The sum of integers and polynomials, accumulated in one dictionary (repeated `+` copies it)."""
        terms: dict[tuple[int, ...], int] = {}
        for summand in summands:
            for m, c in Polynomial.of(summand).terms.items():
                terms[m] = terms.get(m, 0) + c
        return Polynomial(terms)

    def compile(self) -> 'CompiledPolynomial':
        return CompiledPolynomial(self)


class CompiledPolynomial:
    """A Polynomial as index and coefficient tensors, evaluated at many points at once in float64 (exact for
    the integer counts of networks: every partial product stays far below 2**53)."""

    def __init__(self, poly: Polynomial):
        by_degree: dict[int, list[tuple[tuple[int, ...], int]]] = {}
        for m, c in poly.terms.items():
            by_degree.setdefault(len(m), []).append((m, c))
        self.constant = float(dict(by_degree.pop(0, [])).get((), 0))
        self.parts = [(torch.tensor([m for m, _ in terms], dtype=torch.long),
                       torch.tensor([c for _, c in terms], dtype=torch.float64))
                      for _, terms in sorted(by_degree.items())]

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """The polynomial at `values` (..., n_variables), float64."""
        values = values.double()
        total = torch.full(values.shape[:-1], self.constant, dtype=torch.float64)
        for index, coefficients in self.parts:
            total = total + (values[..., index].prod(-1) * coefficients).sum(-1)
        return total
