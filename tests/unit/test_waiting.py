"""The one deadline wait, on a fake clock."""
from __future__ import annotations

from firmware.waiting import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.1  # every look at the clock costs a tenth
        return self.now


def test_true_as_soon_as_the_condition_holds():
    seen = iter([False, False, True])
    assert wait_until(lambda: next(seen), 10.0, 0.0, Clock()) is True


def test_false_once_the_time_is_up_and_the_condition_ran_at_least_once():
    calls = []
    assert wait_until(lambda: calls.append(1) or False, 0.35, 0.0, Clock()) is False
    assert len(calls) == 4  # looks at 0.2, 0.3, 0.4 (deadline 0.45), then 0.5 ends it
    assert wait_until(lambda: True, 0.0, 0.0, Clock()) is True
