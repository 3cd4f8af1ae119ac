"""The executor and the action handlers against recording fakes: order, timeouts, failures."""
from __future__ import annotations

import dataclasses
import threading
import time

from firmware.errors import ActionError
from firmware.executor import Executor
from firmware.hands import make_handlers
from firmware.model import Fence, HoldFence, Notify, Promote, TakeIp, VerifyIp
from firmware.realtime import Realtime
from tests.unit.sitekit import MACS, site_config

CFG = site_config(timing={"fence_timeout": 0.2, "action_timeout": 0.3})


class Timeline:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.lock = threading.Lock()

    def add(self, what: str) -> None:
        with self.lock:
            self.events.append(what)


class FakeRelay:
    def __init__(self, line: Timeline, name: str, confirms: bool) -> None:
        self.line, self.name, self.confirms = line, name, confirms

    def cut(self) -> None:
        self.line.add(f"cut {self.name}")

    def restore(self) -> None:
        self.line.add(f"restore {self.name}")

    def power_on(self) -> bool | None:
        return not self.confirms

    def cut_and_confirm(self, timeout: float) -> bool:
        self.cut()
        time.sleep(0.02)
        if self.confirms:
            self.line.add(f"confirmed {self.name}")
        return self.confirms


class FakeBoard:
    def __init__(self, line: Timeline, confirms: bool = True) -> None:
        self.line, self.confirms = line, confirms

    def relay(self, server: str) -> FakeRelay:
        return FakeRelay(self.line, server, self.confirms)

    def set_status(self, status: str) -> None:
        self.line.add(f"status {status}")


class FakeAgents:
    def __init__(self, line: Timeline, answer: bool | None = True) -> None:
        self.line, self.answer, self.sent = line, answer, {}

    def send_command(self, server, op, args):
        self.line.add(f"{op} {server}")
        cmd_id = f"c{len(self.sent)}"
        self.sent[cmd_id] = op
        return cmd_id

    def wait_result(self, cmd_id, timeout):
        if self.answer is None:  # an agent that never answers
            time.sleep(timeout)
            return None
        return self.answer, "ok" if self.answer else "pg_promote failed"


class FakeNotifier:
    def __init__(self, line: Timeline) -> None:
        self.line = line

    def notify(self, event, server="", channel="", text=""):
        self.line.add(f"notify {event}")


def executor(line, confirms=True, answer=True, macs=frozenset({MACS["standby"]}), cfg=CFG, cut_outlet=None):
    handlers = make_handlers(cfg, FakeBoard(line, confirms), FakeAgents(line, answer), FakeNotifier(line),
                             lambda ip, iface: macs, cut_outlet)
    return Executor(handlers)


