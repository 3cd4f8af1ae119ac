"""The UPS watch against a real upsd with dummy-ups drivers (Debian nut-server)."""
from __future__ import annotations

import random
import time

import pytest

from firmware.ups import UpsWatch, ups_events
from hil.nut import NutSite


@pytest.fixture
def nut(tmp_path):
    with NutSite(tmp_path / "nut", ["alpha", "beta"], random.randint(20000, 29999)) as site:
        yield site


def wait_for(watch: UpsWatch, server: str, check, timeout: float = 8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obs = watch.poll()[server]
        if check(obs):
            return obs
        time.sleep(0.2)
    raise AssertionError(f"{server}: last reading {obs}")


def test_power_events_follow_the_real_driver(nut):
    watch = UpsWatch({"master": f"alpha@127.0.0.1:{nut.port}", "standby": f"beta@127.0.0.1:{nut.port}"})
    first = wait_for(watch, "master", lambda o: o.reachable and "OL" in o.flags)
    assert ups_events(None, first) == []  # start-up is silent
    nut.set("alpha", "OB DISCHRG", charge=80, runtime=900)
    ob = wait_for(watch, "master", lambda o: "OB" in o.flags)
    assert ob.charge == 80 and ob.runtime_s == 900
    assert ups_events(first, ob) == ["ups-on-battery"]
    nut.set("alpha", "OB DISCHRG LB", charge=8, runtime=120)
    lb = wait_for(watch, "master", lambda o: "LB" in o.flags)
    assert ups_events(ob, lb) == ["ups-low-battery"]
    nut.set("alpha", "OL CHRG", charge=9, runtime=130)
    ol = wait_for(watch, "master", lambda o: "OL" in o.flags)
    assert ups_events(lb, ol) == ["ups-power-restored"]
    assert watch.poll()["standby"].flags == frozenset({"OL"})


def test_dead_driver_and_dead_upsd_are_alerts_not_exceptions(nut):
    watch = UpsWatch({"master": f"alpha@127.0.0.1:{nut.port}"}, timeout=1.0)
    ok = wait_for(watch, "master", lambda o: o.reachable)
    nut.kill_driver("alpha")
    lost = wait_for(watch, "master", lambda o: not o.reachable)
    assert "driver" in lost.error or "stale" in lost.error
    assert ups_events(ok, lost) == ["ups-monitoring-lost"]
    assert ups_events(lost, watch.poll()["master"]) == []  # once, not at every poll
    nut.start_driver("alpha")
    back = wait_for(watch, "master", lambda o: o.reachable and "OL" in o.flags)
    assert ups_events(lost, back) == ["ups-monitoring-restored"]
    nut.stop_upsd()
    t0 = time.monotonic()
    down = watch.poll()["master"]
    assert not down.reachable and "upsd" in down.error and time.monotonic() - t0 < 2.0


def test_unknown_ups_is_named(nut):
    obs = UpsWatch({"master": f"nosuch@127.0.0.1:{nut.port}"}).poll()["master"]
    assert not obs.reachable and obs.error == "unknown UPS name"
