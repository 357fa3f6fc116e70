"""Measured latency as the compression target: a per-layer latency model of the deployable network.

Every convolution of the converted network is timed with a short micro-benchmark (median of a few runs after a
warm-up, on the model's device, at one batch size) at a small grid of widths: the narrowest (one channel, or one
group) and 1/8, 2/8, ..., 8/8 of its full width along each axis that compression cuts (output channels, input
channels per group), the full width along the others. In between, the time is interpolated bilinearly. Each
convolution's widths as a function of the groups every family removes come from the symbolic shapes that also
give the FLOPs (counting.symbolic_shape_of: channel counts linear in the removed-group counts), so the model maps
the survivor counts of any threshold to seconds per batch, for many thresholds at once.

A (conv, A) pair that the plan merges costs its folded convolution; a pair the plan keeps apart costs the cheaper
of its two forms when folding is allowed (the default compression and export fold the pairs that do not pay),
else the two convolutions. Everything that is not a convolution (normalisation, activations, additions, pooling,
the classifier) is one measured remainder: the network's time at full width minus its convolutions' times,
scaled by the element-wise work the complexity counter charges for it at the given widths. The baseline is the
same model with every pair folded and nothing removed (the two-slope activations of some plans stay in the
remainder). Timings are cached per device and runtime (CachedTimer: in memory, or in a json file).
Interpolation errs where a layer's time is not linear between grid widths (narrow layers on a CPU), so the
threshold search times the compressed network a threshold gives (candidate_ratio) and corrects its aim by the
model's error there (search.SearchController.measured_threshold).
"""

import copy
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn

from model_hinge.complexity import Polynomial, module_flops, probe
from model_hinge.config import HingeConfig
from model_hinge.core import HingeModel, restore
from model_hinge.counting import symbolic_shape_of
from model_hinge.errors import HingeError
from model_hinge.plan import Insertion
from model_hinge.surgery import layout_of

GRID = tuple(i / 8 for i in range(1, 9))
CACHE_FORMAT = 'hinge-latency/1'
APART, FOLDED, EITHER = 0, 1, 2   # how a (conv, A) pair is counted: as two convolutions, folded, the cheaper


@dataclass(frozen=True)
class ConvShape:
    """What a convolution's micro-benchmark needs besides its widths: kernel, stride, padding, dilation, output
    channels per group (0: ungrouped), bias, padding mode and the input's spatial size."""

    kernel: tuple
    stride: tuple
    padding: tuple | str
    dilation: tuple
    group_width: int
    bias: bool
    padding_mode: str
    size: tuple

    @classmethod
    def of(cls, conv: nn.Conv2d, size: tuple, bias: bool | None = None) -> 'ConvShape':
        """The shape of `conv` on inputs of spatial `size` (`bias` overrides the conv's own, for folded pairs)."""
        padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        return cls(tuple(conv.kernel_size), tuple(conv.stride), padding, tuple(conv.dilation),
                   conv.out_channels // conv.groups if conv.groups > 1 else 0,
                   conv.bias is not None if bias is None else bias, conv.padding_mode, tuple(size))

    def channels(self, out: int, inp: int) -> tuple[int, int, int]:
        """(in_channels, out_channels, groups) with `out` outputs and `inp` inputs per group; a grouped conv keeps
        its outputs per group and loses whole groups, as compression cuts it."""
        if not self.group_width:
            return inp, out, 1
        groups = max(1, round(out / self.group_width))
        return inp * groups, groups * self.group_width, groups

    def key(self, out: int, inp: int) -> str:
        """The cache key of this shape at these widths."""
        return 'conv ' + ' '.join(str(v) for v in astuple(self)) + f' out {out} in {inp}'


class Timer(Protocol):
    """Seconds per batch of one convolution at given widths, and of whole networks (timed in turn, so that a
    change of the machine's load hits them alike); `environment` names the device and runtime they hold for."""

    def environment(self) -> str: ...

    def conv(self, shape: ConvShape, out: int, inp: int) -> float: ...

    def networks(self, nets: list[nn.Module], input_dim: tuple) -> list[float]: ...

    def relative(self, nets: list[nn.Module], input_dim: tuple) -> list[float]: ...


