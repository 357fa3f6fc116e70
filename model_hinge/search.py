"""The search stage, generic over architectures.

Per batch: the group penalty (P1, P2), its annealing, the gradient-ratio lr adjustment and the proximal
step, each vectorised over all layers. Per epoch: the FLOPs ratio the network would have if compressed
now, from channel counts alone. At the end: the threshold search and the compression report.
"""

from argparse import Namespace

import torch

from model_hinge import prox
from model_hinge.core import HingeModel
from model_hinge.groups import GroupBank, GroupFamily, split_into_banks
from model_hinge.surgery import compressed_shape_of, kept_groups
from trainer import BatchHooks, set_learning_rates

ROLES = 2
RATIO_MOMENTUM = 0.9
RATIO_BOUNDS = (5 / 9, 9 / 5)
RATIO_EXPONENT = 1.35
THRESHOLD_TOLERANCE = 0.001


def initial_layer_weights(families: list[GroupFamily]) -> dict:
    """--layer_balancing: each family's threshold is scaled by the mean group norm of its matrix now."""
    weights = {}
    for bank in split_into_banks(families):
        group_bank = GroupBank(bank)
        means = group_bank.family_sums(group_bank.norms()) / torch.tensor([f.size for f in bank],
                                                                            device=group_bank.group_family.device)
        weights.update({fam: float(m) for fam, m in zip(bank, means, strict=True)})
    return weights


def search_param_groups(hm: HingeModel, lr: float, lr_ratio: float) -> list[dict]:
    """Non-A parameters at lr * lr_ratio, then the A matrices (A1 and A2 apart when separated) at lr."""
    roles = hm.matrices()
    matrix_ids = {id(p) for r in roles for p in r}
    others = [p for p in hm.net.parameters() if p.requires_grad and id(p) not in matrix_ids]
    groups = [{'params': others, 'lr': lr * lr_ratio, 'initial_lr': lr * lr_ratio}]
    return groups + [{'params': r, 'lr': lr, 'initial_lr': lr} for r in roles]


