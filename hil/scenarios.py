"""The rig's fault scenarios. Each builds a site, waits until it is calm, injects one fault,
watches what the appliance does, and returns a Report whose checks say what must hold.

Scenario names are those of DESIGN.md; ``arbiter-hil list`` prints them with one line each.
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from firmware.appliance import SOURCE_RATE_PER_POLL
from firmware.config import read_key, sections as config_sections
from firmware.errors import ArbiterError, ProtocolError
from firmware.mib import notification_name
from firmware.protocol import Frame, Kind, Reply, derive_key, encode, peek_sender
from hil.report import Report
from hil.rig import AGENT_PORT, Rig, RigOptions
from hil.site import DEFAULT_PREFIX
from host_tools.agent import REFUSED_LOG_EVERY_S


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    run: Callable[[Rig, Report], None]
    options: RigOptions = RigOptions()
    expect_failover: bool = False


def _settle(rig: Rig, seconds: float = 1.0) -> None:
    time.sleep(seconds)


def _wait_primary(rig: Rig, name: str, timeout: float = 20.0) -> dict:
    return rig.wait_for(lambda st: st.get("primary") == name and st.get("phase") == "normal",
                        timeout, f"{name} primary")


def _events(rig: Rig) -> list[str]:
    return [r.get("event", "") for r in rig.journal()]


def _finish_common(rig: Rig, report: Report, t0: float, expect_failover: bool,
                   service_kept: bool = True, measure_outage: bool | None = None,
                   rogue_vip: bool = False) -> None:
    """Fill the keys every scenario reports, and the checks every scenario shares.
    ``rogue_vip``: the fault itself adds the address on a second host, so two MACs do answer
    for a while (reported as split_brain); the scenario checks how soon that ends."""
    probe = rig.stop_probe()
    events = _events(rig)
    report.failovers = events.count("failover-completed")
    report.false_failovers = 0 if expect_failover else events.count("failover-started")
    report.split_brain = bool(probe.get("split_brain"))
    report.alerts = sorted(set(rig.alerts()))
    outages = [o for o in probe.get("outages", []) if o["end"] >= t0]
    measure = expect_failover if measure_outage is None else measure_outage
    report.outage_s = max((o["duration"] for o in outages), default=0.0) if measure else None
    report.details["probe"] = {k: probe.get(k) for k in ("sent", "answered", "longest_outage", "hosts")}
    report.details["journal"] = events
    if not rogue_vip:
        report.check("no split brain", not report.split_brain)
    report.details["arp_macs"] = probe.get("arp_macs")
    report.check("no false failover", report.false_failovers == 0)
    if not measure and service_kept:
        report.check("service never interrupted > 1 s",
                     max((o["duration"] for o in outages), default=0.0) < 1.0)


def _detection(rig: Rig, report: Report, t0: float, server: str = "master") -> None:
    cut = rig.first("relay-cut", server, after=t0)
    report.detection_s = None if cut is None else round(cut - t0, 3)
    report.check("fenced", cut is not None)


# ---------------------------------------------------------------------- the scenarios


class WritableWatch:
    """Looks every 5 ms, on the server's own socket, for the moment its database leaves
    recovery: from then on it accepts writes."""

    def __init__(self, rig: Rig, server: str) -> None:
        self.dsn = rig.pg.dsn(server)  # type: ignore[union-attr]
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import psycopg2
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self._stop.wait(0.005):
                    cur.execute("SELECT pg_is_in_recovery()")
                    if not cur.fetchone()[0]:
                        self.at = time.monotonic()
                        return
        finally:
            conn.close()

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join(5.0)
        return self.at


def _failover_fault(inject: Callable[[Rig], None], after: Callable[[Rig, Report], None] | None = None
                    ) -> Callable[[Rig, Report], None]:
    """A fault that must end in exactly one failover to the standby, the master fenced; where
    a database runs, also the time from the fence to the standby accepting writes, and a
    second, asynchronous standby (where the rig has one) must never be promoted."""
    def run(rig: Rig, report: Report) -> None:
        rig.wait_ready()
        if rig.opts.database:
            rig.start_billing()
        _settle(rig, 2.0 if rig.opts.database else 1.0)
        writable = WritableWatch(rig, "standby") if rig.opts.database else None
        t0 = time.monotonic()
        inject(rig)
        st = _wait_primary(rig, "standby")
        _detection(rig, report, t0)
        report.check("master fenced", next(s for s in st["servers"] if s["name"] == "master")["fenced"])
        cut, promoted = rig.first("relay-cut", "master", after=t0), writable and writable.stop()
        if cut is not None and promoted:
            report.details["fence_to_writable_s"] = round(promoted - cut, 3)
            report.check("promoted only after the fence", promoted > cut)
        if "standby2" in rig.servers:
            report.check("the asynchronous standby2 never promoted", " promote: " not in rig.agent_log("standby2"))
        if after is not None:
            after(rig, report)
        _settle(rig, 2.0 if rig.opts.database else 1.0)
        report.details["last_failover"] = rig.status().get("last_failover")  # where the time went, step by step
        _finish_billing(rig, report)
        _finish_common(rig, report, t0, True)
        report.check("one failover", report.failovers == 1)
    return run


def _thaw_stays_fenced(rig: Rig, report: Report) -> None:
    rig.site.resume("master")  # whatever survived the fence wakes up: it must stay out
    time.sleep(2.0)
    st = rig.status()
    master = next(s for s in st["servers"] if s["name"] == "master")
    report.check("master stays fenced after SIGCONT", master["fenced"] and st["primary"] == "standby")


def short_hang(rig: Rig, report: Report) -> None:
    rig.wait_ready()
    _settle(rig)
    t0 = time.monotonic()
    dead = float(rig.arbiter_config().get("timing", {}).get("dead_time", 0.2))
    rig.site.hang("master")
    time.sleep(dead / 2)
    rig.site.resume("master")
    time.sleep(3.0)
    _finish_common(rig, report, t0, False)
    report.check("master still primary", rig.status()["primary"] == "master")


def _no_failover_fault(inject: Callable[[Rig], None], heal: Callable[[Rig], None], hold_s: float,
                       expect_alert: str, service_kept: bool = True) -> Callable[[Rig, Report], None]:
    """A fault that must raise at most an alert. ``service_kept`` False: the clients lose the
    master too (its LAN cable is out), which is still no reason to fail over (rule 1)."""
    def run(rig: Rig, report: Report) -> None:
        rig.wait_ready()
        _settle(rig)
        t0 = time.monotonic()
        inject(rig)
        time.sleep(hold_s)
        st = rig.status()
        report.check("master still primary", st["primary"] == "master" and st["phase"] == "normal")
        heal(rig)
        time.sleep(2.0)
        _finish_common(rig, report, t0, False, service_kept)
        if expect_alert:
            report.check(f"alert {expect_alert}", expect_alert in _events(rig))
    return run


def _partition(rig: Rig) -> None:
    rig.site.partition("arbiter", "master")
    rig.site.pull_serial("master")


def _heal_partition(rig: Rig) -> None:
    rig.site.heal("arbiter", "master")
    rig.site.plug_serial("master")


def noise(rig: Rig, seconds: float = 8.0, server: str = "master") -> None:
    """Bursts of random bytes into both directions of a server's serial cable."""
    rnd = random.Random(7)
    ends = [rig.site.serial_path(server, side) for side in ("arbiter", "server")]
    fds = [os.open(str(p), os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK) for p in ends]
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for fd in fds:
                try:
                    os.write(fd, rnd.randbytes(rnd.randint(1, 24)))
                except BlockingIOError:
                    pass
            time.sleep(0.05)
    finally:
        for fd in fds:
            os.close(fd)