def round_seconds(runs: list, device: torch.device, repeats: int) -> list[list[float]]:
    """Wall time of each callable in each of `repeats` rounds that call them in turn, after one warm-up call each
    (synchronising a GPU)."""
    for run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, spent in zip(runs, times, strict=True):
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            run()
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            spent.append(time.perf_counter() - start)
    return times


def median_seconds(runs: list, device: torch.device, repeats: int) -> list[float]:
    """Median wall time of each callable over `repeats` rounds that call them in turn."""
    return [statistics.median(spent) for spent in round_seconds(runs, device, repeats)]


def paired_ratios(times: list[list[float]]) -> list[float]:
    """Each callable's time as a fraction of the first's, from round_seconds: the median over the rounds of the
    fraction within a round. A slow or fast spell of a shared machine that spans a round cancels out; in the
    ratio of two medians it does not."""
    return [statistics.median(t / r for t, r in zip(spent, times[0], strict=True)) for spent in times]


def uses_channels_last(net: nn.Module) -> bool:
    """Whether the network's spatial convolutions hold channels-last weights (then it runs channels-last)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.weight.shape[-1] * m.weight.shape[-2] > 1:
            return layout_of(m.weight) == torch.channels_last
    return False


class DeviceTimer:
    """Times convolutions and networks in inference mode at `batch` on `device`, in the given memory layout:
    median of `repeats` runs for a convolution, of 5 * repeats + 1 for a network (the few measurements every
    prediction rests on). With `exported`, networks are timed as the torch.export programs a deployment runs."""

    def __init__(self, batch: int, device: torch.device | str, channels_last: bool = False, repeats: int = 3,
                 exported: bool = False):
        self.batch, self.device, self.channels_last, self.repeats = batch, torch.device(device), channels_last, repeats
        self.exported = exported
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def environment(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == 'cuda' else platform.processor()
        layout = 'channels-last' if self.channels_last else 'contiguous'
        programs = ', networks as torch.export programs' if self.exported else ''
        return (f'{self.device.type} ({name or "cpu"}), torch {torch.__version__}, {torch.get_num_threads()} threads, '
                f'{layout}, batch {self.batch}{programs}')

    def conv(self, shape: ConvShape, out: int, inp: int) -> float:
        in_channels, out_channels, groups = shape.channels(out, inp)
        layer = nn.Conv2d(in_channels, out_channels, shape.kernel, shape.stride, shape.padding, shape.dilation,
                          groups, shape.bias, shape.padding_mode)
        return self.run([layer], (in_channels, *shape.size), self.repeats)[0]

    def networks(self, nets: list[nn.Module], input_dim: tuple) -> list[float]:
        return [statistics.median(spent) for spent in self.network_rounds(nets, input_dim)]

    def relative(self, nets: list[nn.Module], input_dim: tuple) -> list[float]:
        """Each network's time as a fraction of the first's, paired round by round (paired_ratios)."""
        return paired_ratios(self.network_rounds(nets, input_dim))

    def network_rounds(self, nets: list[nn.Module], input_dim: tuple) -> list[list[float]]:
        """Seconds of each network (a placed copy, or its program) in each of 5 * repeats + 1 rounds."""
        modules = [self.placed(copy.deepcopy(net)) for net in nets]
        x = self.batch_for(modules[0], input_dim)
        if self.exported:
            modules = [torch.export.export(m, (x,), strict=False).module() for m in modules]
        with torch.inference_mode():
            return round_seconds([lambda m=m: m(x) for m in modules], self.device, 5 * self.repeats + 1)

    def run(self, modules: list[nn.Module], input_dim: tuple, repeats: int) -> list[float]:
        """Median seconds of each module (changed: moved and put in eval mode) on one random batch."""
        placed = [self.placed(m) for m in modules]
        x = self.batch_for(placed[0], input_dim)
        with torch.inference_mode():
            return median_seconds([lambda m=m: m(x) for m in placed], self.device, repeats)

    def placed(self, module: nn.Module) -> nn.Module:
        """The module on the timer's device, in its layout, in eval mode."""
        return module.to(self.device, memory_format=self.layout).eval()

    def batch_for(self, module: nn.Module, input_dim: tuple) -> torch.Tensor:
        """A random batch of the module's dtype on the timer's device, in its layout."""
        dtype = next(module.parameters(), torch.zeros(())).dtype
        x = torch.randn(self.batch, *input_dim, device=self.device, dtype=dtype)
        return x.contiguous(memory_format=self.layout)


