"""The UPS watch against a real upsd with dummy-ups drivers (Debian nut-server)."""
from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from firmware.errors import ActionError
from firmware.ups import UpsWatch, cut_outlet, read_ups
from firmware.ups_policy import ups_events
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


def test_every_policy_from_real_readings(nut):
    from firmware.ups_policy import ups_intent
    watch = UpsWatch({"master": f"alpha@127.0.0.1:{nut.port}", "standby": f"beta@127.0.0.1:{nut.port}"})
    wait_for(watch, "standby", lambda o: o.reachable and "OL" in o.flags)

    def intent():
        return ups_intent("master", watch.poll(), ["standby"], {"master": 0, "standby": 0}, 300.0, True)

    nut.set("alpha", "OB DISCHRG", charge=70, runtime=900)
    wait_for(watch, "master", lambda o: "OB" in o.flags)
    assert intent().kind == "none"  # on battery alone: an alert, no action
    nut.set("alpha", "OB DISCHRG LB", charge=9, runtime=100)
    wait_for(watch, "master", lambda o: "LB" in o.flags)
    assert (intent().kind, intent().target) == ("switchover", "standby")
    nut.set("beta", "OB DISCHRG", charge=70, runtime=900)
    wait_for(watch, "standby", lambda o: "OB" in o.flags)
    got = intent()
    assert got.kind == "backup-shutdown" and got.shutdown_order == ("standby", "master")
    nut.set("alpha", "OB DISCHRG", charge=60, runtime=800)
    wait_for(watch, "master", lambda o: "LB" not in o.flags)
    assert intent().kind == "all-on-battery"
    nut.kill_driver("alpha")
    wait_for(watch, "master", lambda o: not o.reachable)
    assert intent().kind == "none"  # lost monitoring never acts


@pytest.mark.parametrize("answer", [b"BEGIN LIST VAR u\nVAR\nEND LIST VAR u\n", b"\xff\xfe garbage\n",
                                    b"BEGIN LIST VAR u\nVAR u ups.status\n"])
def test_a_garbled_upsd_answer_is_monitoring_lost_not_a_crash(answer):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer_once() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(256)
            conn.sendall(answer)
    t = threading.Thread(target=answer_once, daemon=True)
    t.start()
    try:
        obs = read_ups(f"u@127.0.0.1:{port}", timeout=1.0)
    finally:
        t.join(2)
        server.close()
    assert obs.reachable is False and obs.error


def _play_the_outlet(nut: NutSite, stop: threading.Event, seen: list) -> None:
    """What the rig does: an instcmd upsd accepted cuts the load; the readback says so."""
    while not stop.wait(0.02):
        for user, command, ups in nut.new_instcmds():
            seen.append((user, command, ups))
            nut.set(ups, "OFF", extra={"outlet.1.status": "off"})


def test_level2_fence_through_upsd_is_confirmed_by_the_ups_readback(nut):
    stop, seen = threading.Event(), []
    player = threading.Thread(target=_play_the_outlet, args=(nut, stop, seen), daemon=True)
    player.start()
    try:
        password = nut.fence_password_file.read_text().strip()
        spec = f"alpha@127.0.0.1:{nut.port}"
        with pytest.raises(ActionError, match="refused: access denied"):
            cut_outlet(spec, "load.off", "fencer", "wrong", 5.0)
        with pytest.raises(ActionError, match="refused: access denied"):
            cut_outlet(spec, "load.off", "monitor", "rig-monitor", 5.0)  # a user without the instcmd
        assert seen == []
        t0 = time.monotonic()
        assert cut_outlet(spec, "load.off", "fencer", password, 5.0) == f"load.off on {spec}; ups.status reads OFF"
        assert time.monotonic() - t0 < 3.0
        assert seen == [("fencer", "load.off", "alpha")]
        # dummy-ups declares no outlets: upsd itself refuses outlet.N commands for it
        with pytest.raises(ActionError, match="outlet.1.load.off on .* refused: ERR CMD-NOT-SUPPORTED"):
            cut_outlet(spec, "outlet.1.load.off", "fencer", password, 5.0)
    finally:
        stop.set()
        player.join()


def test_level2_fence_that_the_ups_never_confirms_fails_naming_the_bound(nut):
    spec = f"beta@127.0.0.1:{nut.port}"
    password = nut.fence_password_file.read_text().strip()
    with pytest.raises(ActionError, match="accepted, but the power does not read off within timing.fence_timeout = 1 s"):
        cut_outlet(spec, "load.off", "fencer", password, 1.0)
    assert cut_outlet(spec, "load.off", "fencer", password, 1.0, sensed_off=lambda: True) == (
        f"load.off on {spec}; power-sense input reads off")