def serial_noise(rig: Rig, report: Report) -> None:
    rig.wait_ready()
    _settle(rig)
    t0 = time.monotonic()
    noise(rig)
    st = rig.status()
    report.details["frames_dropped"] = st.get("frames_dropped")
    report.check("noise counted and dropped", sum(st.get("frames_dropped", {}).values()) > 0)
    report.check("master still primary", st["primary"] == "master")
    time.sleep(1.0)
    master = next(s for s in rig.status()["servers"] if s["name"] == "master")
    report.check("valid frames read again after the noise", master["links"]["serial"]["state"] == "up")
    _finish_common(rig, report, t0, False)


def packet_loss(rig: Rig, report: Report) -> None:
    seconds = float(os.environ.get("ARBITER_HIL_LOSS_SECONDS", "20"))
    _no_failover_fault(lambda r: [r.site.loss(h, 5) for h in r.servers + ["arbiter"]],
                       lambda r: r.site.clear_faults(), seconds, "")(rig, report)
    report.details["loss_seconds"] = seconds


def standby_down(rig: Rig, report: Report) -> None:
    rig.wait_ready()
    _settle(rig)
    t0 = time.monotonic()
    rig.cut_power("standby")
    time.sleep(2.0)
    st = rig.status()
    report.check("master still primary", st["primary"] == "master")
    report.check("standby not fenced", not next(s for s in st["servers"] if s["name"] == "standby")["fenced"])
    report.check("alert standby-down", "standby-down" in _events(rig))
    rig.restore_power("standby")
    rig.wait_for(lambda st: _server(st, "standby")["alive"] and "standby-available" in _events(rig), 20.0,
                 "standby back and standby-available")
    _finish_common(rig, report, t0, False)
    report.check("alert server-down", "server-down" in _events(rig))


def old_master_returns(rig: Rig, report: Report) -> None:
    """fence.mode = cycle: the fenced master is powered off, then on again, and boots."""
    t0 = power_loss_part(rig, report)
    rig.wait_for(lambda st: next(s for s in st["servers"] if s["name"] == "master")["alive"], 20.0,
                 "old master back")
    time.sleep(3.0)
    st = rig.status()
    report.check("standby stays primary", st["primary"] == "standby" and st["phase"] == "normal")
    report.check("master kept out", next(s for s in st["servers"] if s["name"] == "master")["fenced"])
    report.check("alert old-primary-returned", "old-primary-returned" in _events(rig))
    _finish_common(rig, report, t0, True)
    report.check("one failover, no failback", report.failovers == 1)


def power_loss_part(rig: Rig, report: Report) -> float:
    rig.wait_ready()
    _settle(rig)
    t0 = time.monotonic()
    rig.cut_power("master")
    _wait_primary(rig, "standby")
    _detection(rig, report, t0)
    return t0


def arbiter_restart(rig: Rig, report: Report) -> None:
    rig.wait_ready()
    _settle(rig)
    t0 = time.monotonic()
    rig.cut_power("master")
    rig.wait_for(lambda st: st.get("phase") not in ("normal", "starting"), 5.0, "failover begins", step=0.005)
    rig.restart_arbiter(kill=True)
    _wait_primary(rig, "standby", timeout=30.0)
    _detection(rig, report, t0)
    _settle(rig, 2.0)
    _finish_common(rig, report, t0, True)
    # a kill after the agent promoted but before the result was saved makes the resumed run
    # promote again: idempotent on the server, so one or two promote commands are both right
    promotes = rig.agent_log("standby").count(" promote: ok")
    report.details["promotes"] = promotes
    report.check("one failover, only the standby promoted", report.failovers == 1 and 1 <= promotes <= 2
                 and " promote: " not in rig.agent_log("master"))
    report.check("alert failover-started", "failover-started" in _events(rig))


def ups_on_battery(rig: Rig, report: Report) -> None:
    rig.wait_ready()
    _settle(rig)
    t0 = time.monotonic()
    rig.nut.set("master-ups", status="OB DISCHRG", charge=80, runtime=1200)
    time.sleep(2.0)
    rig.nut.set("master-ups", status="OL CHRG", charge=81, runtime=1300)
    time.sleep(2.0)
    events = _events(rig)
    report.check("alert ups-on-battery", "ups-on-battery" in events)
    report.check("alert ups-power-restored", "ups-power-restored" in events)
    report.check("master still primary", rig.status()["primary"] == "master")
    _finish_common(rig, report, t0, False)


def _ready_under_load(rig: Rig) -> float:
    """The site calm, the billing load running where a database runs; the fault's start time."""
    rig.wait_ready()
    if rig.opts.database:
        rig.start_billing()
    _settle(rig, 2.0)
    return time.monotonic()


def ups_drain(rig: Rig, report: Report) -> None:
    """The master's UPS drains under load: a planned switchover before its power drops."""
    t0 = _ready_under_load(rig)
    rig.nut.set("master-ups", status="OB DISCHRG", charge=60, runtime=900)
    time.sleep(2.0)
    rig.nut.set("master-ups", status="OB DISCHRG LB", charge=9, runtime=120)
    st = _wait_primary(rig, "standby", timeout=30.0)
    switched = time.monotonic()
    report.check("standby primary before the master's power drops", st["primary"] == "standby")
    time.sleep(1.0)
    rig.cut_power("master")  # the batteries are flat
    time.sleep(2.0)
    report.check("no failover after the switchover", rig.status()["primary"] == "standby")
    events = _events(rig)
    for event in ("ups-on-battery", "ups-low-battery", "switchover-started", "switchover-completed"):
        report.check(f"alert {event}", event in events)
    report.details["switchover_s"] = round(switched - t0, 2)
    _finish_billing(rig, report)
    _finish_common(rig, report, t0, False, measure_outage=True)


def _finish_billing(rig: Rig, report: Report) -> None:
    if not rig.opts.database:
        return
    acked, lost, gap = rig.stop_billing()
    report.acked_tx, report.lost_tx = acked, lost
    report.details["billing_longest_gap_s"] = gap
    report.check("acknowledged transactions written", acked > 0)
    report.check("no acknowledged transaction lost", lost == 0)


def switchover(rig: Rig, report: Report) -> None:
    """An operator's planned switchover: demote, wait for sync, promote, move the IP."""
    t0 = _ready_under_load(rig)
    answer = rig.command({"cmd": "switchover"})
    report.check("switchover accepted", answer.get("ok"))
    st = _wait_primary(rig, "standby", timeout=30.0)
    master = next(s for s in st["servers"] if s["name"] == "master")
    report.check("old master is a standby, not fenced", not master["fenced"])
    _settle(rig, 2.0)
    report.check("old master reports the standby role",
                 next(s for s in rig.status()["servers"] if s["name"] == "master")["role"] == "standby")
    events = _events(rig)
    report.check("alert switchover-completed", "switchover-completed" in events)
    _finish_billing(rig, report)
    _finish_common(rig, report, t0, False, measure_outage=True)


def reinstate(rig: Rig, report: Report) -> None:
    """After a failover an operator restores the old master's power: it rejoins as a standby."""
    if rig.opts.database:
        rig.wait_ready()
        rig.start_billing()
    t0 = power_loss_part(rig, report)
    answer = rig.command({"cmd": "power-on", "server": "master"})
    report.check("power-on accepted", answer.get("ok"))
    st = rig.wait_for(lambda st: next(s for s in st["servers"] if s["name"] == "master")["role"] == "standby"
                      and next(s for s in st["servers"] if s["name"] == "master")["alive"], 30.0,
                      "old master back as a standby")
    master = next(s for s in st["servers"] if s["name"] == "master")
    report.check("old master rejoined as a standby", master["role"] == "standby" and not master["fenced"])
    report.check("standby stays primary", st["primary"] == "standby")
    if rig.opts.database:
        _synchronous_again(rig, report)
    _finish_billing(rig, report)
    _finish_common(rig, report, t0, True)
    report.check("one failover, no failback", report.failovers == 1)