def network_key(net: nn.Module, input_dim: tuple) -> str:
    """The cache key of a network: a digest of its structure, tensor shapes and input size."""
    shapes = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    digest = hashlib.sha1(f'{net!r}{shapes}{tuple(input_dim)}'.encode()).hexdigest()[:20]
    return f'network {digest}'


class CachedTimer:
    """A timer whose measurements are kept per environment in memory and, with `path`, in a json file that later
    builds read instead of measuring again (`save` writes it, atomically)."""

    def __init__(self, timer: Timer, path: str | os.PathLike | None = None):
        self.timer, self.path = timer, Path(path) if path is not None else None
        self.environment = timer.environment()
        self.document = read_cache(self.path) if self.path is not None else {'format': CACHE_FORMAT}
        self.entries: dict[str, float] = self.document.setdefault('environments', {}).setdefault(self.environment, {})
        self.measured, self.seconds = 0, 0.0

    def conv(self, shape: ConvShape, out: int, inp: int) -> float:
        return self._get(shape.key(out, inp), lambda: self.timer.conv(shape, out, inp))

    def networks(self, nets: list[nn.Module], input_dim: tuple) -> list[float]:
        keys = [network_key(net, input_dim) for net in nets]
        missing = [i for i, key in enumerate(keys) if key not in self.entries]
        if missing:
            self._measured(lambda: self.timer.networks([nets[i] for i in missing], input_dim),
                           [keys[i] for i in missing])
        return [self.entries[key] for key in keys]

    def relative(self, nets: list[nn.Module], input_dim: tuple) -> list[float]:
        """Timed afresh, never cached: a ratio is wanted of the networks as they are now."""
        return self.timer.relative(nets, input_dim)

    def _get(self, key: str, measure) -> float:
        if key not in self.entries:
            self._measured(lambda: [measure()], [key])
        return self.entries[key]

    def _measured(self, measure, keys: list[str]) -> None:
        """Store what `measure` returns (seconds per key), counting the measurements and the time they took."""
        start = time.perf_counter()
        for key, seconds in zip(keys, measure(), strict=True):
            self.entries[key] = float(seconds)
        self.seconds += time.perf_counter() - start
        self.measured += len(keys)

    def save(self) -> None:
        """Write the cache file (when there is one and something new was measured)."""
        if self.path is None or not self.measured:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f'.{self.path.name}.')
        with os.fdopen(handle, 'w') as f:
            json.dump(self.document, f, indent=1, sort_keys=True)
        os.replace(temporary, self.path)


def read_cache(path: Path) -> dict:
    """The cache document at `path` (a fresh one when the file does not exist); another file is refused."""
    if not path.exists():
        return {'format': CACHE_FORMAT}
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HingeError(f'latency cache {path} cannot be read as json ({err}); pass a path that holds a latency '
                         'cache or none yet.') from None
    if not isinstance(document, dict) or document.get('format') != CACHE_FORMAT:
        raise HingeError(f'latency cache {path} is not a latency cache (no {CACHE_FORMAT!r} format tag); pass a '
                         'path that holds a latency cache or none yet.')
    return document


def linear_form(width, count: int) -> tuple[float, torch.Tensor]:
    """(constant, coefficient per family) of a channel count that is an int or a Polynomial of degree at most 1
    in the removed-group counts."""
    coefficients = torch.zeros(count, dtype=torch.float64)
    if not isinstance(width, Polynomial):
        return float(width), coefficients
    constant = 0.0
    for monomial, c in width.terms.items():
        if len(monomial) > 1:
            raise HingeError(f'a channel count depends on the product of families {monomial}; the latency model '
                             'needs counts linear in the removed groups (use target flops).')
        if monomial:
            coefficients[monomial[0]] += c
        else:
            constant = float(c)
    return constant, coefficients


