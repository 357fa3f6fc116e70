"""What a training step may add around forward/backward/step (BatchHooks), and setting per-group lrs.

The trainer runs plain steps through these hooks; the Hinge search plugs its penalty, lr adjustment and
proximal step in without the trainer knowing about it (and without model_hinge depending on the trainer).
"""

import torch


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