def _forced_failover(rig: Rig, report: Report, t0: float, target: str) -> None:
    """An operator forces the failover the appliance would not make: accepted, the master
    fenced before the promotion, one failover in all. Detection is timed from the order."""
    ordered = time.monotonic()
    answer = rig.command({"cmd": "failover", "server": target, "force": True})
    report.check("forced failover accepted", answer.get("ok"))
    st = _wait_primary(rig, target)
    _detection(rig, report, ordered)
    report.check("master fenced before the forced promotion",
                 next(s for s in st["servers"] if s["name"] == "master")["fenced"])
    _finish_common(rig, report, t0, True)
    report.check("one failover, by the operator", report.failovers == 1)


def lagging_standby(rig: Rig, report: Report) -> None:
    """The in-sync standby is down and the other one lags: no automatic failover; an
    operator forces one."""
    rig.wait_ready()
    _settle(rig)
    t0 = time.monotonic()
    rig.cut_power("standby")
    time.sleep(1.0)
    rig.cut_power("master")
    time.sleep(3.0)
    st = rig.status()
    events = _events(rig)
    report.check("no automatic failover onto the lagging standby", st["primary"] == "master" and
                 "failover-started" not in events)
    report.check("alert standby-lagging", "standby-lagging" in events)
    report.check("alert operator-needed", "operator-needed" in events)
    _forced_failover(rig, report, t0, "standby2")


# ---------------------------------------------------------------------- protocol attacks (hil.rogue)


def _head(item: dict) -> tuple[int, str, str] | None:
    """(kind, sender, receiver) of a captured datagram if it is a version 2 frame."""
    data = bytes.fromhex(item["data"])
    try:
        sender = peek_sender(data)
    except ProtocolError:
        return None
    at = 5 + len(sender)
    return data[3], sender, data[at + 1:at + 1 + data[at]].decode("ascii", "replace")


def _capture_switchover(rig: Rig, report: Report) -> list[dict]:
    """The heartbeat traffic on the appliance's port, recorded during an operator's switchover
    (so it holds commands: demote, promote, IP moves); the standby is primary afterwards."""
    sniffer = rig.sniff("arbiter")
    _settle(rig, 0.5)
    report.check("switchover accepted", bool(rig.command({"cmd": "switchover"}).get("ok")))
    _wait_primary(rig, "standby", timeout=30.0)
    _settle(rig, 1.0)
    captured = [c for c in rig.captured(sniffer) if _head(c) is not None]
    report.details["frames_captured"] = len(captured)
    report.check("commands captured", any(_head(c)[0] == Kind.COMMAND for c in captured))  # type: ignore[index]
    return captured


def _commands_run(rig: Rig) -> dict[str, int]:
    return {s: rig.agent_log(s).count("command arbiter-") for s in rig.servers}


def _dropped(rig: Rig) -> dict[str, int]:
    return dict(rig.status().get("frames_dropped") or {})


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] > before.get(k, 0)}


REFUSED_LINE = "frames refused since start: "


def _agent_refusals(rig: Rig) -> dict[str, dict[str, int]]:
    """Each running agent's latest count of refused frames since its start, from its log (it
    writes one every REFUSED_LOG_EVERY_S while the counts change)."""
    out: dict[str, dict[str, int]] = {}
    for server in rig.servers:
        lines = [line for line in rig.agent_run_log(server).splitlines() if REFUSED_LINE in line]
        counts = lines[-1].split(REFUSED_LINE, 1)[1].split(", ") if lines else []
        out[server] = {reason: int(n) for reason, n in (c.rsplit(" ", 1) for c in counts)}
    return out


def _nothing_acted_on(rig: Rig, report: Report, runs_before: dict[str, int], answered: int) -> None:
    st = rig.status()
    report.check("no agent answered a rogue frame", answered == 0)
    report.check("no command run again", _commands_run(rig) == runs_before)
    report.check("standby still primary, nobody fenced", st["primary"] == "standby" and st["phase"] == "normal"
                 and not any(s["fenced"] for s in st["servers"]))
    report.check("every server alive", all(s["alive"] for s in st["servers"]))


def rogue_host(rig: Rig, report: Report) -> None:
    """Replays captured frames, forwards each command to the wrong server, forges senders
    (without a key, and with the master's key as a compromised master would)."""
    rig.wait_ready()
    captured = _capture_switchover(rig, report)
    t0 = time.monotonic()
    ip = {h: rig.site.ip(h) for h in [*rig.servers, "arbiter"]}
    to_appliance = [c for c in captured if c["dst"][0] == ip["arbiter"]]
    to_agents = [c for c in captured if c["src"][0] == ip["arbiter"]]
    commands = [c for c in to_agents if _head(c)[0] == Kind.COMMAND]  # type: ignore[index]
    appliance = [ip["arbiter"], to_appliance[0]["dst"][1]] if to_appliance else None
    report.check("the appliance's port seen", appliance is not None)
    keys = {s: derive_key(read_key(rig.key_file), s) for s in rig.servers}
    wrong = {ip[s]: ip[next(o for o in rig.servers if o != s)] for s in rig.servers}
    classes: dict[str, list[dict]] = {
        "replayed to the appliance": [{"src": c["src"], "dst": c["dst"], "data": c["data"]} for c in to_appliance[-150:]],
        "replayed to an agent": [{"src": None, "dst": c["dst"], "data": c["data"]} for c in to_agents[-150:]],
        "command sent to the wrong server": [{"src": None, "dst": [wrong[c["dst"][0]], AGENT_PORT], "data": c["data"]}
                                             for c in commands],
        "master's key as the standby": [
            {"src": [ip[src], AGENT_PORT], "dst": appliance,
             "data": encode(Frame(Kind.REPLY, "standby", "arbiter", 2**64 - 1, i, Reply(i, True, "primary").payload()),
                            keys["master"]).hex()} for i in range(1, 21) for src in ("master", "standby")],
        "master's key as the appliance": [
            {"src": None, "dst": [ip["standby"], AGENT_PORT],
             "data": encode(Frame(kind, "arbiter", "standby", 10**6, i, payload), keys["master"]).hex()}
            for i in range(1, 21) for kind, payload in ((Kind.POLL, {"n": i}),
                                                        (Kind.COMMAND, {"id": f"rogue-{i}", "op": "demote", "args": {}}))],
        "no key": [{"src": None, "dst": [ip[s], AGENT_PORT],
                    "data": encode(Frame(Kind.POLL, "arbiter", s, 10**6, i, {"n": i}), b"rogue-guess-" * 3).hex()}
                   for i in range(1, 21) for s in rig.servers],
    }
    runs_before, before = _commands_run(rig), _dropped(rig)
    sent = rig.rogue_send([item for items in classes.values() for item in items], listen=1.5)
    time.sleep(REFUSED_LOG_EVERY_S)
    dropped = _delta(before, _dropped(rig))
    refused = _agent_refusals(rig)
    to_appliance_sent = sum(len(v) for k, v in classes.items() if k in ("replayed to the appliance",
                                                                        "master's key as the standby"))
    report.details.update(rogue_sent={k: len(v) for k, v in classes.items()}, rogue=sent,
                          appliance_rejected=dropped, agents_refused=refused)
    report.check("every frame sent to an agent refused and counted",
                 sum(n for counts in refused.values() for n in counts.values()) >= sent["sent_own"])
    report.check("every frame sent to the appliance rejected and counted", sum(dropped.values()) >= to_appliance_sent)
    report.check("the forged senders refused before the MAC", dropped.get("wrong-sender", 0) >= 20)
    _nothing_acted_on(rig, report, runs_before, sent["answered"])
    _finish_common(rig, report, t0, False)


