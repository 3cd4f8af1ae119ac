"""Ping nodes: a real ICMP echo, answered by a live address and by nobody at a dead one."""
from __future__ import annotations

import time

from firmware.reach import reaches_any


def test_a_live_target_is_reached_at_once_and_a_dead_one_times_out() -> None:
    started = time.monotonic()
    assert reaches_any(["127.0.0.1"], 1.0) is True
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    assert reaches_any(["192.0.2.254"], 0.3) is False  # TEST-NET-1: nobody answers there
    assert 0.25 < time.monotonic() - started < 0.6


def test_any_one_target_is_enough() -> None:
    assert reaches_any(["192.0.2.254", "127.0.0.1"], 1.0) is True
