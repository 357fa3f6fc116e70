"""The search stage, generic over architectures; the model's plan policy says what differs between them.

Per batch: the group penalty (one term per role), its annealing, the gradient-ratio lr adjustment and the
proximal step, each vectorised over all layers. Per epoch: the FLOPs ratio the network would have if
compressed now (in the merged view where the plan merges), from channel counts alone. At the end: the
threshold search and the compression report. With config.target 'latency' the ratio the search aims at is
that of a LatencyModel (latency.py: measured per-layer times of the deployable network) instead of FLOPs. With
config.allocation 'fastest' the threshold search thresholds a few rankings of the groups to the FLOPs ratio and
keeps the one whose network runs fastest when timed (fastest_allocation).
"""

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model_hinge import prox
from model_hinge.config import HingeConfig
from model_hinge.core import HingeModel
from model_hinge.counting import CostPolynomial, SurvivorCounter
from model_hinge.errors import HingeError
from model_hinge.groups import GroupBank, GroupFamily, exact_norms_of, split_into_banks
from model_hinge.latency import LatencyModel
from model_hinge.surgery import kept_groups

RATIO_MOMENTUM = 0.9
RATIO_BOUNDS = (5 / 9, 9 / 5)
RATIO_EXPONENT = 1.35
THRESHOLD_TOLERANCE = 0.001
MEASURED_TIMINGS = 5       # target 'latency': candidate networks timed at most
MEASURED_TOLERANCE = 0.03  # a mean measured latency ratio this close (relative) to the target, timed twice, ends them
ALLOCATION_TOLERANCE = 0.01  # allocation 'fastest': a ranking's FLOPs ratio this close to the target (or as the norm's)
RANKINGS = ('norm', 'even', 'norm-keep-shared', 'even-keep-shared', 'norm-per-flop')
VECTOR_MULTIPLE = 8  # allocation 'fastest' also tries widths rounded up to multiples of this (with channel_multiple 1)


@dataclass
class Allocation:
    """The groups that survive (`kept`, per family): those whose score (the group norm, or another ranking's)
    reaches `threshold`, and the ratio of the target they give; with allocation 'fastest', every allocation timed
    as name -> (FLOPs ratio, measured time ratio) in `timed`."""

    name: str
    threshold: float
    kept: dict
    ratio: float
    timed: dict[str, tuple[float, float]] = field(default_factory=dict)


def initial_layer_weights(families: list[GroupFamily]) -> list[float]:
    """--layer_balancing: each family's threshold is scaled by the mean group norm of its matrix now."""
    return [float(n.mean()) for n in exact_norms_of(families).values()]


def search_param_groups(hm: HingeModel, lr: float, lr_ratio: float, legacy: bool) -> list[dict]:
    """Non-A parameters at lr * lr_ratio, then the A matrices (one group per role when the policy separates
    them) at lr. Under --legacy_search the groups follow the original's rule by kernel size: the other 1x1
    convolution weights train with the matrices (one role) or in no group at all (separate roles)."""
    roles = hm.matrices()
    matrix_ids = {id(p) for r in roles for p in r}
    others = [p for p in hm.net.parameters() if p.requires_grad and id(p) not in matrix_ids]
    if legacy:
        one_by_one = [p for p in others if p.dim() == 4 and p.shape[-1] == 1]
        others = [p for p in others if not (p.dim() == 4 and p.shape[-1] == 1)]
        if not hm.policy.separate_roles:
            roles[-1] = roles[-1] + one_by_one
    groups = [{'params': others, 'lr': lr * lr_ratio, 'initial_lr': lr * lr_ratio}]
    return groups + [{'params': r, 'lr': lr, 'initial_lr': lr} for r in roles]


