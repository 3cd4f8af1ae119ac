"""The notification path: de-duplication, rate limit, alarm relay, hook, persisted seq."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

from firmware.events import Severity
from firmware.notify import AlarmSink, Alert, HookSink, LogSink, Notifier
from firmware.state import StateStore
from firmware.waiting import wait_until
from tests.unit.sitekit import site_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)

    @property
    def events(self) -> list[str]:
        return [a.event for a in self.alerts]


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def send(self, alert: Alert) -> None:
        self.calls += 1
        raise OSError("disk on fire")


class Relay:
    def __init__(self) -> None:
        self.history: list[bool] = []

    def __call__(self, on: bool) -> None:
        self.history.append(on)

    @property
    def on(self) -> bool:
        return bool(self.history) and self.history[-1]


def make(tmp_path: Path, *sinks: object, min_repeat_s: float = 60.0, max_per_minute: int = 30,
         clock: Clock | None = None) -> Notifier:
    cfg = site_config(alerts={"min_repeat_s": min_repeat_s, "max_per_minute": max_per_minute})
    return Notifier(cfg, list(sinks), tmp_path, clock=clock or Clock(), wall=lambda: 1.7e9)  # type: ignore[arg-type]


def test_alert_carries_the_table_defaults_and_the_wall_time(tmp_path: Path) -> None:
    rec = Recorder()
    a = make(tmp_path, rec).notify("server-down", "master", "lan")
    assert a == Alert(1, "server-down", Severity.MAJOR, "master", "lan", "server silent on every link", 1.7e9)
    assert rec.alerts == [a]


def test_same_event_server_channel_is_suppressed_within_min_repeat(tmp_path: Path) -> None:
    rec, clock = Recorder(), Clock()
    n = make(tmp_path, rec, clock=clock)
    assert n.notify("link-down", "master", "serial") is not None
    clock.now += 59.0
    assert n.notify("link-down", "master", "serial") is None
    assert n.notify("link-down", "master", "lan") is not None  # another channel
    assert n.notify("link-down", "standby", "serial") is not None  # another server
    clock.now += 1.0
    assert n.notify("link-down", "master", "serial") is not None
    assert rec.events == ["link-down"] * 4


def test_a_clearing_event_in_between_lets_the_repeat_through(tmp_path: Path) -> None:
    rec, clock = Recorder(), Clock()
    n = make(tmp_path, rec, clock=clock)
    for event in ("link-down", "link-up", "link-down", "link-up"):
        clock.now += 1.0
        assert n.notify(event, "master", "serial") is not None
    assert rec.events == ["link-down", "link-up", "link-down", "link-up"]
    # a clearing event for another server does not count
    n.notify("link-down", "standby", "serial")
    n.notify("link-up", "master", "serial")
    assert n.notify("link-down", "standby", "serial") is None


def test_rate_limit_drops_and_summarises_in_one_later_line(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    rec, clock = Recorder(), Clock()
    n = make(tmp_path, rec, min_repeat_s=0.0, max_per_minute=5, clock=clock)
    caplog.set_level(logging.WARNING, "arbiter.alerts")
    for i in range(200):  # a flapping link
        clock.now += 0.1
        n.notify("link-down" if i % 2 else "link-up", "master", "lan")
    assert len(rec.alerts) == 5
    assert not [r for r in caplog.records if "rate limit" in r.getMessage()]
    clock.now += 60.0
    assert n.notify("server-down", "master") is not None
    summaries = [r.getMessage() for r in caplog.records if "rate limit" in r.getMessage()]
    assert summaries == ["195 alerts dropped by the rate limit (alerts.max_per_minute = 5):"
                         " link-down 98, link-up 97"]
    assert rec.events[-1] == "server-down"


def test_seq_persists_across_a_new_notifier(tmp_path: Path) -> None:
    first = make(tmp_path, Recorder())
    sent = [first.notify("link-down", server) for server in ("master", "standby", "standby2")]
    assert [a.seq for a in sent if a] == [1, 2, 3]
    again = make(tmp_path, Recorder())
    assert (a := again.notify("arbiter-started")) is not None and a.seq == 4


def test_sink_errors_do_not_propagate_and_are_throttled(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    broken, rec, clock = Broken(), Recorder(), Clock()
    n = make(tmp_path, broken, rec, min_repeat_s=0.0, clock=clock)
    for _ in range(10):
        clock.now += 1.0
        assert n.notify("frames-rejected") is not None
    assert broken.calls == 10 and len(rec.alerts) == 10
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Broken failed on #1 frames-rejected: disk on fire" in errors[0]
    clock.now += 60.0
    n.notify("frames-rejected")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "(9 more failures not logged)" in errors[1]


def test_alarm_follows_the_most_severe_active_alert_and_clears(tmp_path: Path) -> None:
    relay = Relay()
    n = make(tmp_path, AlarmSink(relay))
    n.notify("arbiter-started")
    assert n.alarm_state() == ("CLEAR", False) and relay.history == [False]
    n.notify("link-down", "master", "serial")
    assert n.alarm_state() == ("WARNING", False) and relay.on
    n.notify("server-down", "master")
    n.notify("ups-low-battery", "standby", "ups")
    assert n.alarm_state() == ("CRITICAL", False)
    n.notify("ups-power-restored", "standby", "ups")
    assert n.alarm_state() == ("MAJOR", False)
    n.notify("server-up", "master")
    assert n.alarm_state() == ("WARNING", False) and relay.on
    n.notify("link-up", "standby", "serial")  # another server: no effect
    assert n.alarm_state() == ("WARNING", False)
    n.notify("link-up", "master", "serial")
    assert n.alarm_state() == ("CLEAR", False) and not relay.on
    assert relay.history == [False, True, False]


def test_an_active_alarm_lights_again_after_a_restart_and_an_ack_holds(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "alarm.json")
    relay = Relay()
    n = make(tmp_path, AlarmSink(relay, store))
    n.notify("fence-failed", "master")
    assert relay.on
    after_restart = Relay()
    sink = AlarmSink(after_restart, StateStore(tmp_path / "alarm.json"))
    assert after_restart.history == [True] and sink.state() == ("CRITICAL", False)
    sink.ack()
    again = Relay()
    assert AlarmSink(again, StateStore(tmp_path / "alarm.json")).state() == ("CRITICAL", True)
    assert again.history == [False]


def test_ack_silences_until_something_new_of_warning_or_worse(tmp_path: Path) -> None:
    relay, clock = Relay(), Clock()
    n = make(tmp_path, AlarmSink(relay), clock=clock)
    n.notify("server-down", "master")
    n.ack()
    assert n.alarm_state() == ("MAJOR", True) and not relay.on
    n.notify("switchover-completed")  # INFO: stays silent
    clock.now += 1.0
    n.notify("server-down", "master")  # a repeat inside min_repeat_s is nothing new
    assert not relay.on
    n.notify("link-down", "standby", "lan")
    assert n.alarm_state() == ("MAJOR", False) and relay.on
    assert relay.history == [False, True, False, True]  # set off at start, then as alerts came


def test_the_alarm_sees_alerts_the_rate_limit_keeps_from_others(tmp_path: Path) -> None:
    relay, rec, clock = Relay(), Recorder(), Clock()
    n = make(tmp_path, AlarmSink(relay), rec, max_per_minute=1, clock=clock)
    n.notify("arbiter-started")
    assert n.notify("link-down", "master", "lan") is None
    assert rec.events == ["arbiter-started"]
    assert n.alarm_state() == ("WARNING", False) and relay.on
    clock.now += 60.0
    assert (a := n.notify("server-down", "master")) is not None and a.seq == 2  # no gap for the held-back one


def test_a_storm_never_holds_back_the_alerts_of_a_failover(tmp_path: Path) -> None:
    rec, clock = Recorder(), Clock()
    n = make(tmp_path, rec, min_repeat_s=0.0, max_per_minute=5, clock=clock)
    for i in range(100):  # a flapping link fills the minute
        clock.now += 0.1
        n.notify("link-down" if i % 2 else "link-up", "standby", "lan")
    for event in ("failover-started", "fence-done", "failover-completed", "operator-needed", "fence-failed"):
        assert n.notify(event, "master") is not None, event
    assert rec.events[-5:] == ["failover-started", "fence-done", "failover-completed", "operator-needed",
                               "fence-failed"]
    assert n.notify("server-down", "standby") is None  # the limit still holds for the rest


def test_hook_gets_the_alert_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "hook.out"
    script = ("import os, sys; keys = ['EVENT', 'SEVERITY', 'SERVER', 'CHANNEL', 'TEXT', 'SEQ'];"
              f" open({str(out)!r}, 'a').write('|'.join(os.environ['ARBITER_' + k] for k in keys) + chr(10))")
    hook = HookSink([sys.executable, "-c", script], timeout=5.0)
    n = make(tmp_path, hook)
    try:
        n.notify("ups-on-battery", "standby", "ups", text="runtime 12 min")
        n.notify("failover-started", "master")
    finally:
        n.close()
    assert out.read_text().splitlines() == [
        "ups-on-battery|WARNING|standby|ups|runtime 12 min|1",
        "failover-started|MAJOR|master||automatic failover started|2",
    ]


def test_a_hanging_hook_never_blocks_notify_and_is_killed(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    hook = HookSink([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.3)
    n = make(tmp_path, hook)
    started = time.monotonic()
    n.notify("server-down", "master")
    assert time.monotonic() - started < 0.1
    hook.close(timeout=5.0)
    assert not hook.thread.is_alive()
    assert any("killed after 0.3s on #1 server-down" in r.getMessage() for r in caplog.records)


def test_a_hook_is_killed_with_its_children_on_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A hook script that started a child (a trap sender left running) loses it too at the
    timeout: killing the script alone, as subprocess.run does, leaves the child behind, one
    more on every alert. The next alert's hook then runs."""
    out, pids = tmp_path / "hook.out", tmp_path / "children"
    hook = HookSink(["sh", "-c", f'echo "$ARBITER_SEQ" >> {out}; [ "$ARBITER_SEQ" = 1 ] || exit 0;'
                                 f' sleep 30 & echo $! > {pids}; wait'], timeout=0.5)
    n = make(tmp_path, hook)
    started = time.monotonic()
    n.notify("server-down", "master")
    n.notify("link-down", "standby", "lan")
    hook.close(timeout=10.0)
    assert not hook.thread.is_alive() and time.monotonic() - started < 5
    assert out.read_text().split() == ["1", "2"]
    assert any("killed after 0.5s on #1 server-down" in r.getMessage() for r in caplog.records)
    child = int(pids.read_text())
    assert wait_until(lambda: not _running(child), 2.0, 0.02), "the hook's child outlived its timeout"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_log_sink_writes_one_line_at_the_severity_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "arbiter.alerts")
    LogSink().send(Alert(9, "fence-failed", Severity.CRITICAL, "master", "", "no confirm", 0.0))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.CRITICAL, "#9 CRITICAL fence-failed [master]: no confirm")]


