"""Continuity scenarios, all with the billing load on real PostgreSQL: the synchronous standby
lost (policy.sync_loss = degrade and = block), the master dying inside the degraded window,
a welded fence relay (level 2 through the UPS), an isolated primary fencing itself
(policy.fencing = none), and an old master whose data pg_rewind cannot bring back (rebuild).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from hil.report import Report
from hil.rig import Rig, RigOptions
from hil.scenarios import (Scenario, _events, _failover_fault, _finish_billing, _finish_common, _ready_under_load,
                           _wait_primary, _WritableWatch)

GRACE = 1.0  # policy.sync_loss_grace in these scenarios


def _server(st: dict, name: str) -> dict:
    return next(s for s in st["servers"] if s["name"] == name)


def _wait_event(rig: Rig, event: str, timeout: float) -> float:
    """The moment an event first shows in the appliance's journal."""
    rig.wait_for(lambda st: event in _events(rig), timeout, f"event {event}", step=0.05)
    return time.monotonic()


def sync_standby_lost(rig: Rig, report: Report) -> None:
    """degrade: the billing load stalls for the grace at most, then runs on one copy; nothing lost."""
    t0 = _ready_under_load(rig)
    rig.cut_power("standby")
    reduced = _wait_event(rig, "durability-reduced", 15.0)
    report.details["durability_reduced_after_s"] = round(reduced - t0, 3)
    time.sleep(2.0)
    st = rig.status()
    report.check("master still primary, no failover", st["primary"] == "master" and st["phase"] == "normal")
    _finish_billing(rig, report)
    gap = report.details.get("billing_longest_gap_s")
    report.details["grace_s"] = GRACE
    report.check(f"billing's longest gap <= grace + 1.0 s ({gap} s)", gap is not None and gap <= GRACE + 1.0)
    _finish_common(rig, report, t0, False, measure_outage=True)


def sync_standby_lost_block(rig: Rig, report: Report) -> None:
    """block: the commits wait while the standby is away and the critical alert arrives; once
    it is back they go on, and nothing is lost."""
    t0 = _ready_under_load(rig)
    rig.cut_power("standby")
    blocked = _wait_event(rig, "commits-blocked", 15.0)
    report.details["commits_blocked_after_s"] = round(blocked - t0, 3)
    acked = _ledger_lines(rig)
    time.sleep(3.0)
    report.check("no commit acknowledged while the synchronous standby is away", _ledger_lines(rig) == acked)
    report.check("alert commits-blocked (critical) received", "commits-blocked" in rig.alerts())
    rig.restore_power("standby")
    _wait_event(rig, "durability-restored", 30.0)
    time.sleep(1.0)
    report.check("commits go on once it is back", _ledger_lines(rig) > acked)
    st = rig.status()
    report.check("master still primary, no failover", st["primary"] == "master" and st["phase"] == "normal")
    _finish_billing(rig, report)
    _finish_common(rig, report, t0, False, measure_outage=True)


def _ledger_lines(rig: Rig) -> int:
    path = rig.workdir / "ledger.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def sync_lost_then_master_dies(rig: Rig, report: Report) -> None:
    """Degraded, the standby boots again but cannot replicate yet (it still reads itself
    synchronous), and the master loses power: no automatic failover; nothing lost."""
    t0 = _ready_under_load(rig)
    rig.cut_power("standby")
    _wait_event(rig, "durability-reduced", 15.0)
    rig.site.partition("standby", "master")  # back, but its WAL receiver cannot reach the master
    rig.restore_power("standby")
    rig.wait_for(lambda st: _server(st, "standby")["alive"] and _server(st, "standby")["role"] == "standby",
                 30.0, "standby answering again")
    rig.cut_power("master")
    time.sleep(4.0)
    st, events = rig.status(), _events(rig)
    report.check("no automatic failover", "failover-started" not in events and st["primary"] == "master")
    report.check("alert operator-needed", "operator-needed" in events)
    report.details["why"] = st.get("reason", "")[:300]
    rig.site.heal("standby", "master")
    rig.restore_power("master")  # the operator's next step; the master's disk has every acknowledged commit
    rig.wait_for(lambda s: _server(s, "master")["alive"] and _server(s, "master")["role"] == "primary",
                 60.0, "master back")
    _finish_billing(rig, report)
    _finish_common(rig, report, t0, False, service_kept=False)


def _outlet_after_relay(rig: Rig, report: Report) -> None:
    """relay-stuck: the relay opened, the power stayed, the UPS outlet cut it; fence-done says level 2."""
    relay, outlet = rig.first("relay-cut", "master"), rig.first("ups-outlet-off", "master")
    report.check("UPS outlet cut after the relay failed", relay is not None and outlet is not None and outlet > relay)
    if relay is not None and outlet is not None:
        report.details["relay_to_outlet_s"] = round(outlet - relay, 3)
    done = [r for r in rig.journal() if r.get("event") == "fence-done"]
    report.check("fence-done names level 2", bool(done) and "level 2" in str(done[-1].get("text", "")))
    report.check("alert fence-escalated", "fence-escalated" in _events(rig))


