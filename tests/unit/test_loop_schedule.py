"""The daemon's fixed-rate loop: a cycle woken early is one more, and never moves the tick."""
from pytest import approx

from firmware.daemon import next_slot

I = 0.04


def test_the_ticks_cycle_sets_the_following_tick():
    assert next_slot(10.0, 10.0, 10.003, I) == approx((10.04, 0.0))


def test_a_cycle_woken_before_its_tick_leaves_the_tick_where_it_was():
    """A lease's end at 10.015: the poll due at 10.04 still goes out at 10.04, not at 10.08."""
    assert next_slot(10.04, 10.015, 10.018, I) == (10.04, 0.0)
    assert next_slot(10.04, 10.04, 10.042, I) == approx((10.08, 0.0))


def test_a_cycle_past_the_following_slot_is_late_and_the_next_starts_at_once():
    assert next_slot(10.0, 10.0, 10.1, I) == approx((10.1, 0.06))