def lan_flood(rig: Rig, report: Report) -> None:
    """Well-formed frames with a wrong MAC flood the appliance's UDP port from the servers'
    own (forged) addresses and the rogue's; the serial links keep every server alive."""
    rig.wait_ready()
    sniffer = rig.sniff("arbiter")
    _settle(rig, 1.0)
    port = next(c["dst"][1] for c in rig.captured(sniffer) if c["dst"][0] == rig.site.ip("arbiter"))
    before = _dropped(rig)
    t0 = time.monotonic()
    seconds = float(os.environ.get("ARBITER_HIL_FLOOD_SECONDS", "10"))
    flood = rig.rogue_flood(f"{rig.site.ip('arbiter')}:{port}",
                            [f"{rig.site.ip(h)}:{AGENT_PORT}" for h in (*rig.servers, "client")], seconds)
    samples, bad = 0, []
    while flood.alive():
        st = rig.status()
        samples += 1
        for s in st["servers"]:
            if not s["alive"] or s["links"]["serial"]["state"] == "dead":
                bad.append((round(time.monotonic() - t0, 2), s["name"], s["alive"], s["links"]["serial"]["state"]))
        time.sleep(0.1)
    figures = rig.flood_figures(flood)
    _settle(rig, 2.0)
    dropped = _delta(before, _dropped(rig))
    budget = SOURCE_RATE_PER_POLL / float(rig.arbiter_config().get("timing", {}).get("interval", 0.04)) \
        * len(rig.servers)
    read = sum(dropped.values())
    report.details.update(flood=figures, appliance_rejected=dropped, appliance_read_per_s=round(read / seconds),
                          read_budget_per_s=budget, status_samples=samples, serial_or_alive_lost=bad[:20])
    report.check("the flood ran", figures.get("sent", 0) > 1000)
    report.check("the appliance read at most its budget of the flood; the kernel dropped the rest",
                 read <= budget * (seconds + 2.5) and read < figures.get("sent", 0))
    report.check("every server alive, no serial link dead, all along", samples > 0 and not bad)
    report.check("master still primary", rig.status()["primary"] == "master")
    _finish_common(rig, report, t0, False)


def agent_restart_replay(rig: Rig, report: Report) -> None:
    """The commands sent to the old master during a switchover (demote, release the IP) are
    captured, its agent restarts (it is a standby now: a restart is no failure), and the
    commands are played to it again, each twice: as soon as it listens (its first poll may or
    may not have come in: refused as from no fresh run, or as replays), and once it has been
    polled for a while. The restarted agent must refuse and count every one."""
    rig.wait_ready()
    captured = _capture_switchover(rig, report)
    master = rig.site.ip("master")
    commands = [c for c in captured if c["dst"][0] == master and _head(c)[0] == Kind.COMMAND]  # type: ignore[index]
    report.check("commands to the old master captured", bool(commands))
    runs_before = _commands_run(rig)
    rig.restart_agent("master")
    plan = [{"src": None, "dst": c["dst"], "data": c["data"]} for c in commands]
    early = rig.rogue_send(plan, listen=0.0)
    rig.wait_for(lambda st: all(s["alive"] and s["links"]["lan"]["state"] == "up" for s in st["servers"]), 15.0,
                 "agent back")
    _settle(rig, 0.5)
    sent = rig.rogue_send(plan, listen=1.5)
    sent["answered"] += early["answered"]
    sent["sent_own"] += early["sent_own"]
    deadline = time.monotonic() + 2 * REFUSED_LOG_EVERY_S
    while sum(_agent_refusals(rig)["master"].values()) < sent["sent_own"] and time.monotonic() < deadline:
        time.sleep(0.1)
    refused = _agent_refusals(rig)
    report.details.update(commands_replayed=len(commands), rogue=sent, agents_refused=refused)
    report.check("every replayed command refused and counted by the restarted agent",
                 sum(refused["master"].values()) >= sent["sent_own"] == 2 * len(commands))
    _nothing_acted_on(rig, report, runs_before, sent["answered"])


# ---------------------------------------------------------------------- watching the watcher



def _count(rig: Rig, event: str) -> int:
    return rig.alerts().count(event)


def _first_traps(rig: Rig, event: str, servers: list[str], timeout: float, skip: int) -> dict[str, float]:
    """Monotonic time each server's ``event`` trap was first seen at snmptrapd, among the
    notifications after the first ``skip`` (those received before the fault do not count)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(seen) < len(servers):
        for n in rig.traps.received()[skip:]:  # type: ignore[union-attr]
            server = n["varbinds"].get("arbEventServer.0", "").strip('"')
            if n["event"] == event and server in servers:
                seen.setdefault(server, time.monotonic())
        time.sleep(0.05)
    return seen


def arbiter_down(rig: Rig, report: Report) -> None:
    """arbiterd frozen (SIGSTOP): every agent's unobserved alert reaches snmptrapd in time, the
    heartbeat traps stop, /health answers 503 or not at all; after SIGCONT all recovers, no failover."""
    from hil.monitor import read_changes, shown_between
    from hil.rig import HEARTBEAT_S, UNOBSERVED_AFTER_S
    rig.wait_ready()
    changes_file = rig.start_monitor(browser=False)
    _settle(rig, 3.0)
    report.check("heartbeat traps arrive while all is well", _count(rig, "arbHeartbeat") >= 2)
    before = len(rig.traps.received())  # type: ignore[union-attr]  # agents raise one at boot, before polls begin
    t0 = time.monotonic()
    rig.freeze_arbiter(True)
    time.sleep(HEARTBEAT_S / 2)  # a trap already on the wire may still land
    beats = _count(rig, "arbHeartbeat")
    seen = _first_traps(rig, "arbAgentUnobserved", rig.servers, UNOBSERVED_AFTER_S + 3.0, before)
    delays = {s: round(t - t0, 3) for s, t in seen.items()}
    report.details["unobserved_after_s"] = delays
    report.check(f"every agent's unobserved alert within {UNOBSERVED_AFTER_S:g} + 1 s",
                 len(delays) == len(rig.servers) and max(delays.values()) <= UNOBSERVED_AFTER_S + 1.0)
    time.sleep(max(0.0, t0 + UNOBSERVED_AFTER_S + 3.0 - time.monotonic()))
    report.check("heartbeat traps stop", _count(rig, "arbHeartbeat") == beats)
    thawed, at_thaw = time.monotonic(), len(rig.traps.received())  # type: ignore[union-attr]
    rig.freeze_arbiter(False)
    time.sleep(4.0)
    st = rig.status()
    changes = read_changes(changes_file)
    health = [c for c in changes if c["source"] == "health"]
    frozen_answers = shown_between(changes, "health", t0 + 3.0, thawed)  # a poll under way at t0 ends late
    report.details["health_while_frozen"] = sorted(map(str, frozen_answers))
    report.check("/health answers 503 or not at all while frozen",
                 bool(frozen_answers) and frozen_answers <= {503, None})
    report.check("/health 200 again after SIGCONT", bool(health) and health[-1]["value"] == 200)
    rig.stop_monitor()
    report.check("no failover after SIGCONT", st["primary"] == "master" and st["phase"] == "normal"
                 and st["failovers"] == 0)
    observed = _first_traps(rig, "arbAgentObserved", rig.servers, 3.0, at_thaw)
    report.check("every agent says it is watched again", len(observed) == len(rig.servers))
    report.check("heartbeat traps resume", _count(rig, "arbHeartbeat") > beats)
    _finish_common(rig, report, t0, False)


REPORTS = Path(__file__).resolve().parents[1] / "reports"
SHOWN_WITHIN_S = 2.0
PRIMARY_SHOWN_BY = ("page", "status", "metrics", "snmpwalk")
FAILOVERS_SHOWN_BY = (("metrics_failovers", 0, 1), ("snmp_failovers", 0, 1), ("page_failovers", "0", "1"))  # before, after


def _journal_mono(rig: Rig, match: Callable[[dict], bool]) -> float | None:
    """The appliance's monotonic stamp of the first journal record that matches (the machine's
    clock, the one the monitor stamps with too)."""
    return next((r["mono"] for r in rig.journal() if match(r)), None)


def _takeover_times(rig: Rig, target: str) -> tuple[float | None, float | None]:
    """(the appliance first names ``target`` primary: its promotion is done; the takeover is
    complete: the virtual IP moved and verified), as the journal has them."""
    named = _journal_mono(rig, lambda r: r.get("kind") == "phase" and r.get("primary") == target)
    _when(lambda: _journal_mono(rig, lambda r: r.get("kind") == "failover") is not None, 10.0, 0.1)
    return named, _journal_mono(rig, lambda r: r.get("kind") == "failover" and bool(r.get("completed")))


def _last_shown(changes: list[dict]) -> dict[str, object]:
    """What each of the monitor's sources showed last."""
    return {c["source"]: c["value"] for c in changes}


