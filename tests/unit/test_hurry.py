"""Between two cycles, the servers the last decision hurries are polled again every
timing.interval / HURRY_SHARE, and the wait ends at once when something wakes the loop."""
from __future__ import annotations

import dataclasses
import threading
import time

from firmware.daemon import HURRY_SHARE
from firmware.decide.step import Decision
from tests.unit.test_damaged_files import make_daemon


def test_the_hurried_standby_is_polled_between_ticks_and_a_wake_up_ends_the_wait(tmp_path, monkeypatch):
    daemon = make_daemon(tmp_path)
    try:
        polled: list[tuple[float, tuple[str, ...]]] = []
        monkeypatch.setattr(daemon.app.poller, "poll_lan",
                            lambda servers: polled.append((daemon.clock(), tuple(servers))))
        monkeypatch.setattr("firmware.daemon.decide",
                            lambda state, obs, now, cfg: Decision(dataclasses.replace(state), (), "",
                                                                  hurry=("standby",)))
        assert daemon._cycle() is True
        step = daemon.cfg.timing.interval / HURRY_SHARE
        began = daemon.clock()
        daemon._wait(began + 2 * daemon.cfg.timing.interval)
        assert len(polled) >= HURRY_SHARE * 2 - 2
        assert all(servers == ("standby",) for _, servers in polled)
        assert all(b - a >= step * 0.9 for (a, _), (b, _) in zip(polled, polled[1:]))

        polled.clear()
        threading.Timer(step * 1.5, daemon.wake.set).start()  # a reply with news
        began = daemon.clock()
        daemon._wait(began + 10.0)
        assert daemon.clock() - began < 1.0 and len(polled) <= 2
    finally:
        daemon.app.close()


def test_a_cycle_without_hurry_polls_nobody_between_ticks(tmp_path, monkeypatch):
    daemon = make_daemon(tmp_path)
    try:
        polled: list[tuple[str, ...]] = []
        monkeypatch.setattr(daemon.app.poller, "poll_lan", lambda servers: polled.append(tuple(servers)))
        monkeypatch.setattr("firmware.daemon.decide",
                            lambda state, obs, now, cfg: Decision(dataclasses.replace(state), (), "",
                                                                  hurry=("standby",)))
        assert daemon._cycle() is True
        monkeypatch.setattr("firmware.daemon.decide",
                            lambda state, obs, now, cfg: Decision(dataclasses.replace(state), (), ""))
        assert daemon._cycle() is True  # the next decision no longer hurries it
        daemon._wait(daemon.clock() + daemon.cfg.timing.interval)
        assert polled == []
    finally:
        daemon.app.close()


def test_a_woken_cycle_that_hurries_polls_at_once_when_the_last_poll_is_a_step_old(tmp_path, monkeypatch):
    """A lease's end wakes a cycle that polls nobody (test_loop_polls): the standby it hurries is
    asked at once, not a step later, when the loop's last poll is that old; the next a step on."""
    daemon = make_daemon(tmp_path)
    try:
        polled: list[float] = []
        monkeypatch.setattr(daemon.app.poller, "poll_lan", lambda servers: polled.append(daemon.clock()))
        monkeypatch.setattr("firmware.daemon.decide",
                            lambda state, obs, now, cfg: Decision(dataclasses.replace(state), (), "",
                                                                  hurry=("standby",)))
        step = daemon.cfg.timing.interval / HURRY_SHARE
        assert daemon._cycle() is True  # the tick's: polls every link
        time.sleep(step * 1.5)
        assert daemon._cycle(poll=False) is True  # woken by the primary's lease ending
        began = daemon.clock()
        daemon._wait(began + 2 * daemon.cfg.timing.interval)
        assert polled and polled[0] - began < step / 2
        assert len(polled) >= 2 and polled[1] - polled[0] >= step * 0.9
    finally:
        daemon.app.close()