def grid_widths(full: int, varies: bool, unit: int, fractions: tuple[float, ...]) -> list[int]:
    """The widths an axis is measured at: the narrowest (`unit`) and `fractions` of its full width, in multiples of
    `unit`, where compression cuts it; its full width alone where it does not."""
    if not varies:
        return [full]
    return sorted({max(unit, round(full * f / unit) * unit) for f in fractions} | {unit, full})


def _bracket(widths: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid indices below and above x and the weight of the upper one (x clamped to the grid's ends)."""
    if len(widths) == 1:
        zero = torch.zeros(x.shape, dtype=torch.long)
        return zero, zero, torch.zeros(x.shape, dtype=torch.float64)
    hi = torch.searchsorted(widths, x.contiguous()).clamp(1, len(widths) - 1)
    lo = hi - 1
    return lo, hi, ((x - widths[lo]) / (widths[hi] - widths[lo])).clamp(0, 1)


class Grid:
    """Seconds of one layer shape measured at every (output width, input width) of a grid."""

    def __init__(self, outs: list[int], ins: list[int], seconds: torch.Tensor):
        self.outs = torch.tensor(outs, dtype=torch.float64)
        self.ins = torch.tensor(ins, dtype=torch.float64)
        self.seconds = seconds.double()

    @classmethod
    def measure(cls, timer: Timer, shape: ConvShape, outs: list[int], ins: list[int]) -> 'Grid':
        seconds = torch.tensor([[timer.conv(shape, o, i) for i in ins] for o in outs])
        return cls(outs, ins, seconds)

    def __call__(self, out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        """Bilinear interpolation at widths `out`, `inp` (tensors of one shape)."""
        o0, o1, wo = _bracket(self.outs, out)
        i0, i1, wi = _bracket(self.ins, inp)
        t = self.seconds
        return (1 - wo) * ((1 - wi) * t[o0, i0] + wi * t[o0, i1]) + wo * ((1 - wi) * t[o1, i0] + wi * t[o1, i1])


@dataclass
class Term:
    """One convolution of the deployable network: its shape and its widths as linear forms of the removals."""

    shape: ConvShape
    out: tuple[float, torch.Tensor]
    inp: tuple[float, torch.Tensor]

    def grid_key(self) -> tuple:
        """Terms with equal keys share one measured grid."""
        return self.shape, self.out[0], self.inp[0], bool(self.out[1].any()), bool(self.inp[1].any())


def conv_sizes(net: nn.Module, input_dim: tuple) -> dict[nn.Module, tuple[tuple, tuple]]:
    """The spatial sizes of every convolution's input and output, from one batch-1 forward pass (modes are
    restored)."""
    sizes: dict[nn.Module, tuple[tuple, tuple]] = {}

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        sizes.setdefault(module, (tuple(inputs[0].shape[2:]), tuple(output.shape[2:])))

    probe(net, input_dim, [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.Conv2d)])
    return sizes


class ConvStub(nn.Module):
    """Stands in for a convolution when the rest of a network is timed: returns a zero tensor of the
    convolution's output shape (allocated once per batch size) at almost no cost."""

    def __init__(self, channels: int, size: tuple):
        super().__init__()
        self.channels, self.size = channels, size
        self.out: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out is None or self.out.shape[0] != x.shape[0]:
            self.out = torch.empty(x.shape[0], self.channels, *self.size, device=x.device, dtype=x.dtype,
                                   memory_format=layout_of(x)).zero_()
        return self.out


def without_convolutions(net: nn.Module, sizes: dict) -> nn.Module:
    """A copy of `net` whose convolutions are ConvStubs: what is left to time is everything else."""
    stubs = {id(m): ConvStub(m.out_channels, sizes[m][1]) for m in net.modules() if m in sizes}
    return copy.deepcopy(net, memo=stubs)


def baseline_network(hm: HingeModel) -> nn.Module:
    """A copy of the baseline network: the converted one with the modules the plan replaced put back."""
    net, originals = copy.deepcopy((hm.net, hm.originals))
    restore(net, hm.plan, originals)
    return net


class LatencyModel:
    """Seconds per batch of the deployable network as a function of the groups each family keeps."""

    def __init__(self, hm: HingeModel, timer: Timer, merged_view: bool = True, fractions: tuple = GRID,
                 measure_baseline: bool = True, families: list | None = None):
        """Measure (through `timer`) every convolution of `hm`'s network at its grid, the network as it is now, the
        network without its convolutions and, with `measure_baseline` (`hm` not compressed yet), the baseline
        network; without it the baseline is predicted (every pair folded, nothing removed). `merged_view` counts
        the plan's merging pairs folded, as the search does; `families` (default hm's) are the variables (none:
        the network's widths as they are)."""
        families = hm.families if families is None else families
        self.timer, self.fractions, self.scale = timer, fractions, 1.0
        self.sizes = torch.tensor([f.size for f in families], dtype=torch.float64)
        self.shape_of = symbolic_shape_of(families)
        sizes = conv_sizes(hm.net, hm.input_dim)
        inputs = {m: size[0] for m, size in sizes.items()}
        self.terms: list[Term] = []
        self.pairs, self.modes, self.pair_terms = self._pairs(hm, inputs, merged_view)
        pair_modules = {m for insertion in self.pairs for m in self._modules(hm, insertion)}
        self.fixed = [self._add(conv, inputs[conv]) for conv in hm.net.modules()
                      if isinstance(conv, nn.Conv2d) and conv in inputs and conv not in pair_modules]
        self._measure_grids()
        self.rest_scale = Polynomial.total([module_flops(e, self.shape_of) for e in hm.complexity.counted
                                            if not isinstance(e.module, nn.Conv2d)]).compile()
        nets = [without_convolutions(hm.net, sizes), hm.net] + ([baseline_network(hm)] if measure_baseline else [])
        self.rest, total, *baseline = timer.networks(nets, hm.input_dim)
        self._calibrate(total)
        if baseline:
            self.baseline = baseline[0]
        else:
            nothing = torch.zeros(len(self.sizes), dtype=torch.float64)
            self.baseline = float(self._total(self._term_seconds(nothing), torch.full_like(self.modes, FOLDED),
                                              self.rest))

    def _calibrate(self, total: float) -> None:
        """Scale the convolutions' micro-benchmark times so that the network as it is (its pairs apart) takes the
        `total` measured: a convolution alone does not run as it runs between other layers (caches, layouts)."""
        nothing = torch.zeros(len(self.sizes), dtype=torch.float64)
        alone = float(self._total(self._term_seconds(nothing), torch.full_like(self.modes, APART), 0.0))
        if total > self.rest and alone > 0:
            self.scale = (total - self.rest) / alone

    @staticmethod
    def _modules(hm: HingeModel, insertion: Insertion) -> tuple[nn.Module, nn.Module]:
        return hm.net.get_submodule(insertion.conv_path), hm.net.get_submodule(insertion.matrix_path)

    def _pairs(self, hm: HingeModel, inputs: dict, merged_view: bool) -> tuple[list, torch.Tensor, torch.Tensor]:
        """The (conv, A) pairs still apart in the network, how each is counted, and its three terms (conv, A,
        folded)."""
        pairs, modes, terms = [], [], []
        for insertion in hm.plan.insertions:
            if insertion in hm.folded:
                continue
            conv, matrix = self._modules(hm, insertion)
            if conv not in inputs:
                continue
            pairs.append(insertion)
            if insertion.merge and merged_view:
                modes.append(FOLDED)
            else:
                modes.append(EITHER if conv.groups == 1 and not insertion.merge else APART)
            folded = ConvShape.of(conv, inputs[conv], conv.bias is not None or matrix.bias is not None)
            terms.append([self._add(conv, inputs[conv]), self._add(matrix, inputs[matrix]),
                          self._add(conv, inputs[conv], folded, self.shape_of(matrix.weight)[0])])
        return pairs, torch.tensor(modes, dtype=torch.long), torch.tensor(terms, dtype=torch.long).view(-1, 3)

    def _add(self, conv: nn.Conv2d, size: tuple, shape: ConvShape | None = None, out=None) -> int:
        """Add a term for `conv` (or, with `shape` and `out`, for the convolution it folds into); its index."""
        weight = self.shape_of(conv.weight)
        count = len(self.sizes)
        self.terms.append(Term(shape or ConvShape.of(conv, size), linear_form(weight[0] if out is None else out, count),
                               linear_form(weight[1], count)))
        return len(self.terms) - 1

    def _measure_grids(self) -> None:
        """One measured grid per distinct layer shape and cut axes."""
        self.grids: list[tuple[Grid, torch.Tensor]] = []
        shared: dict[tuple, list[int]] = {}
        for index, term in enumerate(self.terms):
            shared.setdefault(term.grid_key(), []).append(index)
        for (shape, out, inp, out_varies, in_varies), indices in shared.items():
            outs = grid_widths(round(out), out_varies, shape.group_width or 1, self.fractions)
            ins = grid_widths(round(inp), in_varies, 1, self.fractions)
            self.grids.append((Grid.measure(self.timer, shape, outs, ins), torch.tensor(indices)))
        self.out_constant = torch.tensor([t.out[0] for t in self.terms], dtype=torch.float64)
        self.in_constant = torch.tensor([t.inp[0] for t in self.terms], dtype=torch.float64)
        self.out_slope = torch.stack([t.out[1] for t in self.terms]) if self.terms else torch.zeros(0, len(self.sizes))
        self.in_slope = torch.stack([t.inp[1] for t in self.terms]) if self.terms else torch.zeros(0, len(self.sizes))

    def _term_seconds(self, removed: torch.Tensor) -> torch.Tensor:
        """Seconds of every term (..., terms) with `removed` (..., families) groups removed (calibrated)."""
        out = self.out_constant + removed @ self.out_slope.T.double()
        inp = self.in_constant + removed @ self.in_slope.T.double()
        seconds = torch.zeros(out.shape, dtype=torch.float64)
        for grid, indices in self.grids:
            seconds[..., indices] = grid(out[..., indices], inp[..., indices])
        return seconds * self.scale

    def _total(self, seconds: torch.Tensor, modes: torch.Tensor, rest) -> torch.Tensor:
        """Fixed terms, each pair as `modes` says (APART, FOLDED or EITHER: the cheaper), plus the remainder."""
        apart = seconds[..., self.pair_terms[:, 0]] + seconds[..., self.pair_terms[:, 1]]
        folded = seconds[..., self.pair_terms[:, 2]]
        chosen = torch.where(modes == FOLDED, folded, torch.where(modes == EITHER, apart.minimum(folded), apart))
        return seconds[..., self.fixed].sum(-1) + chosen.sum(-1) + rest

    def _rest(self, removed: torch.Tensor) -> torch.Tensor:
        """The measured remainder scaled by the element-wise work left with `removed` groups removed."""
        full = float(self.rest_scale(torch.zeros(len(self.sizes), dtype=torch.float64)))
        return self.rest * (self.rest_scale(removed) / full if full > 0 else torch.ones(removed.shape[:-1]))

    def seconds(self, counts: torch.Tensor, fold: bool = True) -> torch.Tensor:
        """Seconds per batch when each family keeps `counts[..., f]` groups; with `fold`, every pair the plan keeps
        apart costs the cheaper of its two forms."""
        removed = self.sizes - counts.double()
        modes = self.modes if fold else torch.where(self.modes == EITHER, APART, self.modes)
        return self._total(self._term_seconds(removed), modes, self._rest(removed))

    def ratio(self, counts: torch.Tensor, fold: bool = True) -> torch.Tensor:
        """seconds(counts, fold) as a fraction of the baseline's."""
        return self.seconds(counts, fold) / self.baseline

    def folds_that_pay(self, counts: torch.Tensor) -> list[Insertion]:
        """The pairs the plan keeps apart that are faster folded into one convolution at these counts."""
        seconds = self._term_seconds(self.sizes - counts.double())
        apart = seconds[self.pair_terms[:, 0]] + seconds[self.pair_terms[:, 1]]
        faster = (self.modes == EITHER) & (seconds[self.pair_terms[:, 2]] < apart)
        return [p for p, f in zip(self.pairs, faster.tolist(), strict=True) if f]


def latency_model(hm: HingeModel, config: HingeConfig, batch: int) -> LatencyModel:
    """The latency model of a search: layers timed at config.latency_batch (else `batch`) on the network's device
    and in its memory layout, cached in config.latency_cache (a json file) when given."""
    device = next(hm.net.parameters()).device
    timer = CachedTimer(DeviceTimer(config.latency_batch or batch, device, uses_channels_last(hm.net)),
                        config.latency_cache)
    model = LatencyModel(hm, timer, not (config.legacy_search and hm.policy.legacy.unmerged_search))
    timer.save()
    return model


def fold_pairs(hm: HingeModel, pairs: list[Insertion]) -> None:
    """Fold the plan's merging pairs (if not yet) and these pairs into single convolutions."""
    if not hm.merged:
        hm.merge()
    hm.fold(pairs)


def fresh_timer(model: LatencyModel) -> Timer:
    """The model's timer without its cache: what times a compressed network, which is measured afresh."""
    return model.timer.timer if isinstance(model.timer, CachedTimer) else model.timer


def compressed_copy(hm: HingeModel, kept: dict) -> HingeModel:
    """A copy of `hm` compressed to `kept` (groups per `hm` family); `hm` is not changed."""
    candidate = copy.deepcopy(hm)
    candidate.compress({c: kept[f] for f, c in zip(hm.families, candidate.families, strict=True)})
    return candidate


def candidate_ratio(hm: HingeModel, model: LatencyModel, kept: dict, fold: bool) -> float:
    """The measured time of the deployable network that compressing `hm` to `kept` (groups per family) gives, its
    pairs folded as compression folds them (with `fold`, those the model finds faster folded), as a fraction of
    the baseline's time measured with it (timed afresh, in turn, paired round by round); `hm` is not changed."""
    counts = torch.tensor([len(kept[f]) for f in hm.families])
    candidate = compressed_copy(hm, kept)
    fold_pairs(candidate, model.folds_that_pay(counts) if fold else [])
    return fresh_timer(model).relative([baseline_network(hm), candidate.net], hm.input_dim)[1]


def allocation_ratios(hm: HingeModel, allocations: list[dict], timer: Timer, fold_cheaper: bool) -> list[float]:
    """The measured time of the deployable network each allocation (kept groups per family) gives, as fractions of
    the baseline's: compressed, the plan's merges folded and, with `fold_cheaper`, every pair that costs fewer FLOPs
    folded (as compression folds them with target flops); all timed in turn with the baseline, paired round by
    round. `hm` is not changed."""
    nets = []
    for kept in allocations:
        candidate = compressed_copy(hm, kept)
        if fold_cheaper:
            candidate.merge_where_cheaper()
        elif candidate.plan.merges:
            candidate.merge()
        nets.append(candidate.net)
    return timer.relative([baseline_network(hm), *nets], hm.input_dim)[1:]


def latency_report(model: LatencyModel, counts: torch.Tensor, fold: bool, baseline: nn.Module, net: nn.Module,
                   input_dim: tuple) -> dict:
    """The model's prediction for the compressed network `net` next to its measured time (ms per batch), and both
    as fractions of the baseline's time: the measured one paired with `baseline` round by round (a machine's drift
    since the model was built cancels out), and the prediction error from the two fractions. Timed afresh, never
    read from the cache."""
    timer = fresh_timer(model)
    predicted, measured = float(model.seconds(counts, fold)), timer.networks([net], input_dim)[0]
    ratio = timer.relative([baseline, net], input_dim)[1]
    return {'latency_baseline_ms': model.baseline * 1e3, 'latency_predicted_ms': predicted * 1e3,
            'latency_measured_ms': measured * 1e3, 'latency_ratio_predicted': predicted / model.baseline,
            'latency_ratio_measured': ratio, 'latency_error': predicted / model.baseline / ratio - 1}