def monitoring(rig: Rig, report: Report) -> None:
    """A power-loss failover seen from a monitoring station on the client host: the status
    page in chromium, /status, /metrics and snmpwalk show the new primary within 2 s of the
    takeover's completion, /health stays or returns to 200 under the new primary, and
    failovers_total and arbFailovers count it."""
    from hil.monitor import first_shown, read_changes
    rig.wait_ready()
    changes_file = rig.monitor_changes  # the rig started the station, chromium and all, before the appliance

    def showing(value: str, after: float) -> dict[str, float | None]:
        changes = read_changes(changes_file)
        return {s: first_shown(changes, s, value, after) for s in PRIMARY_SHOWN_BY}

    shown_master = _when(lambda: None not in showing("master", 0.0).values(), 60.0, 0.2)
    report.check("every source shows the master first", shown_master is not None)
    rig.wait_ready()
    _settle(rig, 2.0)
    last = _last_shown(read_changes(changes_file))
    report.check("/health 200 and no failover counted before the fault", last.get("health") == 200 and all(
        last.get(source) == before for source, before, _ in FAILOVERS_SHOWN_BY))
    t0 = time.monotonic()
    rig.cut_power("master")
    _wait_primary(rig, "standby")
    _detection(rig, report, t0)
    named, done = _takeover_times(rig, "standby")
    report.check("the takeover's completion is in the journal", named is not None and done is not None)
    named, done = named or time.monotonic(), done or time.monotonic()
    report.details["takeover_done_after_fault_s"] = round(done - t0, 3)
    report.details["promoted_before_takeover_done_s"] = round(done - named, 3)
    _when(lambda: None not in showing("standby", t0).values(), SHOWN_WITHIN_S + 3.0, 0.1)
    time.sleep(1.0)  # the page has drawn the history of the failover for the screenshot
    rig.stop_monitor()
    changes = read_changes(changes_file)
    shown = {s: first_shown(changes, s, "standby", t0) for s in PRIMARY_SHOWN_BY}
    report.details["shown_after_takeover_s"] = {s: None if t is None else round(t - done, 3) for s, t in shown.items()}
    report.details["shown_after_promotion_s"] = {s: None if t is None else round(t - named, 3)
                                                 for s, t in shown.items()}
    for source, t in shown.items():
        report.check(f"{source} shows the new primary within {SHOWN_WITHIN_S:g} s of the takeover",
                     t is not None and t - done <= SHOWN_WITHIN_S)
    counted = {s: first_shown(changes, s, after, t0) for s, _, after in FAILOVERS_SHOWN_BY}
    report.details["failover_counted_after_takeover_s"] = {s: None if t is None else round(t - done, 3)
                                                           for s, t in counted.items()}
    for source, t in counted.items():
        report.check(f"{source} counts the failover within {SHOWN_WITHIN_S:g} s of the takeover",
                     t is not None and t - done <= SHOWN_WITHIN_S)
    health = [c for c in changes if c["source"] == "health" and c["t"] >= t0]
    report.details["health_after_fault"] = [[round(c["t"] - done, 3), c["value"]] for c in health]
    report.check("/health 200 under the new primary", _last_shown(changes).get("health") == 200)
    _settle(rig, 2.0)
    st = rig.status()
    report.check("still normal under the new primary, nothing halted", st["phase"] == "normal"
                 and st["primary"] == "standby")
    saved = rig.screenshot.exists() and rig.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.check("screenshot of the page saved", saved)
    if saved:
        REPORTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rig.screenshot, REPORTS / "status-page.png")
    _finish_common(rig, report, t0, True)


# ---------------------------------------------------------------------- service failures (issue 13)


def _setting(rig: Rig, section: str, key: str) -> float:
    """What the rig's appliance runs with: the scenario's override, else the shipped default."""
    cls = config_sections()[section]
    default = next(f.default for f in dataclasses.fields(cls) if f.name == key)
    return float(rig.arbiter_config().get(section, {}).get(key, default))


