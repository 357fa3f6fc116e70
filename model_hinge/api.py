"""The Python API: Hinge on a user's own CNN, inside the user's own training loop.

`Hinge` plans (automatically, or from a Plan or a Hinge model name), inserts the sparsity-inducing matrices into
the model in place, and then works batch by batch through `step` (the penalty, the gradient-ratio lr adjustment,
the optimizer step and the proximal step of the search); `compress` runs the threshold search to the FLOPs
target, cuts the network physically and folds the merging pairs. `save` writes what `load` needs to rebuild the
compressed network from a fresh instance of the base model.
"""

import warnings
from dataclasses import asdict
from os import PathLike

import torch
import torch.nn as nn

from model_hinge.autoplan import auto_plan, first_example, summary
from model_hinge.complexity import ComplexityModel
from model_hinge.config import HingeConfig
from model_hinge.core import HingeModel
from model_hinge.errors import HingeError
from model_hinge.latency import (
    DeviceTimer,
    LatencyModel,
    allocation_ratios,
    baseline_network,
    candidate_ratio,
    fold_pairs,
    latency_model,
    latency_report,
    uses_channels_last,
)
from model_hinge.plan import Plan
from model_hinge.registry import NAMES, adapter_for, is_hinge
from model_hinge.search import Messages, SearchController, initial_layer_weights, search_param_groups
from model_hinge.surgery import load_state

FORMAT = 'hinge-compressed/1'


def resolve_plan(model: nn.Module, example: torch.Tensor, plan: Plan | str | None) -> Plan:
    """The plan to apply: automatic (None), as given (a Plan), or a Hinge model's hand-written one (a name)."""
    if plan is None:
        return auto_plan(model, example)
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, str) and is_hinge(plan):
        try:
            return adapter_for(plan).plan(model)
        except (AttributeError, IndexError, KeyError, TypeError) as err:
            raise HingeError(f'the hand-written plan {plan} does not fit this model ({err}); pass plan=None for the '
                             'automatic plan.') from None
    raise HingeError(f'plan {plan!r} is neither None (automatic), a model_hinge.Plan nor a Hinge model name '
                     f'({NAMES}).')


