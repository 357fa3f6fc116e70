"""Learning-rate schedules of --decay: step-a-b (also hingestep-, warmstep-) times --gamma at epochs a, b."""

from bisect import bisect_right

from utils.errors import UsageError

WARMUP_EPOCHS = 5


class StepSchedule:
    """lr factor of an epoch (1-based): gamma^(milestones passed), with a linear warm-up for 'warm' decays."""

    def __init__(self, decay: str, gamma: float, linear: int = 1):
        if 'step' not in decay:
            raise UsageError(f'--decay {decay} is not supported; use step-A-B (or hingestep-A-B, warmstep-A-B).')
        try:
            self.milestones = [int(x) for x in decay.split('-')[1:]]
        except ValueError:
            raise UsageError(f'--decay {decay}: the milestones must be integers, e.g. step-150-225.') from None
        if self.milestones != sorted(self.milestones):
            raise UsageError(f'--decay {decay}: the milestones must increase.')
        self.gamma = gamma
        self.warm = 'warm' in decay
        self.scale = linear

    def factor(self, epoch: int) -> float:
        last = epoch - 1
        if self.warm and last < WARMUP_EPOCHS:
            return (1 + last * (self.scale - 1) / WARMUP_EPOCHS) / self.scale
        return self.gamma ** bisect_right(self.milestones, last)
