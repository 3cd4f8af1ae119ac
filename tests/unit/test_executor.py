"""The executor and the action handlers against recording fakes: order, timeouts, failures."""
from __future__ import annotations

import threading
import time

from firmware.executor import Executor
from firmware.hands import make_handlers
from firmware.model import Fence, HoldFence, Notify, Promote, TakeIp, VerifyIp
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

    def command_result(self, cmd_id):
        return None if self.answer is None else (self.answer, "ok" if self.answer else "pg_promote failed")


class FakeNotifier:
    def __init__(self, line: Timeline) -> None:
        self.line = line

    def notify(self, event, server="", channel="", text=""):
        self.line.add(f"notify {event}")


def executor(line, confirms=True, answer=True, macs=frozenset({MACS["standby"]}), cfg=CFG):
    handlers = make_handlers(cfg, FakeBoard(line, confirms), FakeAgents(line, answer), FakeNotifier(line),
                             lambda ip, iface: macs)
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
    assert "notify failover-started" in line.events  # reported, but never in the fence's way


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