def test_outbox_keeps_undelivered_alerts_in_order_across_reopen(tmp_path: Path) -> None:
    from firmware.snmp import Outbox

    path = tmp_path / "outbox-mgr.jsonl"
    box = Outbox(path)
    for seq in (1, 2, 3):
        box.append({"seq": seq, "event": "link-down"})
    box.mark_delivered(1)
    with open(path, "ab") as f:
        f.write(b'{"seq": 4, "ev')  # power cut in the middle of an append
    again = Outbox(path)
    assert [a["seq"] for a in again.pending] == [2, 3]
    again.append({"seq": 4, "event": "link-up"})
    again.mark_delivered(2)
    again.mark_delivered(4)
    assert len(again) == 0 and path.read_bytes() == b""
    assert len(Outbox(path)) == 0


class Beats(Recorder):
    def heartbeat(self, alert: Alert) -> None:
        self.alerts.append(alert)


def test_heartbeat_reaches_only_heartbeat_sinks_with_the_last_seq_every_time(tmp_path: Path) -> None:
    beats, plain, relay = Beats(), Recorder(), Relay()
    n = make(tmp_path, beats, plain, AlarmSink(relay))
    n.notify("link-down", "db1", "lan")
    for _ in range(3):
        n.heartbeat("appliance alive; phase normal, primary db1")
    hb = [a for a in beats.alerts if a.event == "heartbeat"]
    assert len(hb) == 3 and all(a.seq == 1 and a.text.startswith("appliance alive") for a in hb)
    assert plain.events == ["link-down"] and relay.history == [False, True]
    assert n.sent == {"link-down": 1}


def test_a_second_operation_inside_min_repeat_is_reported_like_the_first(tmp_path: Path) -> None:
    """Two rebuilds of one server a few seconds apart: each one's alerts reach the operator;
    a repeated condition (server-down) is still de-duplicated."""
    rec, clock = Recorder(), Clock()
    n = make(tmp_path, rec, clock=clock)
    for _ in range(2):
        clock.now += 2.0
        assert n.notify("rebuild-started", "master") is not None
        assert n.notify("rebuild-done", "master") is not None
        n.notify("server-down", "master")
    assert rec.events == ["rebuild-started", "rebuild-done", "server-down", "rebuild-started", "rebuild-done"]