def isolated_primary(rig: Rig, report: Report) -> None:
    """policy.fencing = none: the master loses the appliance (both links) and the standby, the
    clients still reach it. It must stop its database before the standby is promoted."""
    t0 = _ready_under_load(rig)
    stopped: list[float] = []
    watcher = threading.Thread(target=_watch_stop, args=(rig, "master", stopped), daemon=True)
    watcher.start()
    writable = _WritableWatch(rig, "standby")
    rig.site.pull_serial("master")
    rig.site.partition("arbiter", "master")
    rig.site.partition("standby", "master")
    _wait_primary(rig, "standby", timeout=30.0)
    promoted = writable.stop()
    watcher.join(5.0)
    report.check("the isolated master stopped its own database", bool(stopped))
    report.check("SELF-FENCING logged with its reason", "SELF-FENCING: no frame from the appliance" in
                 rig.agent_log("master"))
    if stopped and promoted:
        report.details["self_fenced_after_s"] = round(stopped[0] - t0, 3)
        report.details["promoted_after_s"] = round(promoted - t0, 3)
        report.details["self_fence_margin_s"] = round(promoted - stopped[0], 3)
        report.check("self-fenced before the standby accepted writes", stopped[0] < promoted)
    time.sleep(1.0)
    _finish_billing(rig, report)
    _finish_common(rig, report, t0, True)
    report.check("one failover", report.failovers == 1)


def _watch_stop(rig: Rig, server: str, out: list[float], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rig.pg.pid(server) is None:  # type: ignore[union-attr]
            out.append(time.monotonic())
            return
        time.sleep(0.01)


def rebuild(rig: Rig, report: Report) -> None:
    """After a failover the old master's WAL is gone (pg_rewind has nothing to work from); when
    its power is restored it is rebuilt with pg_basebackup and named synchronous again."""
    t0 = _ready_under_load(rig)
    rig.cut_power("master")
    _wait_primary(rig, "standby", timeout=30.0)
    for wal in Path(rig.pg.data("master"), "pg_wal").glob("0*"):  # type: ignore[union-attr]
        wal.unlink()
    ordered = time.monotonic()
    report.check("power-on accepted", rig.command({"cmd": "power-on", "server": "master"}).get("ok"))
    done = _wait_event(rig, "rebuild-done", 120.0)
    report.details["rebuild_s"] = round(done - ordered, 2)
    st = rig.wait_for(lambda s: _server(s, "master")["role"] == "standby" and _server(s, "master")["alive"]
                      and _server(s, "standby")["repl"]["in_sync"] is True, 60.0, "master rebuilt and synchronous")
    report.details["rebuilt_and_synchronous_s"] = round(time.monotonic() - ordered, 2)
    events = _events(rig)
    report.check("rejoin failed, rebuild started automatically", "rebuild-started" in events)
    report.check("rebuilt master is a synchronous standby", _server(st, "master")["role"] == "standby")
    report.check("pg_basebackup progress in the agent's log", "pg_basebackup: " in rig.agent_log("master"))
    _finish_billing(rig, report)
    _finish_common(rig, report, t0, True)
    report.check("one failover", report.failovers == 1)


_DB = {"database": True}
CONTINUITY = (
    Scenario("sync-standby-lost", "the synchronous standby loses power, policy.sync_loss = degrade: after the grace "
             "the master stops waiting for it; billing stalls at most grace + 1 s; nothing lost",
             sync_standby_lost,
             RigOptions(**_DB, arbiter={"policy": {"sync_loss": "degrade", "sync_loss_grace": GRACE}})),
    Scenario("sync-standby-lost-block", "the synchronous standby loses power, policy.sync_loss = block: commits "
             "wait and commits-blocked (critical) goes out; they go on once it is back; nothing lost",
             sync_standby_lost_block, RigOptions(**_DB, arbiter={"policy": {"sync_loss_grace": GRACE}})),
    Scenario("sync-lost-then-master-dies", "degraded after losing the synchronous standby, which comes back unable to "
             "replicate; the master loses power: no automatic failover, operator-needed, nothing lost",
             sync_lost_then_master_dies,
             RigOptions(**_DB, arbiter={"policy": {"sync_loss": "degrade", "sync_loss_grace": GRACE}})),
    Scenario("relay-stuck", "the master crashes and its relay's contacts are welded (power sense stays high): "
             "level 2 cuts its UPS outlet through upsd, one failover, nothing lost",
             _failover_fault(lambda r: r.site.kill_all("master"), _outlet_after_relay),
             RigOptions(**_DB, fence_level2=True, stuck_relays=("master",)), expect_failover=True),
    Scenario("isolated-primary", "policy.fencing = none: the master is cut off from the appliance (both links) "
             "and the standby; it stops its own database before the standby is promoted; nothing lost",
             isolated_primary,
             RigOptions(**_DB, arbiter={"policy": {"fencing": "none"}, "timing": {"self_fence_wait": 5.0}},
                        agent={"isolation_timeout": 1.5, "self_fence_timeout": 2.0}), expect_failover=True),
    Scenario("rebuild", "the old master's WAL is lost so pg_rewind cannot help: on power-on it is rebuilt with "
             "pg_basebackup (policy.auto_rebuild) and named synchronous again; time to rebuild reported",
             rebuild, RigOptions(**_DB, arbiter={"policy": {"auto_rebuild": True}}), expect_failover=True),
)
