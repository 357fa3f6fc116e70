"""What a training step may add around forward/backward/step (BatchHooks), and setting per-group lrs.

The trainer runs plain steps through these hooks; the Hinge search plugs its penalty, lr adjustment and
proximal step in without the trainer knowing about it (and without model_hinge depending on the trainer).
"""

import torch

from model_hinge.search import SearchController


class BatchHooks:
    """Extra work around a training step; the default is plain SGD-style training."""

    hinge_format = False  # log lines with 'Total: ... / P1: ...' as the original's Hinge trainer

    def begin_epoch(self, lr_factor: float) -> None:
        pass

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)

    def extra_loss(self) -> torch.Tensor | None:
        return None

    def after_backward(self, optimizer: torch.optim.Optimizer, lr_factor: float) -> None:
        pass

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def after_step(self, batch: int, optimizer: torch.optim.Optimizer) -> None:
        pass

    def status(self) -> str:
        """Text inserted in the periodic training log line (e.g. ' / P1: ... / P2: ...')."""
        return ''

    def nonfinite(self) -> torch.Tensor | None:
        """A device flag set when the hooks saw NaN/inf (e.g. in A)."""
        return None


def set_learning_rates(optimizer: torch.optim.Optimizer, factor: float, multipliers: list[float] | None = None) -> None:
    """group lr = initial lr x schedule factor (x per-group multiplier)."""
    for i, group in enumerate(optimizer.param_groups):
        group['lr'] = group['initial_lr'] * factor * (multipliers[i] if multipliers else 1.0)


class SearchHooks(BatchHooks):
    """The search stage's additions to a training step, delegated to the library's SearchController: penalty,
    lr adjustment, optimizer step (with the legacy frozen tensors), proximal step."""

    hinge_format = True

    def __init__(self, controller: SearchController):
        self.c = controller

    def begin_epoch(self, lr_factor: float) -> None:
        self.c.start_epoch()

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        self.c.zero_grad(optimizer)

    def extra_loss(self) -> torch.Tensor | None:
        return self.c.penalty_for_step()

    def after_backward(self, optimizer: torch.optim.Optimizer, lr_factor: float) -> None:
        self.c.adjust_lrs(optimizer, [g['initial_lr'] * lr_factor for g in optimizer.param_groups])

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.c.optimizer_step(optimizer)

    def after_step(self, batch: int, optimizer: torch.optim.Optimizer) -> None:
        self.c.after_optimizer_step(batch, optimizer)

    def status(self) -> str:
        text = penalty_text(self.c.penalty)
        return text + (f' / rP: {self.c.grad_ratio:.3f}' if self.c.policy.separate_roles else '')

    def nonfinite(self) -> torch.Tensor:
        return self.c.bad


def penalty_text(penalty: torch.Tensor) -> str:
    """' / P1: ... / P2: ...', one term per role, as the original logs them."""
    return ''.join(f' / P{i + 1}: {v:.3f}' for i, v in enumerate(penalty.tolist()))


class ConvergingHooks(BatchHooks):
    """Plain training of the compressed network; the log still shows its group penalties."""

    hinge_format = True

    def __init__(self, controller: SearchController | None):
        self.c = controller

    def status(self) -> str:
        if self.c is None:
            return ''
        with torch.no_grad():
            return penalty_text(self.c.penalties())
