"""utils/schedule.py: step decays by gamma after the milestone epochs; warm-up for linear scaling."""

import pytest

from utils.errors import UsageError
from utils.schedule import StepSchedule


def test_step_decay_applies_from_the_epoch_after_each_milestone():
    s = StepSchedule('hingestep-150-225', 0.1)
    assert [s.factor(e) for e in (1, 150, 151, 225, 226)] == [1, 1, pytest.approx(0.1), pytest.approx(0.1),
                                                              pytest.approx(0.01)]


def test_warm_up_over_five_epochs():
    s = StepSchedule('warmstep-10', 0.1, linear=4)
    assert [s.factor(e) for e in (1, 2, 5, 6, 12)] == [pytest.approx(v) for v in (0.25, 0.4, 0.85, 1.0, 0.1)]


@pytest.mark.parametrize('decay', ['cosine', 'step-a-b', 'step-200-100'])
def test_bad_decay_is_a_usage_error(decay):
    with pytest.raises(UsageError, match='--decay'):
        StepSchedule(decay, 0.1)
