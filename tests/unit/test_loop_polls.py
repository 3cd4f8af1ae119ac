"""The loop polls every link once a tick, however often it is woken between ticks: a serial
line has room for one poll and its reply an interval (config.SERIAL_MAX_SHARE), and a
failover wakes the loop at every step."""
from __future__ import annotations

import threading
import time

from tests.unit.test_damaged_files import make_daemon


def test_cycles_woken_between_ticks_poll_nobody(tmp_path, monkeypatch):
    daemon = make_daemon(tmp_path)
    interval = daemon.cfg.timing.interval
    polls: list[float] = []
    cycles: list[float] = []
    monkeypatch.setattr(daemon.app.poller, "poll_all", lambda: polls.append(daemon.clock()))
    monkeypatch.setattr(daemon, "_signals", lambda: None)  # signal handlers belong to the main thread
    cycle = daemon._cycle
    monkeypatch.setattr(daemon, "_cycle", lambda poll=True: (cycles.append(daemon.clock()), cycle(poll))[1])
    loop = threading.Thread(target=daemon.run)
    began = daemon.clock()
    loop.start()
    try:
        while daemon.clock() - began < 25 * interval:
            daemon.wake.set()  # an action's result, a server's news, an order
            time.sleep(interval / 10)
    finally:
        daemon._stop()
        loop.join(10.0)
    ticks = (daemon.clock() - began) / interval
    assert not loop.is_alive()
    assert len(cycles) > 3 * ticks  # woken far more often than it ticks
    assert 0.5 * ticks <= len(polls) <= ticks + 2