class Hinge:
    """Group-sparsity compression of `model` (converted in place) to `ratio` of its FLOPs.

    The options are HingeConfig's fields (the command line's search flags, same defaults).
    """

    def __init__(self, model: nn.Module, example_inputs, plan: Plan | str | None = None, **options):
        self.config = HingeConfig.create(**options)
        if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
            raise HingeError('model must be a torch.nn.Module with parameters (the network to compress).')
        example = first_example(model, example_inputs)
        self.model = model
        self.plan = resolve_plan(model, example, plan)
        self.layers = summary(self.plan, model)
        self.hm = HingeModel(model, self.plan, tuple(example.shape[1:]), self.config.init_method)
        self.timing_batch = self.config.latency_batch or example.shape[0]
        self.latency = self._latency_model(self.timing_batch) if self.config.target == 'latency' else None
        self.outcome: dict = {}
        self.controller = self._controller(None)
        self._refuse_unreachable_ratio()
        if self.config.layer_balancing:
            self.controller = self._controller(initial_layer_weights(self.hm.families))
        self.batch = 0
        self.threshold: float | None = None
        self.kept: dict | None = None
        self.sizes: list[int] = []
        self.messages = Messages()

    def _controller(self, layer_weights: list[float] | None) -> SearchController:
        """The search controller; its FLOPs count the pairs that do not pay folded, as compress() folds them by
        default."""
        controller = SearchController(self.hm, self.config, layer_weights, self.latency)
        controller.folded_flops = True
        return controller

    def _latency_model(self, batch: int) -> LatencyModel:
        """Target 'latency': every layer timed now (the model is given back unconverted if that fails)."""
        try:
            return latency_model(self.hm, self.config, batch)
        except HingeError:
            self.hm.restore()
            raise

    def _refuse_unreachable_ratio(self) -> None:
        reachable = self.controller.minimum_ratio()
        if self.config.ratio < reachable:
            self.hm.restore()
            what = 'FLOPs' if self.config.target == 'flops' else 'measured latency'
            raise HingeError(f'ratio {self.config.ratio} cannot be reached with this plan: keeping remain_percentage '
                             f'{self.config.remain_percentage} of every layer leaves {reachable:.4f} of the {what}; '
                             f'use a ratio of at least {reachable:.4f} or a smaller remain_percentage.')

    @property
    def compressed(self) -> bool:
        return self.kept is not None

    def param_groups(self, lr: float, lr_ratio: float = 0.1) -> list[dict]:
        """Optimizer groups: the model's other parameters at lr * lr_ratio, then the matrices A at lr (one group per
        penalty role where the plan adjusts their lrs by the gradient ratio)."""
        return search_param_groups(self.hm, lr, lr_ratio, self.config.legacy_search)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """After loss.backward(): the penalty (its gradient too, with optimizer='SGD'), the lr adjustment,
        optimizer.step() and the proximal step. The groups' lrs are the caller's again afterwards."""
        if self.compressed:
            raise HingeError('compress() has been called: train the compressed network with optimizer.step() '
                             '(a new optimizer over its parameters).')
        extra = self.controller.penalty_for_step()
        if extra is not None:
            extra.backward()
        base = [group['lr'] for group in optimizer.param_groups]
        self.controller.adjust_lrs(optimizer, base)
        self.controller.optimizer_step(optimizer)
        self.controller.after_optimizer_step(self.batch, optimizer)
        for group, lr in zip(optimizer.param_groups, base, strict=True):
            group['lr'] = lr
        self.batch += 1

    def ratio(self) -> float:
        """The ratio of the target (FLOPs, or predicted latency) the network would have if compressed now (at the
        starting threshold, as the search stage measures it each epoch), or has once compressed."""
        if self.compressed:
            return self.outcome.get('latency_ratio_predicted', self.hm.cost()[0] / self.hm.baseline_flops)
        return self.controller.target_ratio(self.controller.family_norms(), self.config.threshold)

    def compress(self, fold: str = 'cheaper') -> nn.Module:
        """Threshold search to `ratio` (or the closest attainable ratio, with a warning), physical compression,
        and the plan's merging pairs folded; returns the (same, now smaller) model. `fold='cheaper'` (the default)
        also folds every (conv, A) pair the plan keeps apart that does not pay: faster folded by the latency model
        with target 'latency', fewer FLOPs folded otherwise (see fold_cheaper); 'plan' is the paper's behaviour."""
        if fold not in ('plan', 'cheaper'):
            raise HingeError(f"fold {fold!r} must be 'plan' (the plan's merging pairs) or 'cheaper' (also every pair "
                             'that costs less folded).')
        if self.compressed:
            return self.model
        self.controller.fold_cheaper = self.controller.folded_flops = fold == 'cheaper'
        norms = self.controller.family_norms()
        measure = None if self.latency is None else (
            lambda kept: candidate_ratio(self.hm, self.latency, kept, fold == 'cheaper'))
        allocation = self.controller.allocate(norms, self.messages, measure, self._time_allocations(fold))
        self.threshold = allocation.threshold
        kept = allocation.kept
        self.outcome['searched_ratio'] = allocation.ratio
        if allocation.timed:
            self.outcome.update(allocation=allocation.name, allocations=allocation.timed)
        counts = torch.tensor([len(kept[fam]) for fam in self.hm.families])
        self.sizes = [fam.size for fam in self.hm.families]
        self.kept = {index: kept[fam].tolist() for index, fam in enumerate(self.hm.families)}
        baseline = baseline_network(self.hm) if self.latency is not None else None
        self.hm.compress(kept, self.config.legacy_search)
        if self.plan.merges:
            self.hm.merge()
        if fold == 'cheaper' and self.latency is not None:
            fold_pairs(self.hm, self.latency.folds_that_pay(counts))
        elif fold == 'cheaper':
            self.fold_cheaper()
        if self.latency is not None:
            self.outcome.update(latency_report(self.latency, counts, fold == 'cheaper', baseline, self.model,
                                               self.hm.input_dim))
        unattainable = [line for line in self.messages.lines if 'not attainable' in line]
        if unattainable:
            warnings.warn(unattainable[-1], stacklevel=2)
        return self.model

    def _time_allocations(self, fold: str):
        """What allocation 'fastest' times candidate allocations with (None for 'norm'): on the model's device and in
        its layout, at latency_batch (default the example's batch size), folded as compress() folds."""
        if self.config.allocation != 'fastest':
            return None
        timer = DeviceTimer(self.timing_batch, next(self.model.parameters()).device, uses_channels_last(self.model))
        return lambda allocations: allocation_ratios(self.hm, allocations, timer, fold == 'cheaper')

    def fold_cheaper(self) -> list[str]:
        """After compress(): fold every (conv, A) pair that the plan keeps apart but that costs fewer FLOPs as one
        convolution (a decomposition that kept nearly all its basis filters); returns their conv paths."""
        if not self.compressed:
            raise HingeError('fold_cheaper() folds compressed pairs: call compress() first.')
        return [i.conv for i in self.hm.merge_where_cheaper()]

    def report(self) -> dict:
        """FLOPs and parameters of the baseline and now, and which convolutions the plan prunes, decomposes and
        leaves alone, with (matrix, direction, groups kept, groups) per family once compressed, and the ratio the
        threshold search reached (of the FLOPs with the plan's merges folded, or of the predicted latency); with
        allocation 'fastest' the allocation kept ('allocation') and every one timed ('allocations': name ->
        (FLOPs ratio, measured time ratio)); with target 'latency' also the latency model's prediction for the
        compressed network next to its measured time."""
        flops, params = self.hm.cost()
        result = {'flops': self.hm.baseline_flops, 'params': self.hm.baseline_params, 'flops_now': flops,
                  'params_now': params, 'flops_ratio': flops / self.hm.baseline_flops,
                  'params_ratio': params / self.hm.baseline_params, 'threshold': self.threshold,
                  'notes': list(self.plan.notes)}
        result.update(self.layers)
        result.update(self.outcome)
        if self.kept is not None:
            result['kept'] = [(f.members[0].tensor, 'rows' if f.members[0].dim == 0 else 'columns', len(self.kept[i]),
                               size) for i, (f, size) in enumerate(zip(self.plan.families, self.sizes, strict=True))]
        return result

    def save(self, path: str | PathLike) -> None:
        """The compressed network's state, its plan and how it was folded (torch.load(weights_only=True) reads it)."""
        if not self.compressed:
            raise HingeError('save() writes the compressed network: call compress() first.')
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        torch.save({'format': FORMAT, 'plan': self.plan.to_dict(), 'state_dict': state,
                    'input_shape': list(self.hm.input_dim), 'merged': self.hm.merged,
                    'folded': [i.conv for i in self.hm.folded], 'kept': self.kept, 'threshold': self.threshold,
                    'config': asdict(self.config)}, path)