def drain(ex: Executor, n: int, timeout: float = 3.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += ex.results()
        time.sleep(0.005)
    return got


def test_fence_is_confirmed_before_any_promote():
    line = Timeline()
    ex = executor(line)
    ex.submit([Notify("failover-started"), Fence("master", ref=1), Promote("standby", ref=2), TakeIp("standby", ref=3)])
    results = drain(ex, 3)
    assert [r.ok for r in results] == [True, True, True]
    acting = [e for e in line.events if not e.startswith("notify")]
    assert acting == ["cut master", "confirmed master", "promote standby", "take_ip standby"]
    ex.join()
    assert "notify failover-started" in line.events  # reported, but never in the fence's way


class SlowNotifier(FakeNotifier):
    """An alert that takes its time, as two atomic writes with their fsyncs do on a busy card."""

    def notify(self, event, server="", channel="", text=""):
        time.sleep(0.1)
        super().notify(event, server, channel, text)


def test_alerts_go_out_in_order_without_holding_up_the_caller():
    """The loop submits; a slow alert must not keep it from the next step of a failover."""
    line = Timeline()
    handlers = make_handlers(CFG, FakeBoard(line), FakeAgents(line), SlowNotifier(line),
                             lambda ip, iface: frozenset(), None)
    ex = Executor(handlers)
    started = time.monotonic()
    ex.submit([Notify("failover-started"), Fence("master", ref=1)])
    ex.submit([Notify("fence-done"), Promote("standby", ref=2)])
    assert time.monotonic() - started < 0.05
    assert [a.event for a in ex.unsent()] == ["failover-started", "fence-done"]  # not sent yet: saved again
    assert [r.ok for r in drain(ex, 2)] == [True, True]
    ex.join()
    assert ex.unsent() == ()
    assert [e for e in line.events if e.startswith("notify")] == ["notify failover-started", "notify fence-done"]
    assert line.events.index("promote standby") < line.events.index("notify fence-done")


def test_unconfirmed_fence_skips_the_promote():
    line = Timeline()
    ex = executor(line, confirms=False)
    ex.submit([Fence("master", ref=1), Promote("standby", ref=2)])
    results = drain(ex, 2)
    assert not results[0].ok and "timing.fence_timeout" in results[0].detail
    assert not results[1].ok and results[1].detail.startswith("skipped")
    assert "promote standby" not in line.events


def test_agent_that_never_answers_times_out_with_the_setting_named():
    ex = executor(Timeline(), answer=None)
    t0 = time.monotonic()
    ex.submit([Promote("standby", ref=7)])
    (result,) = drain(ex, 1)
    assert not result.ok and "timing.action_timeout" in result.detail
    assert 0.25 < time.monotonic() - t0 < 2.0


def test_refused_command_fails_with_the_agents_words():
    ex = executor(Timeline(), answer=False)
    ex.submit([Promote("standby", ref=1)])
    (result,) = drain(ex, 1)
    assert not result.ok and "pg_promote failed" in result.detail


def test_verify_reports_both_macs_on_split_brain():
    ex = executor(Timeline(), macs=frozenset({MACS["master"], MACS["standby"]}))
    ex.submit([VerifyIp("standby", ref=1)])
    (result,) = drain(ex, 1)
    assert not result.ok and "2 MACs" in result.detail and result.code == "split-brain"
    assert MACS["master"] in result.detail and MACS["standby"] in result.detail


def test_verify_ok_only_for_the_expected_mac():
    ex = executor(Timeline())
    ex.submit([VerifyIp("standby", ref=1)])
    assert drain(ex, 1)[0].ok
    ex = executor(Timeline(), macs=frozenset({MACS["master"]}))
    ex.submit([VerifyIp("standby", ref=1)])
    assert not drain(ex, 1)[0].ok


def test_cycle_mode_powers_back_on_and_a_restart_does_not_cut_again():
    cycle = site_config(timing={"fence_timeout": 0.2, "action_timeout": 0.3},
                        fence={"mode": "cycle", "cycle_off_s": 1.0})
    line = Timeline()
    ex = executor(line, cfg=cycle)
    ex.submit([Fence("master", ref=1)])
    assert drain(ex, 1)[0].ok
    time.sleep(1.3)
    assert line.events == ["cut master", "confirmed master", "restore master"]
    ex.submit([HoldFence(("master",), ref=2)])  # what a restarted appliance issues
    (held,) = drain(ex, 1)
    assert held.ok and "stay powered" in held.detail and line.events[-1] == "restore master"


def test_off_mode_holds_fenced_servers_off_after_a_restart():
    line = Timeline()
    ex = executor(line)
    ex.submit([HoldFence(("master",), ref=1)])
    assert drain(ex, 1)[0].ok and line.events == ["cut master"]


def test_a_reload_gives_new_actions_the_new_settings():
    line = Timeline()
    ex = executor(line, answer=None)  # an agent that never answers: the timeout decides
    ex.submit([Promote("standby", ref=1)])
    assert "within 0.3 s" in drain(ex, 1)[0].detail
    longer = site_config(timing={"fence_timeout": 0.2, "action_timeout": 0.5})
    ex.replace_handlers(make_handlers(longer, FakeBoard(line), FakeAgents(line, None), FakeNotifier(line),
                                      lambda ip, iface: frozenset()))
    ex.submit([Promote("standby", ref=2)])
    assert "within 0.5 s" in drain(ex, 1)[0].detail


LEVEL2 = site_config(timing={"fence_timeout": 0.2, "action_timeout": 0.3},
                     fence={"ups_username": "fencer", "ups_password_file": "/etc/arbiter/fence.pw"})
LEVEL2 = dataclasses.replace(LEVEL2, servers=tuple(
    dataclasses.replace(s, ups=f"{s.name}-ups@127.0.0.1", fence_ups_command="outlet.1.load.off") for s in LEVEL2.servers))


def test_an_unconfirmed_relay_escalates_to_the_ups_outlet_and_names_the_level():
    line = Timeline()

    def cut(spec, command, timeout, sensed_off):
        line.add(f"{command} {spec} sensed_off={sensed_off()}")
        return "outlet.1.status reads off"
    ex = executor(line, confirms=False, cfg=LEVEL2, cut_outlet=cut)
    ex.submit([Fence("master", ref=1), Promote("standby", ref=2)])
    fenced, promoted = drain(ex, 2)
    assert fenced.ok and promoted.ok
    assert fenced.detail == "master: power off confirmed (level 2: UPS outlet, outlet.1.status reads off)"
    assert line.events == ["cut master", "notify fence-escalated",
                           "outlet.1.load.off master-ups@127.0.0.1 sensed_off=False", "promote standby"]


def test_a_confirmed_relay_never_touches_the_ups_and_a_failed_level_2_stops_the_promote():
    line = Timeline()
    ex = executor(line, cfg=LEVEL2, cut_outlet=lambda *a: line.add("ups") or "")
    ex.submit([Fence("master", ref=1)])
    assert drain(ex, 1)[0].detail == "master: power off confirmed (level 1: relay)" and "ups" not in line.events

    def refused(*args):
        raise ActionError("level 2: outlet.1.load.off on master-ups@127.0.0.1 refused: access denied")
    ex = executor(Timeline(), confirms=False, cfg=LEVEL2, cut_outlet=refused)
    ex.submit([Fence("master", ref=1), Promote("standby", ref=2)])
    fenced, promoted = drain(ex, 2)
    assert not fenced.ok and not promoted.ok
    assert "power still reads on 0.2 s after the relay opened" in fenced.detail and "access denied" in fenced.detail


def test_the_acting_batch_and_the_reporter_run_at_the_sites_real_time_priority():
    """A failover's steps run on the batch threads: at normal priority on a loaded board they
    waited for a CPU between the fence and the promote, as the loop (real-time) did not. The
    reporter too: a normal thread holding the interpreter lock would hold them all up."""
    entered: list[str] = []

    @dataclasses.dataclass(frozen=True)
    class Recording(Realtime):
        def enter(self) -> bool:
            entered.append(threading.current_thread().name)
            return True

    line = Timeline()
    handlers = make_handlers(CFG, FakeBoard(line), FakeAgents(line), FakeNotifier(line),
                             lambda ip, iface: frozenset(), None)
    ex = Executor(handlers, realtime=Recording(10, "site.realtime_priority"))
    ex.submit([Notify("failover-started"), Fence("master", ref=1)])
    drain(ex, 1)
    ex.join()
    assert sorted(entered) == ["exec-1", "exec-reports"]  # the batch's worker raised itself before any batch