class SearchController:
    """Penalty, annealing, lr adjustment and proximal steps for one Hinge model."""

    def __init__(self, hm: HingeModel, config: HingeConfig, layer_weights: list[float] | None,
                 latency: LatencyModel | None = None):
        """`config` may also be any object with the config's attribute names (a parsed command line); `latency`
        is the LatencyModel that target 'latency' needs. `fold_cheaper`: the latency target counts every pair the
        plan keeps apart at the cheaper of its two forms (as the default compression folds them)."""
        config = config if isinstance(config, HingeConfig) else HingeConfig.from_namespace(config)
        self.hm, self.config, self.policy = hm, config, hm.policy
        self.roles = self.policy.roles
        self.device = next(hm.net.parameters()).device
        self.banks = [GroupBank(b) for b in split_into_banks(hm.families)]
        weights = self._effective_weights(layer_weights)
        self.group_weights = [self._bank_weights(bank, weights) for bank in self.banks]
        self.frozen: list[torch.Tensor] = []
        self.bad = torch.zeros((), dtype=torch.bool, device=self.device)
        self.merged_view = not (config.legacy_search and self.policy.legacy.unmerged_search)
        self._polynomial: tuple | None = None
        self.penalty = torch.zeros(self.roles, device=self.device)
        previous = getattr(hm.net, 'running_grad_ratio', None)
        self.grad_ratio = previous.clone() if previous is not None else torch.ones((), device=self.device)
        self.latency, self.fold_cheaper = latency, not config.legacy_search
        self.folded_flops = False  # FLOPs count the pairs the plan keeps apart at their cheaper form (the API's)

    def _effective_weights(self, layer_weights: list[float] | None) -> dict | None:
        """Layer weights per family, with the original's quirks under --legacy_search."""
        quirks = self.policy.legacy if self.config.legacy_search else None
        if layer_weights is None or (quirks and quirks.prox_ignores_layer_balancing):
            return None
        shift = quirks.layer_weight_shift if quirks else 0
        return {fam: layer_weights[(i - shift) % len(layer_weights)] for i, fam in enumerate(self.hm.families)}

    def _bank_weights(self, bank: GroupBank, weights: dict | None) -> torch.Tensor:
        """Each group's weight in the proximal step: its family's layer weight times its group-lasso weight."""
        values = [(weights[f] if weights else 1.0) * f.weight for f in bank.families]
        return torch.tensor(values, dtype=torch.float32, device=self.device)[bank.group_family]

    def penalties(self) -> torch.Tensor:
        """One term per role: per matrix (sum_g (w ||g||)^q)^(1/q), w the group-lasso weight of the family (1 in
        the original's plans), averaged or summed over the role's matrices.

        Differentiable, so that --optimizer SGD can add it to the loss.
        """
        q = self.config.q
        total = torch.zeros(self.roles, device=self.device)
        count = torch.zeros(self.roles, device=self.device)
        for bank in self.banks:
            per_group = bank.squared_norms().clamp_min(1e-30).pow(q / 2)
            if bank.group_weight is not None:
                per_group = per_group * bank.group_weight ** q
            per_family = bank.family_sums(per_group).pow(1 / q)
            total = total + bank.role_sums(per_family, self.roles)
            count = count + bank.role_sums(torch.ones_like(per_family), self.roles)
        return total / count.clamp_min(1) if self.policy.mean_penalty else total

    def regularization(self, p1: torch.Tensor) -> torch.Tensor:
        """The annealed factor: /a once P1 <= annealing_t1, /a^2 once P1 <= annealing_t2 (a = 0: constant)."""
        a, reg = self.config.annealing_factor, self.config.regularization_factor
        base = torch.full((), reg, device=self.device)
        if a == 0 or (self.config.legacy_search and self.policy.legacy.prox_ignores_annealing):
            return base
        return torch.where(p1 <= self.config.annealing_t2, base / a ** 2,
                           torch.where(p1 <= self.config.annealing_t1, base / a, base))

    @torch.no_grad()
    def update_grad_ratio(self) -> torch.Tensor:
        """Running ratio sum||grad A1 groups|| / sum||grad A2 groups|| (weight 0.9 on the new value, clipped),
        kept on the device."""
        sums = torch.zeros(self.roles, device=self.device)
        for bank in self.banks:
            sums += bank.role_sums(bank.family_sums(bank.grad_norms()), self.roles)
        ratio = sums[0] / sums[1]
        previous = self.hm.net.running_grad_ratio
        if previous is None:
            new = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
        else:
            blended = (previous * (1 - RATIO_MOMENTUM) + ratio * RATIO_MOMENTUM).clamp(*RATIO_BOUNDS)
            new = torch.where(torch.isfinite(ratio), blended, previous)
        self.hm.net.running_grad_ratio = new
        return new

    def lr_multipliers(self, n_groups: int, ratio: torch.Tensor) -> list:
        """p1: every group but the last divided by r^1.35; p2: the last multiplied by r^1.35 (r = 0 counts as
        1). Device tensors: the lrs they give never need the host."""
        r = torch.where(ratio == 0, torch.ones_like(ratio), ratio)
        if self.config.lr_adjust_method == 'p1':
            return [r ** -RATIO_EXPONENT] * (n_groups - 1) + [1.0]
        return [1.0] * (n_groups - 1) + [r ** RATIO_EXPONENT]

    def prox_lrs(self, optimizer: torch.optim.Optimizer) -> list:
        """The lr that scales each role's proximal threshold (the policy's prox_lr)."""
        lrs = [g['lr'] for g in optimizer.param_groups]
        if self.policy.prox_lr == 'role_group' and len(lrs) == self.roles + 1:
            return lrs[1:]
        return [lrs[-1]] * self.roles

    @torch.no_grad()
    def proximal_step(self, role_lrs: list, regularization: torch.Tensor) -> None:
        """One proximal step on every group: threshold = regularization * lr of its role (* layer weight).
        The lrs are numbers or device tensors (adjusted lrs), never copied to the device here."""
        uniform = all(lr is role_lrs[0] for lr in role_lrs) or (
            not any(isinstance(lr, torch.Tensor) for lr in role_lrs) and len(set(role_lrs)) == 1)
        lrs = None if uniform else torch.stack([torch.as_tensor(lr, dtype=torch.float32, device=self.device)
                                                 for lr in role_lrs])
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        for bank, weights in zip(self.banks, self.group_weights, strict=True):
            norms = bank.norms()
            bad |= ~torch.isfinite(norms).all()
            lr = role_lrs[0] if uniform else lrs[bank.family_role][bank.group_family]
            lam = regularization * lr * weights
            bank.scale_(prox.scale(self.config.sparsity_regularizer, norms, lam, bank.group_family,
                                   len(bank.families)))
        self.bad = bad

    def penalty_for_step(self) -> torch.Tensor | None:
        """Before the backward pass: the penalty term to add to the loss with optimizer 'SGD' (differentiable);
        with 'PG' None, the penalties are only recorded (the annealing reads P1)."""
        if self.config.optimizer == 'PG':
            with torch.no_grad():
                self.penalty = self.penalties()
            return None
        scaled = self.penalties() * self.config.regularization_factor
        self.penalty = scaled.detach()
        return scaled.sum()

    def adjust_lrs(self, optimizer: torch.optim.Optimizer, base_lrs: list[float]) -> None:
        """After the backward pass, where the policy separates roles: each group's lr = its base lr x the
        gradient-ratio multiplier; elsewhere the lrs are left as they are."""
        if not self.policy.separate_roles:
            return
        self.grad_ratio = self.update_grad_ratio()
        multipliers = self.lr_multipliers(len(optimizer.param_groups), self.grad_ratio)
        for group, base, multiplier in zip(optimizer.param_groups, base_lrs, multipliers, strict=True):
            group['lr'] = base * multiplier

    def after_optimizer_step(self, batch: int, optimizer: torch.optim.Optimizer) -> None:
        """The proximal step (optimizer 'PG'), every prox_freq batches (`batch` counts from 0)."""
        if self.config.optimizer == 'PG' and (batch + 1) % self.config.prox_freq == 0:
            self.proximal_step(self.prox_lrs(optimizer), self.regularization(self.penalty[0]))

    def freeze_compressible(self) -> None:
        """--legacy_search: from now on the tensors that compression (and merging, where the search measures
        the merged network) replaces get no SGD step and their gradients accumulate over the epoch (what the
        original's per-epoch FLOPs check caused)."""
        tensors = [cut.tensor for fam in self.hm.families for cut in fam.cuts]
        if self.merged_view:
            tensors += [p for pair in self.hm.merge_pairs() for m in pair for p in m.parameters()]
        seen, frozen = set(), []
        for t in tensors:
            if isinstance(t, torch.nn.Parameter) and id(t) not in seen:
                seen.add(id(t))
                frozen.append(t)
        self.frozen = frozen

    def start_epoch(self) -> None:
        for p in self.frozen:
            p.grad = None

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        frozen = {id(p) for p in self.frozen}
        for group in optimizer.param_groups:
            for p in group['params']:
                if id(p) not in frozen:
                    p.grad = None

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        stashed = [p.grad for p in self.frozen]
        for p in self.frozen:
            p.grad = None
        optimizer.step()
        for p, g in zip(self.frozen, stashed, strict=True):
            p.grad = g

    def family_norms(self) -> dict:
        """Current group norms of every family (float32, on the CPU), computed as the original does."""
        return exact_norms_of(self.hm.families)

    def survivors(self, norms: dict, multiple: int | None = None) -> SurvivorCounter:
        """Counts of surviving groups per family at any threshold, for these norms (`multiple`: another channel
        multiple than the configured one)."""
        return SurvivorCounter(self.hm.families, norms, self.config.remain_percentage, self.config.p1_p2_same_ratio,
                               multiple or self.config.channel_multiple)

    def cost_polynomial(self) -> CostPolynomial:
        """FLOPs and params as polynomials of the removed groups, rebuilt when the network's structure changed."""
        key = (self.hm.complexity, self.hm.merged, self.folded_flops)
        if self._polynomial is None or any(a is not b for a, b in zip(self._polynomial[0], key, strict=True)):
            merges = self.hm.merge_pairs() if self.merged_view else []
            foldable = self.hm.foldable_pairs() if self.folded_flops else []
            self._polynomial = (key, CostPolynomial(self.hm.families, self.hm.complexity, merges, foldable))
        return self._polynomial[1]

    def cost(self, norms: dict | SurvivorCounter, threshold: float) -> tuple[int, int]:
        """(FLOPs, params) of the network compressed at `threshold`, from channel counts."""
        counter = norms if isinstance(norms, SurvivorCounter) else self.survivors(norms)
        return self.cost_polynomial()(counter.counts(threshold))

    def kept(self, norms: dict, threshold: float, multiple: int | None = None) -> dict:
        """The surviving group indices of every family at `threshold` (`multiple`: as in survivors)."""
        return kept_groups(self.hm.families, norms, threshold, self.config.remain_percentage,
                           self.config.p1_p2_same_ratio, multiple or self.config.channel_multiple)

    def minimum_ratio(self) -> float:
        """The smallest FLOPs ratio compression can reach: every family keeps only --remain_percentage of its
        groups (its partner as many under --p1_p2_same_ratio)."""
        distinct = {f: torch.arange(f.size, 0, -1, dtype=torch.float32) for f in self.hm.families}
        return self.target_ratio(distinct, float('inf'))

    def ratio_at(self, norms: dict | SurvivorCounter, threshold: float) -> float:
        return self.cost(norms, threshold)[0] / self.hm.baseline_flops

    def target_ratio(self, norms: dict | SurvivorCounter, threshold: float) -> float:
        """The ratio the search aims at, at `threshold`: FLOPs, or predicted latency with target 'latency'."""
        counter = norms if isinstance(norms, SurvivorCounter) else self.survivors(norms)
        if self.config.target == 'flops':
            return self.ratio_at(counter, threshold)
        return float(self.latency_model().ratio(counter.counts(threshold), self.fold_cheaper))

    def latency_model(self) -> LatencyModel:
        """The LatencyModel given to this controller (target 'latency' cannot work without one)."""
        if self.latency is None:
            raise HingeError("target 'latency' needs measured layer times, and this search was given none; pass a "
                             'model_hinge.latency.LatencyModel or use target flops.')
        return self.latency

    def allocate(self, norms: dict, log, measure=None, time_allocations: Callable | None = None) -> Allocation:
        """The groups to keep at the configured ratio: those above the threshold on the group norms
        (threshold_for_ratio), or with allocation 'fastest' the fastest allocation of that FLOPs ratio
        (fastest_allocation; `time_allocations` maps a list of kept groups per family to measured time ratios)."""
        if self.config.allocation == 'norm':
            threshold = self.threshold_for_ratio(norms, log, measure)
            return Allocation('norm', threshold, self.kept(norms, threshold), self.target_ratio(norms, threshold))
        if time_allocations is None:
            raise HingeError("allocation 'fastest' times the networks of several rankings and this search was given "
                             "no timer; pass time_allocations or use allocation 'norm'.")
        return self.fastest_allocation(norms, log, time_allocations)

    def fastest_allocation(self, norms: dict, log, time_allocations: Callable) -> Allocation:
        """Every ranking of RANKINGS thresholded to the FLOPs ratio, at the configured channel multiple and (when
        that is 1) at VECTOR_MULTIPLE; the distinct allocations that reach the ratio (within ALLOCATION_TOLERANCE,
        or as close as the norms) timed together, and the fastest kept. They differ in how the cut spreads over the
        layers, which FLOPs do not price: a residual stream cut in every block it spans, or a layer left one channel
        past a step of the hardware's vector width, can make equal FLOPs slower."""
        target, costs = self.config.ratio, self.flops_per_group()
        multiples = [self.config.channel_multiple] + ([VECTOR_MULTIPLE] if self.config.channel_multiple == 1 else [])
        reached: list[Allocation] = []
        for ranking in RANKINGS:
            scores = ranking_scores(self.hm.families, norms, ranking, costs)
            for multiple in multiples:
                name = ranking if multiple == self.config.channel_multiple else f'{ranking} x{multiple}'
                threshold = self.search_threshold(scores, target, Messages(), multiple)
                kept = self.kept(scores, threshold, multiple)
                reached.append(Allocation(name, threshold, kept, self.ratio_of_kept(kept)))
        slack = max(ALLOCATION_TOLERANCE, abs(reached[0].ratio - target))
        timed: list[Allocation] = []
        for allocation in reached:
            if abs(allocation.ratio - target) <= slack and not any(same_kept(allocation.kept, a.kept) for a in timed):
                timed.append(allocation)
        times = time_allocations([a.kept for a in timed])
        figures = {a.name: (a.ratio, t) for a, t in zip(timed, times, strict=True)}
        for name, (ratio, t) in figures.items():
            log.write(f'Allocation {name}: FLOPs ratio {ratio:.4f}, measured time ratio {t:.4f}.')
        best = min(timed, key=lambda a: figures[a.name][1])
        log.write(f'Fastest allocation: {best.name} (threshold {best.threshold:2.8f} on its scores).')
        if abs(best.ratio - target) > THRESHOLD_TOLERANCE:
            log.write(f'The ratio {target} is not attainable within {THRESHOLD_TOLERANCE} by the fastest allocation '
                      f'(channels come in coarser steps here); it reaches {best.ratio:.4f}.')
        best.timed = figures
        return best

    def flops_per_group(self) -> dict:
        """The FLOPs each family's groups cost: what removing half of its groups saves, per group removed."""
        polynomial = self.cost_polynomial()
        sizes = torch.tensor([f.size for f in self.hm.families])
        full, costs = polynomial(sizes)[0], {}
        for i, fam in enumerate(self.hm.families):
            fewer = sizes.clone()
            fewer[i] -= max(1, fam.size // 2)
            costs[fam] = max(full - polynomial(fewer)[0], 1) / max(1, fam.size // 2)
        return costs

    def ratio_of_kept(self, kept: dict) -> float:
        """The FLOPs ratio of the network that keeps these groups."""
        return self.cost_of_kept(kept)[0] / self.hm.baseline_flops

    def cost_of_kept(self, kept: dict) -> tuple[int, int]:
        """(FLOPs, params) of the network that keeps these groups."""
        return self.cost_polynomial()(torch.tensor([len(kept[f]) for f in self.hm.families]))

    def threshold_for_ratio(self, norms: dict, log, measure=None) -> float:
        """The nullifying threshold for the configured ratio: the original's iterative search under legacy_search,
        the exact search otherwise (what the command line's compression stage and Hinge.compress both run); with
        target 'latency' and `measure` (kept groups -> measured latency ratio), corrected by measured passes."""
        search = self.search_threshold_legacy if self.config.legacy_search else self.search_threshold
        threshold = search(norms, self.config.ratio, log)
        if self.config.target == 'latency' and measure is not None and not self.config.legacy_search:
            threshold = self.measured_threshold(norms, threshold, self.config.ratio, measure, log)
        return threshold

    def measured_threshold(self, norms: dict, threshold: float, target: float, measure, log) -> float:
        """Target 'latency': the threshold whose compressed network's mean measured time comes closest to `target`.
        `measure(kept)` times the network a threshold's kept groups give (a fraction of the baseline's time);
        while its mean misses the target by more than MEASURED_TOLERANCE of it, the search aims at a corrected
        prediction (measured_aim) and times the threshold that comes closest; a threshold within the tolerance is
        timed again before it is accepted (one timing can be lucky). The passes end when the aim returns to a
        threshold timed already or finds none between two that straddle the target, or after MEASURED_TIMINGS.
        The model interpolates between measured widths, the passes time the widths themselves."""
        model, counter, candidates = self.latency_model(), self.survivors(norms), threshold_candidates(norms)
        timings: dict[float, list[float]] = {}
        predictions: dict[float, float] = {}
        for _ in range(MEASURED_TIMINGS):
            timings.setdefault(threshold, []).append(measure(self.kept(norms, threshold)))
            predictions[threshold] = self.target_ratio(counter, threshold)
            measured = statistics.mean(timings[threshold])
            log.write(f'Measured pass: threshold={threshold:2.8f}, latency ratio predicted '
                      f'{predictions[threshold]:.4f}, measured {timings[threshold][-1]:.4f} (mean of '
                      f'{len(timings[threshold])}: {measured:.4f}).')
            if abs(measured - target) <= MEASURED_TOLERANCE * target:
                if len(timings[threshold]) > 1:
                    break
                continue
            means = {t: statistics.mean(times) for t, times in timings.items()}
            aim, (low, high) = measured_aim(means, predictions, threshold, target)
            inside = [t for t in candidates if low < t < high]
            if not inside:
                break
            threshold = inside[self._closest_prediction(model, counter, inside, aim)[0]]
            if threshold in timings:
                break
        means = {t: statistics.mean(times) for t, times in timings.items()}
        best = min(means, key=lambda t: abs(means[t] - target))
        log.write(f'Measured passes: threshold={best:2.8f}, mean measured latency ratio {means[best]:.4f} '
                  f'(target {target}).')
        return best

    def search_threshold(self, norms: dict, target: float, log, multiple: int | None = None) -> float:
        """The threshold whose FLOPs ratio is closest to `target`, by bisection over the thresholds at
        which the kept channels change (midpoints between consecutive distinct group norms); with target
        'latency', the closest of all those thresholds by predicted latency. `multiple`: as in survivors."""
        candidates = threshold_candidates(norms)
        counter = self.survivors(norms, multiple)
        if self.config.target == 'latency':
            return self._closest_latency(counter, candidates, target, log)
        lo, hi, iteration = 0, len(candidates) - 1, 0
        ratios: dict[int, float] = {}

        def ratio(i: int) -> float:
            nonlocal iteration
            if i not in ratios:
                iteration += 1
                flops = self.cost(counter, candidates[i])[0]
                ratios[i] = flops / self.hm.baseline_flops
                log.write(f'Iter {iteration}: threshold={candidates[i]:2.8f}, status={ratios[i]:2.4f}, flops={flops}.')
            return ratios[i]

        if ratio(hi) > target:
            best = hi
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if ratio(mid) > target:
                    lo = mid
                else:
                    hi = mid
            best = min((lo, hi), key=lambda i: (abs(ratio(i) - target), i))
        if abs(ratio(best) - target) > THRESHOLD_TOLERANCE:
            log.write(f'The ratio {target} is not attainable within {THRESHOLD_TOLERANCE} (channels come in coarser '
                      f'steps here); the closest attainable ratio is {ratio(best):.4f}.')
        return candidates[best]

    def _closest_latency(self, counter: SurvivorCounter, candidates: list[float], target: float, log) -> float:
        """The candidate threshold whose predicted latency ratio is closest to `target` (every candidate is
        evaluated: measured times need not fall monotonically with the channels kept)."""
        model = self.latency_model()
        best, reached = self._closest_prediction(model, counter, candidates, target)
        log.write(f'Latency search over {len(candidates)} thresholds: threshold={candidates[best]:2.8f}, '
                  f'status={reached:2.4f}, latency={reached * model.baseline * 1e3:.2f} ms per batch (baseline '
                  f'{model.baseline * 1e3:.2f} ms), flops={self.cost(counter, candidates[best])[0]}.')
        if abs(reached - target) > THRESHOLD_TOLERANCE:
            log.write(f'The ratio {target} is not attainable within {THRESHOLD_TOLERANCE} (channels come in coarser '
                      f'steps here); the closest attainable ratio is {reached:.4f}.')
        return candidates[best]

    def _closest_prediction(self, model: LatencyModel, counter: SurvivorCounter, candidates: list[float],
                            target: float) -> tuple[int, float]:
        """(index, predicted ratio) of the candidate threshold whose predicted latency ratio is closest to target."""
        ratios = model.ratio(torch.stack([counter.counts(t) for t in candidates]), self.fold_cheaper)
        best = int(torch.argmin((ratios - target).abs()))
        return best, float(ratios[best])

    def search_threshold_legacy(self, norms: dict, target: float, log) -> float:
        """The original's threshold walk: steps of 0.01 from --threshold, halved at each crossing, at most
        100 iterations, stopping within 0.001 of the target."""
        threshold, step, status, iteration = self.config.threshold, 0.01, 1.0, 1
        counter = self.survivors(norms)
        while abs(status - target) > THRESHOLD_TOLERANCE and iteration <= 100:
            previous = status
            flops = self.cost(counter, threshold)[0]
            status = self.target_ratio(counter, threshold)
            log.write(f'Iter {iteration}: current step={step:1.4f}, current threshold={threshold:2.8f}, '
                      f'status={status:2.4f}, flops={flops}.')
            if abs(status - target) <= THRESHOLD_TOLERANCE:
                break
            if iteration > 1 and (previous >= target) == (status < target):
                step /= 2
            if status > target:
                threshold += step
            elif status < target:
                threshold = max(threshold - step, 0)
            iteration += 1
            if status <= 0:
                break
        return threshold


def measured_aim(means: dict[float, float], predictions: dict[float, float], latest: float,
                 target: float) -> tuple[float, tuple[float, float]]:
    """The predicted ratio the next measured pass aims at, and the open range of thresholds to look in. When timed
    thresholds straddle the target (mean measured ratios above and below it), between the closest on either side,
    the aim linear in the measured ratio between their predictions (the model's error need not be one factor);
    otherwise anywhere, the latest prediction scaled by target / its measured ratio (the model's error there)."""
    above = [t for t, m in means.items() if m > target]
    below = [t for t, m in means.items() if m < target]
    if above and below:
        slow = min(above, key=lambda t: means[t])
        fast = max(below, key=lambda t: means[t])
        share = (means[slow] - target) / (means[slow] - means[fast])
        aim = predictions[slow] + share * (predictions[fast] - predictions[slow])
        return aim, (min(slow, fast), max(slow, fast))
    return predictions[latest] * target / means[latest], (-float('inf'), float('inf'))


class Messages:
    """A log that collects its lines (the API's threshold search; the rankings allocation 'fastest' only times)."""

    def __init__(self):
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


def shared_family(fam: GroupFamily) -> bool:
    """Whether the family's channels are shared by several matrices (a residual stream, concatenated maps)."""
    return len(fam.members) > 1


def even_scores(norms: torch.Tensor) -> torch.Tensor:
    """Scores that cut every family to the same fraction: a group's rank by norm within its family (plus its norm
    over the family's largest, which keeps the order and breaks ties between families) over the family's size."""
    ranks = torch.empty_like(norms, dtype=torch.float64)
    ranks[torch.argsort(norms, stable=True)] = torch.arange(len(norms), dtype=torch.float64)
    relative = norms.double() / norms.double().max().clamp_min(1e-30)
    return ((ranks + relative) / len(norms)).to(norms.dtype)


def ranking_scores(families: list[GroupFamily], norms: dict, ranking: str, costs: dict | None = None) -> dict:
    """The scores a ranking thresholds: the group norms ('norm'), even_scores ('even'), the same with every shared
    family scored above every other group, so that it is cut last ('-keep-shared'), or each norm over its
    family's largest divided by the square root of the FLOPs a group of the family costs (`costs`) over their mean
    ('norm-per-flop': layers that cost more per channel are cut deeper)."""
    if ranking == 'norm-per-flop':
        mean = sum(costs.values()) / len(costs)
        return {f: n / n.max().clamp_min(1e-30) / (costs[f] / mean) ** 0.5 for f, n in norms.items()}
    base = {f: (even_scores(n) if ranking.startswith('even') else n) for f, n in norms.items()}
    if not ranking.endswith('keep-shared'):
        return base
    top = max(float(s.max()) for s in base.values()) + 1
    return {f: (s + top if shared_family(f) else s) for f, s in base.items()}


def same_kept(a: dict, b: dict) -> bool:
    """Whether two allocations keep the same groups of every family."""
    return all(torch.equal(a[f], b[f]) for f in a)


def threshold_candidates(norms: dict) -> list[float]:
    """0, the midpoints between consecutive distinct group norms, and a threshold above them all."""
    values = torch.unique(torch.cat([n for f, n in norms.items() if f.cuts]).double())
    return [0.0] + ((values[1:] + values[:-1]) / 2).tolist() + [float(values[-1]) * 2 + 1]


def compression_report(hm: HingeModel, norms: dict, kept: dict, threshold: float, epoch_continue: int,
                       flops: int, params: int) -> tuple[list[str], dict, list[list[float]]]:
    """The original's log lines, compression_information.pt content and per-layer removed fractions per role."""
    info = {'flops_original': hm.baseline_flops / 1e9, 'flops_remaining': flops / 1e9,
            'flops_ratio': flops / hm.baseline_flops * 100, 'params_original': hm.baseline_params / 1e3,
            'params_remaining': params / 1e3, 'params_ratio': params / hm.baseline_params * 100,
            'epoch_continue': epoch_continue, 'threshold': threshold}
    lines = ['\nThe information about the compressed network is as follows:']
    per_layer: list[list[float]] = [[] for _ in range(hm.policy.roles)]
    for fam in hm.families:
        n, index = norms[fam], kept[fam]
        remain = n[index]
        channels, removed = len(n), len(n) - len(index)
        stat = {'stat_channel': [channels, removed, removed / channels],
                'stat_remain_norm': [float(remain.max()), float(remain.mean()), float(remain.min())],
                'remain_norm': remain.clone(), 'pindex': index.clone()}
        info.setdefault(f'info_layer{fam.block}', []).append(stat)
        per_layer[fam.role].append(removed / channels)
        high, mean, low = stat['stat_remain_norm']
        lines.append(f'{hm.policy.label}{fam.block:<2} Layer{fam.layer}: channels -> orginal={channels:<2}, '
                     f'compress={removed:<2}, ratio={removed / channels:2.4f}; '
                     f'norm -> max={high:2.6f}, mean={mean:2.6f}, min={low:2.6f}')
    lines.append(f'Hinge searching epochs: {epoch_continue:<3}\nFinal nullifying threshold {threshold:2.8f}\n'
                 f'FLOPs original: {info["flops_original"]:.4f} [G]\n'
                 f'FLOPs remaining: {info["flops_remaining"]:.4f} [G]\n'
                 f'FLOPs ratio: {info["flops_ratio"]:2.2f}\nParams original: {info["params_original"]:.2f} [k]\n'
                 f'Params remaining: {info["params_remaining"]:.2f} [k]\nParams ratio: {info["params_ratio"]:2.2f}\n')
    return lines, info, per_layer