def load(model: nn.Module, path: str | PathLike) -> nn.Module:
    """Rebuild a network saved by Hinge.save from a fresh instance of its base model (changed in place and
    returned): the plan's structure, its folds, then the saved tensors."""
    try:
        saved = torch.load(path, map_location='cpu', weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise HingeError(f'{path} is not a file Hinge.save wrote ({str(err).splitlines()[0]}).') from None
    if not isinstance(saved, dict) or saved.get('format') != FORMAT:
        raise HingeError(f'{path} is not a file Hinge.save wrote (no {FORMAT!r} format tag).')
    plan = Plan.from_dict(saved['plan'])
    hm = HingeModel(model, plan, tuple(saved['input_shape']), None)
    folded = set(saved['folded'])
    if folded:
        hm.fold([i for i in plan.insertions if i.conv in folded])
    device = next(model.parameters()).device
    load_state(model, {k: v.to(device) for k, v in saved['state_dict'].items()}, str(path), adapt=True)
    return model


def count(model: nn.Module, example_inputs) -> tuple[int, int]:
    """(FLOPs per image, trainable parameters) of a network, with this project's counter."""
    example = first_example(model, example_inputs)
    complexity = ComplexityModel.trace(model, tuple(example.shape[1:]))
    return complexity.flops(), complexity.params()
