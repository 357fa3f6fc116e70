"""The search options of a Hinge compression, in one dataclass shared by the Python API and the command line.

Field names, meanings and defaults are those of the command-line flags (`--ratio`, `--sparsity_regularizer`,
...), except `optimizer`, whose library default is the method's proximal gradient ('PG'), `latency_batch`, whose
library default None times the layers at the example's batch size (the command line's is 64), and `latency_cache`,
a json file that keeps the measured layer times (None: memory only; the command line keeps them in the run
directory). `target` is what `ratio` is a fraction of: 'flops', or 'latency' (measured times, see latency.py).
`allocation` is how the cut spreads over the layers: 'norm' thresholds the group norms (the paper's), 'fastest'
times a few rankings of the groups at the target FLOPs and keeps the fastest (search.RANKINGS).
`HingeConfig.create` refuses an unknown name or a value out of range with a HingeError (a ValueError) naming it
and what would work.
"""

import math
from dataclasses import dataclass, fields
from os import PathLike
from typing import Any

from model_hinge.errors import HingeError

INIT_METHODS = ('svd', 'svd2', 'p-identity', 'p-random', 't-random', 'p-disturbance-u', 'p-disturbance-n')
REGULARIZERS = ('l0', 'l1', 'l1-2', 'l1d2', 'logsum')
CHOICES = {'sparsity_regularizer': REGULARIZERS, 'init_method': INIT_METHODS, 'lr_adjust_method': ('p1', 'p2'),
           'optimizer': ('PG', 'SGD'), 'target': ('flops', 'latency'), 'allocation': ('norm', 'fastest')}

# Allowed ranges: (low, high, low excluded, high excluded, why); None for no bound.
RANGES = {
    'ratio': (0, 1, True, False, ' (the target fraction of the FLOPs or latency)'),
    'regularization_factor': (0, None, True, False, ''), 'q': (0, None, True, False, ' (the q of the l2,q penalty)'),
    'prox_freq': (1, None, False, False, ''), 'remain_percentage': (0, 1, True, False, ''),
    'annealing_factor': (0, None, False, False, ' (0 turns annealing off)'),
    'annealing_t1': (0, None, False, False, ''), 'annealing_t2': (0, None, False, False, ''),
    'threshold': (0, None, False, False, ''), 'stop_limit': (0, None, False, False, ''),
    'latency_batch': (1, None, False, False, ' (the batch size the layers are timed at)'),
    'channel_multiple': (1, None, False, False, ' (every cut layer keeps a multiple of it, or all its groups)'),
}
OPTIONAL = ('latency_batch',)  # None is allowed too: the API's default (the example's batch size)


@dataclass(frozen=True)
class HingeConfig:
    """What the search, the threshold search and the compression need to know besides the plan."""

    ratio: float = 0.2
    sparsity_regularizer: str = 'l1'
    regularization_factor: float = 1e-4
    q: float = 1.0
    init_method: str = 'svd2'
    prox_freq: int = 1
    layer_balancing: bool = False
    p1_p2_same_ratio: bool = False
    lr_adjust_method: str = 'p1'
    remain_percentage: float = 0.2
    channel_multiple: int = 1
    annealing_factor: float = 0.0
    annealing_t1: float = 10.0
    annealing_t2: float = 5.0
    threshold: float = 5e-3
    stop_limit: float = 0.05
    optimizer: str = 'PG'
    legacy_search: bool = False
    target: str = 'flops'
    latency_batch: int | None = None
    latency_cache: str | PathLike | None = None
    allocation: str = 'norm'

    @classmethod
    def create(cls, **options: Any) -> 'HingeConfig':
        """A checked config from keyword options (unknown names and out-of-range values are refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise HingeError(f'unknown Hinge option {unknown[0]!r}; the options are {", ".join(sorted(known))}.')
        config = cls(**options)
        config.check()
        return config

    @classmethod
    def from_namespace(cls, args: Any) -> 'HingeConfig':
        """The config of a parsed command line (attributes named as the fields; the others are ignored)."""
        return cls.create(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def check(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise HingeError(f'{name} {getattr(self, name)!r} is not one of {", ".join(allowed)}.')
        for name, bounds in RANGES.items():
            value = getattr(self, name)
            problem = None if value is None and name in OPTIONAL else out_of_range(name, value, *bounds)
            if problem:
                raise HingeError(problem)
        if not isinstance(self.channel_multiple, int) or isinstance(self.channel_multiple, bool):
            raise HingeError(f'channel_multiple {self.channel_multiple!r} must be a whole number of groups, an int '
                             '(e.g. 8).')
        if self.allocation == 'fastest' and (self.target != 'flops' or self.legacy_search):
            raise HingeError("allocation 'fastest' times rankings of equal FLOPs, so it needs target 'flops' and no "
                             "legacy_search; use allocation 'norm' with "
                             f"{'legacy_search' if self.legacy_search else 'target ' + repr(self.target)}.")
        if self.latency_cache is not None and not isinstance(self.latency_cache, (str, PathLike)):
            raise HingeError(f'latency_cache {self.latency_cache!r} must be a file path (str or os.PathLike) or None.')


def out_of_range(name: str, value: Any, low, high, low_open: bool, high_open: bool, why: str) -> str | None:
    """None when the value is a finite number in its range, else the sentence that refuses it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if ok:
        return None
    if low is not None and high is not None:
        span = f'in {"(" if low_open else "["}{low:g}, {high:g}{")" if high_open else "]"}'
    else:
        span = f'{"greater than" if low_open else "at least"} {low:g}'
    shown = f'{value:g}' if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
    return f'{name} {shown} must be {span}{why}.'
