"""History: a failover driven through the real decide leaves its phase changes, results with
durations, and the failover's timings; status --check and the history rendering read them."""
from __future__ import annotations

import dataclasses
import time

import pytest

from firmware.cli import parse_since, render_history, render_status
from firmware.decide import decide
from firmware.history import History
from firmware.journal import Journal, wall_stamp
from firmware.model import Channel, LinkObs, LinkState
from firmware.site_state import Phase, State
from firmware.status import CHECK_CRITICAL, CHECK_OK, CHECK_WARNING, check
from tests.unit.sitekit import obs, ok, server, site_config

CFG = site_config()
NORMAL = State(phase=Phase.NORMAL, primary="master", seen_run=1, led="ok")


def silent_master(last_seen: float):
    return dataclasses.replace(server("master"), links=(LinkObs(Channel.SERIAL, LinkState.DEAD, last_seen),
                                                         LinkObs(Channel.LAN, LinkState.DEAD, last_seen - 0.05)))


def run_failover(history: History, cfg=CFG, silent_s: float = 0.25) -> State:
    st, now, results = NORMAL, 100.0, ()
    servers = (silent_master(now - silent_s), server("standby"))
    while True:
        o = obs(*servers, results=results)
        d = decide(st, o, now, cfg)
        history.cycle(st, d.state, o, d.actions, d.reason != st.reason, now)
        st = d.state
        if st.phase is Phase.NORMAL:
            return st
        results = tuple(ok(i) for i in st.awaiting)
        now += 0.125


def test_a_failover_leaves_phases_results_and_its_timings(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    history = History(journal)
    st = run_failover(history)
    records = journal.tail(100)
    phases = [(r["from"], r["to"]) for r in records if r["kind"] == "phase"]
    assert phases == [("normal", "fencing"), ("fencing", "promoting"), ("promoting", "taking-ip"),
                      ("taking-ip", "verifying"), ("verifying", "normal")]
    results = [r for r in records if r["kind"] == "result"]
    assert [r["action"].split("#")[0] for r in results] == ["Fence", "Promote", "TakeIp", "VerifyIp"]
    assert all(r["took_s"] == 0.125 and r["ok"] for r in results)
    last = history.last_failover
    assert last["detection_s"] == 0.25 and last["fence_s"] == 0.125 and last["take_ip_s"] == 0.125
    assert last["total_s"] == 0.5 and last["completed"] and last["target"] == "standby" == st.primary
    assert any(r["kind"] == "decision" and "standby" in r["reason"] for r in records)
    again = History(journal).last_failover  # found again after a restart, with its stamps
    assert {k: again[k] for k in last} == last and again["ts"]


def test_a_failover_without_a_fence_relay_leaves_its_record_too(tmp_path):
    """Under policy.fencing = none a failover begins with promoting: it is an operation all the same."""
    journal = Journal(tmp_path / "journal.jsonl")
    history = History(journal)
    cfg = site_config(policy={"fencing": "none"})
    st = run_failover(history, cfg, silent_s=cfg.timing.self_fence_wait + 0.25)
    phases = [(r["from"], r["to"]) for r in journal.tail(100) if r["kind"] == "phase"]
    assert phases == [("normal", "promoting"), ("promoting", "taking-ip"), ("taking-ip", "verifying"),
                      ("verifying", "normal")]
    last = history.last_failover
    assert last["completed"] and last["target"] == "standby" == st.primary and last["operation"] == "failover"
    assert last["detection_s"] == cfg.timing.self_fence_wait + 0.25 and last["fence_s"] is None
    assert last["promote_s"] == 0.125
    assert last["total_s"] == 0.375


def test_records_carry_millisecond_wall_and_monotonic_stamps(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"kind": "decision", "reason": "r"})
    rec = journal.tail(1)[0]
    assert rec["ts"] == wall_stamp(rec["t"]) and len(rec["ts"].split(".")[1]) == 3 + 5
    assert abs(rec["mono"] - time.monotonic()) < 5 and abs(rec["t"] - time.time()) < 5
    assert journal.tail(5, since=rec["t"] + 1) == [] and journal.tail(5, kind="alert") == []


def test_history_renders_one_line_a_record():
    text = render_history([
        {"ts": "T1", "kind": "order", "cmd": "switchover", "server": "standby", "accepted": False,
         "reason": "switchover to standby: refused, lagging", "operator": {"uid": 0, "sudo_user": "alice",
                                                                            "loginuid": 1000}},
        {"ts": "T2", "kind": "result", "action": "Fence#3", "ok": True, "detail": "", "took_s": 0.2},
        {"ts": "T3", "kind": "phase", "from": "normal", "to": "fencing", "after_s": 12.0, "primary": "master",
         "target": "standby"}])
    lines = text.splitlines()
    assert "REFUSED" in lines[0] and "via sudo from alice, loginuid 1000" in lines[0]
    assert "Fence#3 ok in 0.2 s" in lines[1] and "normal -> fencing after 12.0 s" in lines[2]


def test_since_takes_durations_and_iso_times():
    assert parse_since("15m", 10_000.0) == 10_000.0 - 900
    assert parse_since("2h", 10_000.0) == 10_000.0 - 7200
    assert parse_since("2026-12-01T00:00:00+00:00", 0) == 1796083200.0
    with pytest.raises(Exception, match="--since 'yesterday'"):
        parse_since("yesterday", 0)


STATUS = {"site": "s", "phase": "normal", "in_phase_s": 30.0, "primary": "standby", "mode": "active",
          "maintenance": False, "alarm": {"severity": "CLEAR", "acked": False}, "failovers": 1, "version": "0.1.0",
          "last_failover": {"operation": "failover", "old": "master", "target": "standby", "completed": True,
                            "detection_s": 0.21, "fence_s": 0.05, "promote_s": 0.4, "take_ip_s": 0.1,
                            "verify_s": 0.3, "total_s": 0.9}, "servers": []}


def test_status_shows_failovers_time_in_phase_version_and_the_last_failover():
    text = render_status(STATUS)
    assert "phase normal for 30 s" in text and "failovers 1" in text and "version 0.1.0" in text
    assert "master -> standby: detection 0.2 s, fence 0.1 s, promote 0.4 s, IP moved 0.1 s" in text


@pytest.mark.parametrize("change,code,words", [
    ({}, CHECK_OK, "ARBITER OK - phase normal, primary standby | failovers=1"),
    ({"alarm": {"severity": "CRITICAL", "acked": True}}, CHECK_CRITICAL, "alarm CRITICAL (alarm acknowledged)"),
    ({"alarm": {"severity": "WARNING", "acked": False}}, CHECK_WARNING, "alarm WARNING"),
    ({"phase": "halted"}, CHECK_CRITICAL, "halted"),
    ({"phase": "promoting"}, CHECK_WARNING, "promoting under way"),
    ({"maintenance": True}, CHECK_WARNING, "observe only"),
    ({"primary": None}, CHECK_CRITICAL, "no primary"),
])
def test_check_uses_monitoring_plugin_codes(change, code, words):
    got, line = check({**STATUS, **change})
    assert got == code and words in line
