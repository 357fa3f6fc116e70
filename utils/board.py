"""--summary: per-epoch scalars for TensorBoard (needs the optional tensorboard package)."""

import importlib.util
from pathlib import Path

from utils.errors import UsageError


def require_tensorboard() -> None:
    if importlib.util.find_spec('tensorboard') is None:
        raise UsageError('--summary writes TensorBoard scalars and needs the tensorboard package '
                         '(pip install tensorboard); drop --summary otherwise.')


class Board:
    """Writes each epoch's loss, errors and learning rate under the run directory (a no-op when disabled)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir))
        self.step = 0

    def add_epoch(self, entry: dict) -> None:
        if self.writer is None:
            return
        self.step += 1
        for key in ('loss', 'top1_err', 'top5_err', 'train_loss', 'train_top1_err', 'lr', 'flops_ratio'):
            if entry.get(key) is not None:
                self.writer.add_scalar(f'{entry["stage"]}/{key}', entry[key], self.step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