def _when(check: Callable[[], bool], timeout: float, step: float = 0.02) -> float | None:
    """The monotonic time ``check`` first held, or None if it did not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(step)
    return None


def _service_failover(inject: Callable[[Rig], object]) -> Callable[[Rig, Report], None]:
    """The master's host and agent live, its database does not serve: after
    policy.unhealthy_grace it is failed over like a dead one, fenced first.

    Target: outage <= policy.unhealthy_grace + 1.0 s, for two figures. ``outage_s`` is what the
    billing client saw (its longest gap between two acknowledged commits, its reconnections
    included), or the probe's outage if longer; ``service_outage_s`` runs from the fault to the
    first probe answered by the standby on the virtual IP, which it holds only once promoted.
    ``timeline_s`` says where the time went, in seconds after the fault."""
    def after(rig: Rig, report: Report) -> None:
        events = _events(rig)
        report.check("alert service-degraded before the failover",
                     "service-degraded" in events and "failover-started" in events
                     and events.index("service-degraded") < events.index("failover-started"))

    def run(rig: Rig, report: Report) -> None:
        grace = _setting(rig, "policy", "unhealthy_grace")
        injected: list[float] = []
        _failover_fault(lambda r: (injected.append(time.monotonic()), inject(r)), after)(rig, report)
        if not injected:
            return
        gap = report.details.get("billing_longest_gap_s")
        report.details["probe_outage_s"] = report.outage_s
        report.outage_s = max(report.outage_s or 0.0, gap or 0.0)
        timeline = _service_timeline(rig, report, injected[0])
        report.details["timeline_s"] = timeline
        service = timeline.get("standby answers on the virtual IP")
        report.details["service_outage_s"] = service
        report.details["unhealthy_grace_s"] = grace
        report.details["failover_text"] = next((r.get("text", "") for r in rig.journal()
                                                if r.get("event") == "failover-started"), None)
        target = grace + 1.0
        report.details["service_outage_target_s"] = target
        # a figure, not a check, as the other timings are: on a machine shared with other test
        # runs the promotion alone has taken 0.8 s, and the health checks' cadence stretches
        report.details["within_target"] = service is not None and service <= target and report.outage_s <= target
    return run


def _service_timeline(rig: Rig, report: Report, fault: float) -> dict[str, float | None]:
    """Seconds after the fault to each step of a service failover, on the machine's monotonic
    clock (the appliance's journal, the rig's relay watch, the standby's own socket, the
    client's probe and its billing load all read the same one)."""
    def alert(event: str) -> float | None:
        return next((r["mono"] for r in rig.journal() if r.get("event") == event and r.get("mono", 0) >= fault),
                    None)
    fenced = rig.first("relay-cut", "master", after=fault)
    to_writable = report.details.get("fence_to_writable_s")
    hosts = report.details["probe"]["hosts"] or []
    at = {"service-degraded raised": alert("service-degraded"),
          "failover started (grace over)": alert("failover-started"),
          "master fenced": fenced,
          "standby writable (promoted)": None if fenced is None or to_writable is None else fenced + to_writable,
          "standby answers on the virtual IP": next((h["from"] for h in hosts if h["host"] == "standby"), None),
          "billing: first commit after its longest gap": rig.billing_summary.get("longest_gap_end"),
          "failover completed (ARP verified)": alert("failover-completed")}
    return {k: None if t is None else round(t - fault, 3) for k, t in at.items()}


def db_flap(rig: Rig, report: Report) -> None:
    """The master's database stops answering new connections (its postmaster frozen) for
    half the grace, twice, with health back in between: degraded and restored alerts, no
    failover. Frozen rather than killed: a restart's length varies with the machine's load,
    and each spell must be half the grace, not whatever a restart takes."""
    t0 = _ready_under_load(rig)
    grace = _setting(rig, "policy", "unhealthy_grace")
    restore = _setting(rig, "policy", "health_restore")
    spells = []
    for _ in range(2):
        down = time.monotonic()
        pid = rig.pg.freeze("master")  # type: ignore[union-attr]
        time.sleep(grace / 2)
        rig.pg.thaw(pid)  # type: ignore[union-attr]
        spells.append(round(time.monotonic() - down, 3))
        time.sleep(restore + 1.5)
    report.details["down_s"] = spells
    st = rig.status()
    report.check("master still primary", st["primary"] == "master" and st["phase"] == "normal")
    events = _events(rig)
    report.details["service_alerts"] = [e for e in events if e.startswith("service-")]
    report.check("alerts service-degraded then service-restored, twice",
                 report.details["service_alerts"] == ["service-degraded", "service-restored"] * 2)
    _finish_billing(rig, report)
    _finish_common(rig, report, t0, False)


def _cut_clients(rig: Rig) -> None:
    """The master's client side is gone (a switch between it and the clients and gateway
    failed); serial and the appliance's LAN path are untouched."""
    for other in ("client", "gw"):
        rig.site.partition("master", other)


def ping_node_down(rig: Rig, report: Report) -> None:
    grace = _setting(rig, "policy", "reachability_grace")
    _no_failover_fault(lambda r: r.site.lan_pull("gw"), lambda r: r.site.lan_plug("gw"), 2 * grace + 1.0,
                       "network-down")(rig, report)
    report.check("alert network-up after the target is back", "network-up" in _events(rig))


def vip_rogue(rig: Rig, report: Report) -> None:
    """The virtual IP is added by hand on the standby: an alert and its release within two
    audit periods; no failover."""
    rig.wait_ready()
    _settle(rig)
    audit = _setting(rig, "vip", "audit_interval")
    t0 = time.monotonic()
    rig.site.add_address("standby", rig.site.vip)
    address = rig.site.vip.split("/")[0]
    released = _when(lambda: not any(a.startswith(address + "/") for a in rig.site.addresses("standby")),
                     10 * audit)
    alerted = _when(lambda: "vip-rogue" in _events(rig), 10 * audit)
    report.detection_s = None if alerted is None else round(alerted - t0, 3)
    report.details["released_s"] = None if released is None else round(released - t0, 3)
    report.check(f"alert vip-rogue within two audit periods ({2 * audit:g} s)",
                 alerted is not None and alerted - t0 <= 2 * audit)
    report.check(f"address released on the standby within two audit periods ({2 * audit:g} s)",
                 released is not None and released - t0 <= 2 * audit)
    time.sleep(2 * audit)
    st = rig.status()
    report.check("master still primary, holding the address", st["primary"] == "master"
                 and any(a.startswith(address + "/") for a in rig.site.addresses("master")))
    _finish_common(rig, report, t0, False, rogue_vip=True)
    multi = [r for r in report.details["arp_macs"] or [] if len(r["macs"]) > 1 and r["from"] >= t0]
    report.check("the standby's MAC gone from ARP answers",
                 bool(report.details["arp_macs"]) and len(report.details["arp_macs"][-1]["macs"]) == 1)
    report.details["two_macs_runs"] = len(multi)
    report.check("alert vip-restored", "vip-restored" in _events(rig))


def vip_lost(rig: Rig, report: Report) -> None:
    """The virtual IP is removed by hand on the master: the master's agent takes it again and
    announces it, with an alert. Target: outage <= two audit periods + 0.5 s."""
    rig.wait_ready()
    _settle(rig)
    audit = _setting(rig, "vip", "audit_interval")
    t0 = time.monotonic()
    rig.site.del_address("master", rig.site.vip)
    address = rig.site.vip.split("/")[0]
    back = _when(lambda: any(a.startswith(address + "/") for a in rig.site.addresses("master")), 10 * audit)
    report.detection_s = None if back is None else round(back - t0, 3)
    report.check("master holds the address again", back is not None)
    time.sleep(1.0)
    _finish_common(rig, report, t0, False, measure_outage=True)
    events = _events(rig)
    report.check("alerts vip-lost and vip-restored", "vip-lost" in events and "vip-restored" in events)
    report.check("master still primary", rig.status()["primary"] == "master")
    bound = 2 * audit + 0.5
    report.check(f"outage <= two audit periods + 0.5 s = {bound:g} s",
                 report.outage_s is not None and report.outage_s <= bound)


def never_promote(rig: Rig, report: Report) -> None:
    """The only standby has priority 0 and the master loses power: operator-needed, no
    automatic failover; an operator's forced failover works, fenced first."""
    rig.wait_ready()
    _settle(rig)
    t0 = time.monotonic()
    rig.cut_power("master")
    time.sleep(3.0)
    st = rig.status()
    events = _events(rig)
    report.check("no automatic failover onto the priority-0 standby",
                 st["primary"] == "master" and "failover-started" not in events)
    report.check("alert operator-needed", "operator-needed" in events)
    _forced_failover(rig, report, t0, "standby")


# ---------------------------------------------------------------------- continuity (losing the
# synchronous standby, welded relay, isolated primary, rebuild), all under the billing load


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
    it is back they go on, and nothing is lost. The standby stays away for less than the
    billing client's statement_timeout, which would end a waiting commit as not acknowledged."""
    t0 = _ready_under_load(rig)
    rig.cut_power("standby")
    blocked = _wait_event(rig, "commits-blocked", 15.0)
    report.details["commits_blocked_after_s"] = round(blocked - t0, 3)
    acked = _ledger_lines(rig)
    time.sleep(2.0)
    report.check("no commit acknowledged while the synchronous standby is away", _ledger_lines(rig) == acked)
    name = notification_name("commits-blocked")
    report.check(f"alert commits-blocked received as the trap {name}",
                 _when(lambda: name in rig.alerts(), 5.0) is not None)
    severity = next((n["varbinds"].get("arbEventSeverity.0", "") for n in rig.traps.received()  # type: ignore[union-attr]
                     if n["event"] == name), "")
    report.details["commits_blocked_trap_severity"] = severity
    report.check("the trap says critical (arbEventSeverity)", severity.startswith("critical"))
    back = time.monotonic()
    rig.restore_power("standby")
    restored = _wait_event(rig, "durability-restored", 30.0)
    report.details["standby_away_s"] = round(back - t0, 3)
    report.details["durability_restored_after_power_on_s"] = round(restored - back, 3)
    report.check("commits go on once it is back", _when(lambda: _ledger_lines(rig) > acked, 5.0) is not None)
    st = rig.status()
    report.check("master still primary, no failover", st["primary"] == "master" and st["phase"] == "normal")
    _finish_billing(rig, report)
    report.details["billing_stall_s"] = report.details.get("billing_longest_gap_s")
    _finish_common(rig, report, t0, False, measure_outage=True)


def _ledger_lines(rig: Rig) -> int:
    """Acknowledged commits so far (the load writes its ledger every 0.2 s)."""
    path = rig.workdir / "ledger.txt"
    return len(path.read_text().split()) if path.exists() else 0


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
    writable = WritableWatch(rig, "standby")
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
    """After a failover the old master's WAL is lost (its pg_wal emptied, as when the disk that
    held it is replaced): its boot cannot recover its database, and pg_rewind has nothing to work
    from. On power-on the rejoin fails and policy.auto_rebuild rebuilds it with pg_basebackup;
    then an operator's ``arbiterctl rebuild master`` copies it afresh once more. Each time it
    comes back as a standby that the new primary waits for (synchronous), under billing load."""
    t0 = _ready_under_load(rig)
    rig.cut_power("master")
    _wait_primary(rig, "standby", timeout=30.0)
    for segment in Path(rig.pg.data("master"), "pg_wal").glob("0*"):  # type: ignore[union-attr]
        segment.unlink()
    ordered = time.monotonic()
    report.check("power-on accepted", rig.command({"cmd": "power-on", "server": "master"}).get("ok"))
    report.details["auto"] = _rebuilt(rig, report, ordered, "rebuilt automatically after the failed rejoin")
    _synchronous_again(rig, report)
    started = report.details["rebuild_started"] = _journal_text(rig, "rebuild-started")
    report.check("rejoin failed, then the rebuild started by policy.auto_rebuild",
                 "rejoin failed" in started and "policy.auto_rebuild = true" in started)
    report.check("pg_rewind failed for its real reason (no checkpoint record left to recover from)",
                 "pg_rewind" in started and "could not locate a valid checkpoint record" in started)
    ordered = time.monotonic()  # at once: a second rebuild's alerts are not de-duplicated
    answer = rig.command({"cmd": "rebuild", "server": "master"})
    report.check("arbiterctl rebuild master accepted", answer.get("ok"))
    report.details["operator"] = _rebuilt(rig, report, ordered, "rebuilt again by the operator's order", skip=1)
    report.check("pg_basebackup progress lines in the agent's log", "pg_basebackup: " in rig.agent_log("master"))
    _finish_billing(rig, report)
    report.details["rebuild_s"] = [report.details[k]["rebuild_s"] for k in ("auto", "operator")]
    _finish_common(rig, report, t0, True)
    report.check("one failover", report.failovers == 1)


def _rebuilt(rig: Rig, report: Report, ordered: float, what: str, skip: int = 0) -> dict[str, float | None]:
    """Waits for a rebuild's end and for the rebuilt standby to be synchronous; its timings."""
    st = rig.wait_for(lambda st: _events(rig).count("rebuild-done") > skip or "rebuild-failed" in _events(rig)
                      or st.get("phase") == "halted", 180.0, "rebuild done", step=0.1)
    if st.get("phase") == "halted":  # nothing more will happen: say why at once
        raise RuntimeError(f"halted while waiting for the rebuild: {st.get('reason', '')[:300]}")
    report.check(f"{what}: rebuild-done", _events(rig).count("rebuild-done") > skip)
    text = _journal_text(rig, "rebuild-done", skip)
    took = re.search(r"rebuilt from standby in ([0-9.]+) s", text)
    done = time.monotonic()
    synced = rig.wait_for(lambda st: _server(st, "master")["role"] == "standby" and _server(st, "master")["alive"]
                          and _server(st, "standby")["repl"]["in_sync"] is True and _sync_state(rig) == "sync",
                          60.0, "master rebuilt and synchronous", step=0.1)
    report.check(f"{what}: the new primary waits for it (sync_state sync)",
                 _server(synced, "master")["role"] == "standby" and _sync_state(rig) == "sync")
    return {"rebuild_s": float(took.group(1)) if took else None, "done_after_order_s": round(done - ordered, 2),
            "synchronous_after_order_s": round(time.monotonic() - ordered, 2)}


def _synchronous_again(rig: Rig, report: Report) -> None:
    """The new primary ran alone after the failover (its promotion emptied
    synchronous_standby_names): durability-reduced; once the returned old master has caught up
    it is named synchronous, PostgreSQL says so, and durability-restored follows."""
    rig.wait_for(lambda st: _sync_state(rig) == "sync" and "durability-restored" in _events(rig), 30.0,
                 "old master synchronous, durability restored", step=0.1)
    after = _events(rig)[_events(rig).index("failover-completed"):]
    report.check("durability-reduced after the failover, then durability-restored with the old master synchronous",
                 "durability-reduced" in after and "durability-restored" in after
                 and after.index("durability-reduced") < after.index("durability-restored"))


def _journal_text(rig: Rig, event: str, skip: int = 0) -> str:
    texts = [str(r.get("text", "")) for r in rig.journal() if r.get("event") == event]
    return texts[skip] if len(texts) > skip else ""


def _sync_state(rig: Rig, standby: str = "master", primary: str = "standby") -> str:
    """How the primary treats the standby: PostgreSQL's own word (pg_stat_replication)."""
    rows = rig.pg.sql(primary, "SELECT sync_state FROM pg_stat_replication "  # type: ignore[union-attr]
                               f"WHERE application_name = '{standby}' AND state = 'streaming'")
    return str(rows[0][0]) if rows else ""


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("power-loss", "the master loses power under billing load (PostgreSQL, synchronous standby): "
             "fence, promote, move the IP, lose nothing; the second, asynchronous standby is never chosen",
             _failover_fault(lambda r: r.cut_power("master")), RigOptions(database=True, standbys=2),
             expect_failover=True),
    Scenario("crash", "every process on the master dies (a kernel panic), its link stays up",
             _failover_fault(lambda r: r.site.kill_all("master")), expect_failover=True),
    Scenario("hang", "the master freezes (SIGSTOP) past dead time, then thaws: it stays fenced",
             _failover_fault(lambda r: r.site.hang("master"), _thaw_stays_fenced), expect_failover=True),
    Scenario("short-hang", "the master freezes for half the dead time: no failover", short_hang),
    Scenario("lan-pull", "the master's LAN cable is pulled for 5 s: a warning, no failover",
             _no_failover_fault(lambda r: r.site.lan_pull("master"), lambda r: r.site.lan_plug("master"), 5.0,
                                "link-down", service_kept=False)),
    Scenario("serial-pull", "the master's serial cable is pulled for 5 s: a warning, no failover",
             _no_failover_fault(lambda r: r.site.pull_serial("master"), lambda r: r.site.plug_serial("master"), 5.0,
                                "link-down")),
    Scenario("arbiter-partition", "the appliance loses the master on both links while the standby still hears "
             "it: no failover", _no_failover_fault(_partition, _heal_partition, 5.0, "server-down")),
    Scenario("packet-loss", "5 % random loss on every LAN port (nftables): no false failover", packet_loss),
    Scenario("serial-noise", "random bytes on the master's serial line: dropped and counted, no failover",
             serial_noise),
    Scenario("standby-down", "the standby loses power: an alarm, no action", standby_down),
    Scenario("old-master-returns", "fence.mode = cycle: the fenced master boots again and claims the "
             "primary role; it stays out, no failback", old_master_returns,
             RigOptions(arbiter={"fence": {"mode": "cycle", "cycle_off_s": 2.0}}), expect_failover=True),
    Scenario("arbiter-restart", "the appliance is killed in the middle of a failover and restarted",
             arbiter_restart, expect_failover=True),
    Scenario("ups-on-battery", "the master's UPS goes on battery and back: alerts, no action", ups_on_battery),
    Scenario("switchover", "an operator's planned switchover under billing load: demote, wait for sync, "
             "promote, move the IP; nothing lost", switchover, RigOptions(database=True)),
    Scenario("reinstate", "after a failover an operator restores the old master's power: it rejoins as a "
             "standby (pg_rewind)", reinstate, RigOptions(database=True), expect_failover=True),
    Scenario("lagging-standby", "the in-sync standby is down, the other lags: the appliance waits for an "
             "operator, who forces the failover", lagging_standby,
             RigOptions(standbys=2, database=True), expect_failover=True),
    Scenario("arbiter-down", "arbiterd is frozen (SIGSTOP): the agents' unobserved alerts reach snmptrapd, the "
             "heartbeat traps stop, /health fails; after SIGCONT everything recovers without a failover",
             arbiter_down, RigOptions(monitoring=True)),
    Scenario("monitoring", "the master loses power while a monitoring station polls /health, /status, /metrics "
             "and snmpwalk and watches the status page in chromium: all show the new primary within 2 s",
             monitoring, RigOptions(monitoring=True, browser=True), expect_failover=True),
    Scenario("ups-drain", "the master's UPS drains to low battery: planned switchover to the standby before "
             "the master's power drops; nothing lost", ups_drain, RigOptions(database=True)),
    Scenario("rogue-host", "a host on the LAN replays captured frames, forwards each command to the wrong server "
             "and forges senders: nothing is acted on, every rejection counted", rogue_host),
    Scenario("lan-flood", "the appliance's UDP port is flooded with well-formed garbage from forged server "
             "addresses: no false failover, the serial links keep the servers alive", lan_flood),
    Scenario("agent-restart-replay", "commands captured during a switchover are played again to the restarted "
             "agents: refused", agent_restart_replay),
    Scenario("sync-standby-lost", "the synchronous standby loses power, policy.sync_loss = degrade: after the grace "
             "the master stops waiting for it; billing stalls at most grace + 1 s; nothing lost",
             sync_standby_lost,
             RigOptions(database=True, arbiter={"policy": {"sync_loss": "degrade", "sync_loss_grace": GRACE}})),
    Scenario("sync-standby-lost-block", "the synchronous standby loses power, policy.sync_loss = block: commits "
             "wait and commits-blocked (critical) goes out; they go on once it is back; nothing lost",
             sync_standby_lost_block,
             RigOptions(database=True, arbiter={"policy": {"sync_loss": "block", "sync_loss_grace": GRACE}})),
    Scenario("sync-lost-then-master-dies", "degraded after losing the synchronous standby, which comes back unable to "
             "replicate; the master loses power: no automatic failover, operator-needed, nothing lost",
             sync_lost_then_master_dies,
             RigOptions(database=True, arbiter={"policy": {"sync_loss": "degrade", "sync_loss_grace": GRACE}})),
    Scenario("relay-stuck", "the master crashes and its relay's contacts are welded (power sense stays high): "
             "level 2 cuts its UPS outlet through upsd, one failover, nothing lost",
             _failover_fault(lambda r: r.site.kill_all("master"), _outlet_after_relay),
             RigOptions(database=True, fence_level2=True, stuck_relays=("master",)), expect_failover=True),
    Scenario("isolated-primary", "policy.fencing = none: the master is cut off from the appliance (both links) "
             "and the standby; it stops its own database before the standby is promoted; nothing lost",
             isolated_primary,
             RigOptions(database=True, arbiter={"policy": {"fencing": "none"}, "timing": {"self_fence_wait": 5.0}},
                        agent={"isolation_timeout": 1.5, "self_fence_timeout": 2.0}), expect_failover=True),
    Scenario("rebuild", "the old master's WAL is lost so neither its boot nor pg_rewind can help: on power-on it "
             "is rebuilt with pg_basebackup (policy.auto_rebuild), then again on an operator's arbiterctl rebuild; "
             "each time synchronous again; times to rebuild reported",
             rebuild, RigOptions(database=True, arbiter={"policy": {"auto_rebuild": True, "sync_loss": "degrade"}}),
             expect_failover=True),
    Scenario("db-crash", "the master's PostgreSQL is killed, its host and agent live: failover after "
             "policy.unhealthy_grace, fenced first; nothing lost", _service_failover(lambda r: r.pg.kill("master")),
             RigOptions(database=True), expect_failover=True),
    Scenario("db-hang", "the master's postmaster freezes (SIGSTOP), open sessions go on: failover after "
             "policy.unhealthy_grace, fenced first; nothing lost", _service_failover(lambda r: r.pg.freeze("master")),
             RigOptions(database=True), expect_failover=True),
    Scenario("db-flap", "the master's database stops answering for half the grace, twice: degraded and "
             "restored alerts, no failover", db_flap, RigOptions(database=True)),
    Scenario("client-lan-cut", "nftables cuts the master off from the clients' side (client and gateway); "
             "serial and the appliance's LAN path work: failover after policy.reachability_grace, fenced first",
             _failover_fault(_cut_clients), RigOptions(ping=True), expect_failover=True),
    Scenario("ping-node-down", "the ping target (the gateway) disappears for everyone: network-down alert, "
             "no failover", ping_node_down, RigOptions(ping=True)),
    Scenario("vip-rogue", "the virtual IP is added by hand on the standby: alert and release there within two "
             "audit periods, no failover", vip_rogue),
    Scenario("vip-lost", "the virtual IP is removed by hand on the master: taken again and announced, alert; "
             "outage <= two audit periods + 0.5 s", vip_lost),
    Scenario("never-promote", "the only standby has priority 0 and the master loses power: operator-needed, "
             "no automatic failover; an operator's forced failover works", never_promote,
             RigOptions(priorities=(("standby", 0),)), expect_failover=True),
)}


def run_scenario(name: str, workdir: Path, options: RigOptions | None = None,
                 prepare: Callable[[Rig], None] | None = None, prefix: str = DEFAULT_PREFIX) -> Report:
    """``prepare`` runs on the built site before the scenario (the bench limits the appliance's CPU);
    ``prefix`` names the site's namespaces, whatever ``options`` say, so rigs can run side by side."""
    scenario = SCENARIOS[name]
    report = Report(name)
    opts = options or scenario.options
    started = time.monotonic()
    try:
        with Rig(dataclasses.replace(opts, prefix=prefix), workdir) as rig:
            if prepare is not None:
                prepare(rig)
            scenario.run(rig, report)
    except (TimeoutError, RuntimeError, OSError, ArbiterError) as exc:
        report.check(f"ran to the end ({exc})"[:300], False)
    report.details["seconds"] = round(time.monotonic() - started, 1)
    return report.finish()
