"""Real-time scheduling of the heartbeat threads: only the thread that asks is real-time, and
nothing it starts is (a thread, or a process such as a hook or the database)."""
from __future__ import annotations

import os
import subprocess
import threading
import time

from firmware.config import Site
from firmware.realtime import NORMAL, REALTIME_PRIORITY, Realtime, Workers
from host_tools.agent_config import AgentSection


def in_thread(body):
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(body()))
    t.start()
    t.join(10)
    return out[0]


def test_only_the_thread_that_asks_runs_real_time_and_nothing_it_starts_does():
    def body():
        entered = Realtime(REALTIME_PRIORITY, "site.realtime_priority").enter()
        mine = (os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK, os.sched_getparam(0).sched_priority)
        child_thread = in_thread(lambda: os.sched_getscheduler(0))
        child_process = subprocess.run(["sh", "-c", "chrt -p $$"], capture_output=True, text=True).stdout
        return entered, mine, child_thread, child_process
    entered, mine, child_thread, child_process = in_thread(body)
    assert entered and mine == (os.SCHED_RR, REALTIME_PRIORITY)  # the tests run as root, as the rig does
    assert child_thread == os.SCHED_OTHER and "SCHED_OTHER" in child_process
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's other threads are untouched


def test_priority_zero_leaves_scheduling_alone():
    assert in_thread(lambda: (NORMAL.enter(), os.sched_getscheduler(0))) == (False, os.SCHED_OTHER)


def test_shipped_on_both_sides():
    assert Site(name="s", key_file="/k").realtime_priority == AgentSection(
        name="a", key_file="/k", state_file="/s").realtime_priority == REALTIME_PRIORITY > 0


def test_workers_run_each_task_at_real_time_on_a_kept_thread_and_start_one_more_while_all_are_busy():
    workers = Workers(Realtime(REALTIME_PRIORITY, "site.realtime_priority"), "t")
    seen: list[tuple[str, int]] = []
    release = threading.Event()

    def task(hold: bool) -> None:
        seen.append((threading.current_thread().name, os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK))
        if hold:
            release.wait(10)

    workers.run(lambda: task(False))
    assert workers.join(5)
    workers.run(lambda: task(False))
    assert workers.join(5)
    assert seen == [("t-1", os.SCHED_RR)] * 2  # one thread, kept, real-time before its first task
    workers.run(lambda: task(True))  # a long one (a rebuild) ...
    workers.run(lambda: task(False))  # ... does not hold up the next (a fence)
    for _ in range(500):
        if len(seen) == 4:
            break
        time.sleep(0.01)
    assert not workers.join(0.05)  # the long one still runs
    assert {name for name, _ in seen[2:]} == {"t-1", "t-2"}
    release.set()
    assert workers.join(5)


def test_a_task_that_raises_is_logged_and_its_worker_goes_on(caplog):
    workers = Workers(NORMAL, "t")
    done = threading.Event()
    workers.run(lambda: 1 / 0)
    workers.run(done.set)
    assert done.wait(5) and workers.join(5)
    assert "a task failed" in caplog.text