class SearchController:
    """Penalty, annealing, lr adjustment and proximal steps for one Hinge model."""

    def __init__(self, hm: HingeModel, args: Namespace, layer_weights: dict | None):
        self.hm, self.args = hm, args
        self.device = next(hm.net.parameters()).device
        self.banks = [GroupBank(b) for b in split_into_banks(hm.families)]
        self.group_weights = [self._weights(bank, layer_weights) for bank in self.banks]
        self.frozen: list[torch.Tensor] = []
        self.bad = torch.zeros((), dtype=torch.bool, device=self.device)

    def _weights(self, bank: GroupBank, layer_weights: dict | None) -> torch.Tensor:
        values = [layer_weights[f] if layer_weights else 1.0 for f in bank.families]
        return torch.tensor(values, dtype=torch.float32, device=self.device)[bank.group_family]

    def penalties(self) -> torch.Tensor:
        """(P1, P2): per matrix (sum_g ||g||^q)^(1/q), averaged (or summed) over the blocks of each role.

        Differentiable, so that --optimizer SGD can add it to the loss.
        """
        q = self.args.q
        total = torch.zeros(ROLES, device=self.device)
        count = torch.zeros(ROLES, device=self.device)
        for bank in self.banks:
            per_group = bank.squared_norms().clamp_min(1e-30).pow(q / 2)
            per_family = bank.family_sums(per_group).pow(1 / q)
            total = total + bank.role_sums(per_family, ROLES)
            count = count + bank.role_sums(torch.ones_like(per_family), ROLES)
        return total / count.clamp_min(1) if self.hm.adapter.mean_penalty else total

    def regularization(self, p1: torch.Tensor) -> torch.Tensor:
        """The annealed factor: /a once P1 <= annealing_t1, /a^2 once P1 <= annealing_t2 (a = 0: constant)."""
        a, reg = self.args.annealing_factor, self.args.regularization_factor
        base = torch.full((), reg, device=self.device)
        if a == 0:
            return base
        return torch.where(p1 <= self.args.annealing_t2, base / a ** 2,
                           torch.where(p1 <= self.args.annealing_t1, base / a, base))

    @torch.no_grad()
    def update_grad_ratio(self) -> float:
        """Running ratio sum||grad A1 groups|| / sum||grad A2 groups|| (weight 0.9 on the new value, clipped)."""
        sums = torch.zeros(ROLES, device=self.device)
        for bank in self.banks:
            sums += bank.role_sums(bank.family_sums(bank.grad_norms()), ROLES)
        ratio = sums[0] / sums[1]
        previous = self.hm.net.running_grad_ratio
        if previous is None:
            new = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
        else:
            blended = (previous * (1 - RATIO_MOMENTUM) + ratio * RATIO_MOMENTUM).clamp(*RATIO_BOUNDS)
            new = torch.where(torch.isfinite(ratio), blended, previous)
        self.hm.net.running_grad_ratio = new
        return float(new)

    def lr_multipliers(self, n_groups: int, ratio: float) -> list[float]:
        """p1: every group but the last divided by r^1.35; p2: the last multiplied by r^1.35."""
        r = ratio if ratio != 0 else 1.0
        if self.args.lr_adjust_method == 'p1':
            return [r ** -RATIO_EXPONENT] * (n_groups - 1) + [1.0]
        return [1.0] * (n_groups - 1) + [r ** RATIO_EXPONENT]

    @torch.no_grad()
    def proximal_step(self, lr: float, regularization: torch.Tensor) -> None:
        """One proximal step on every group: threshold = regularization * lr (* layer weight)."""
        for bank, weights in zip(self.banks, self.group_weights, strict=True):
            norms = bank.norms()
            self.bad |= ~torch.isfinite(norms).all()
            lam = regularization * lr * weights
            bank.scale_(prox.scale(self.args.sparsity_regularizer, norms, lam, bank.group_family,
                                   len(bank.families)))

    def freeze_compressible(self) -> None:
        """--legacy_search: from now on the tensors that compression touches get no SGD step and their
        gradients accumulate over the epoch (what the original's per-epoch FLOPs check caused)."""
        seen, frozen = set(), []
        for fam in self.hm.families:
            for cut in fam.cuts:
                t = cut.tensor
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
        """Current group norms of every family, on the CPU."""
        norms = {}
        for bank in self.banks:
            values = bank.norms().cpu()
            norms.update(dict(zip(bank.families, bank.per_family(values), strict=True)))
        return norms

    def cost(self, norms: dict, threshold: float) -> tuple[int, int, dict]:
        """(FLOPs, params, kept groups) of the network compressed at `threshold`, from channel counts."""
        kept = kept_groups(self.hm.families, norms, threshold, self.args.remain_percentage,
                           self.args.p1_p2_same_ratio)
        shape_of = compressed_shape_of(self.hm.families, {f: len(k) for f, k in kept.items()})
        return self.hm.complexity.flops(shape_of), self.hm.complexity.params(shape_of), kept

    def ratio_at(self, norms: dict, threshold: float) -> float:
        return self.cost(norms, threshold)[0] / self.hm.baseline_flops

    def search_threshold(self, norms: dict, target: float, log) -> float:
        """The threshold whose FLOPs ratio is closest to `target`, by bisection over the thresholds at
        which the kept channels change (midpoints between consecutive distinct group norms)."""
        values = torch.unique(torch.cat([n for f, n in norms.items() if f.cuts]).double())
        candidates = [0.0] + ((values[1:] + values[:-1]) / 2).tolist() + [float(values[-1]) * 2 + 1]
        lo, hi, iteration = 0, len(candidates) - 1, 0
        ratios: dict[int, float] = {}

        def ratio(i: int) -> float:
            nonlocal iteration
            if i not in ratios:
                iteration += 1
                flops = self.cost(norms, candidates[i])[0]
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

    def search_threshold_legacy(self, norms: dict, target: float, log) -> float:
        """The original's threshold walk: steps of 0.01 from --threshold, halved at each crossing, at most
        100 iterations, stopping within 0.001 of the target."""
        threshold, step, status, iteration = self.args.threshold, 0.01, 1.0, 1
        while abs(status - target) > THRESHOLD_TOLERANCE and iteration <= 100:
            previous = status
            flops = self.cost(norms, threshold)[0]
            status = flops / self.hm.baseline_flops
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


class SearchHooks(BatchHooks):
    """The search stage's additions to a training step: penalty, lr adjustment, proximal step."""

    hinge_format = True

    def __init__(self, controller: SearchController, args: Namespace):
        self.c, self.args = controller, args
        self.proximal = args.optimizer == 'PG'
        self.adjust = controller.hm.adapter.separate_roles
        self.penalty = torch.zeros(ROLES)
        self.ratio = 1.0

    def begin_epoch(self, lr_factor: float) -> None:
        self.c.start_epoch()

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        self.c.zero_grad(optimizer)

    def extra_loss(self) -> torch.Tensor | None:
        if self.proximal:
            with torch.no_grad():
                self.penalty = self.c.penalties()
            return None
        scaled = self.c.penalties() * self.args.regularization_factor
        self.penalty = scaled.detach()
        return scaled.sum()

    def after_backward(self, optimizer: torch.optim.Optimizer, lr_factor: float) -> None:
        if self.adjust:
            self.ratio = self.c.update_grad_ratio()
            set_learning_rates(optimizer, lr_factor, self.c.lr_multipliers(len(optimizer.param_groups), self.ratio))

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.c.optimizer_step(optimizer)

    def after_step(self, batch: int, optimizer: torch.optim.Optimizer) -> None:
        if self.proximal and (batch + 1) % self.args.prox_freq == 0:
            regularization = self.c.regularization(self.penalty[0])
            self.c.proximal_step(optimizer.param_groups[-1]['lr'], regularization)

    def status(self) -> str:
        p1, p2 = self.penalty.tolist()
        text = f' / P1: {p1:.3f} / P2: {p2:.3f}'
        return text + (f' / rP: {self.ratio:.3f}' if self.adjust else '')

    def nonfinite(self) -> torch.Tensor:
        return self.c.bad


class ConvergingHooks(BatchHooks):
    """Plain training of the compressed network; the log still shows its group penalties."""

    hinge_format = True

    def __init__(self, controller: SearchController | None):
        self.c = controller

    def status(self) -> str:
        if self.c is None:
            return ''
        with torch.no_grad():
            p1, p2 = self.c.penalties().tolist()
        return f' / P1: {p1:.3f} / P2: {p2:.3f}'


def compression_report(hm: HingeModel, norms: dict, kept: dict, threshold: float, epoch_continue: int,
                       flops: int, params: int) -> tuple[list[str], dict, list[list[float]]]:
    """The original's log lines, compression_information.pt content and per-layer removed fractions."""
    info = {'flops_original': hm.baseline_flops / 1e9, 'flops_remaining': flops / 1e9,
            'flops_ratio': flops / hm.baseline_flops * 100, 'params_original': hm.baseline_params / 1e3,
            'params_remaining': params / 1e3, 'params_ratio': params / hm.baseline_params * 100,
            'epoch_continue': epoch_continue, 'threshold': threshold}
    lines = ['\nThe information about the compressed network is as follows:']
    per_layer: list[list[float]] = [[], []]
    for fam in hm.families:
        n, index = norms[fam], kept[fam]
        remain = n[index]
        channels, removed = len(n), len(n) - len(index)
        stat = {'stat_channel': [channels, removed, removed / channels],
                'stat_remain_norm': [float(remain.max()), float(remain.mean()), float(remain.min())],
                'remain_norm': remain.clone(), 'pindex': index.clone()}
        info.setdefault(f'info_layer{fam.block}', []).append(stat)
        per_layer[fam.layer - 1].append(removed / channels)
        high, mean, low = stat['stat_remain_norm']
        lines.append(f'ResBlock{fam.block:<2} Layer{fam.layer}: channels -> orginal={channels:<2}, '
                     f'compress={removed:<2}, ratio={removed / channels:2.4f}; '
                     f'norm -> max={high:2.6f}, mean={mean:2.6f}, min={low:2.6f}')
    lines.append(f'Hinge searching epochs: {epoch_continue:<3}\nFinal nullifying threshold {threshold:2.8f}\n'
                 f'FLOPs original: {info["flops_original"]:.4f} [G]\n'
                 f'FLOPs remaining: {info["flops_remaining"]:.4f} [G]\n'
                 f'FLOPs ratio: {info["flops_ratio"]:2.2f}\nParams original: {info["params_original"]:.2f} [k]\n'
                 f'Params remaining: {info["params_remaining"]:.2f} [k]\nParams ratio: {info["params_ratio"]:2.2f}\n')
    return lines, info, per_layer
