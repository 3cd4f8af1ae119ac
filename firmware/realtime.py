"""Real-time scheduling for the threads that carry heartbeats, as corosync runs its own.

A poll answered late is a poll missed: with the shipped dead time of 0.2 s, a server frozen for
half of it has 0.1 s left to answer, and an agent or an appliance reader that waits that long for
a CPU behind a busy process is taken for dead (the soak's false failovers: every link of the
primary silent at once, the agents and arbiterd starved under a CPU hog; at SCHED_RR none).

Only the threads that ask are real-time: SCHED_RESET_ON_FORK gives whatever such a thread
starts, a thread or a process (a hook, pg_ctl and the database it starts), normal scheduling.
The kernel's real-time throttling (sched_rt_runtime_us) still leaves the rest of the machine
its share should one of them spin.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("arbiter.realtime")
MAX_PRIORITY = 99
REALTIME_PRIORITY = 10  # shipped: above every normal process, below the kernel's threaded interrupts (50)
SWITCH_INTERVAL_S = 0.001  # CPython's default is 0.005


def prompt_handover() -> None:
    """A thread that wants the interpreter lock waits for its holder to block, or for
    sys.getswitchinterval() before it makes the holder give it up: 5 ms by default. On the
    rig's failovers, the executor's thread waited up to that long behind an alert's SNMP
    encoding on the reporter thread, twice in one step (the fence's batch began 5.1 ms after
    it was handed over, the promote command went out 22 ms after its decision was saved),
    and the agent's acknowledgements reached the appliance 6 ms after they were made. The
    process's threads are few and mostly asleep, so the shorter interval rarely switches."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


@dataclass(frozen=True)
class Realtime:
    """``priority`` 0: normal scheduling; ``setting``: the key that sets it, for the warning."""
    priority: int = 0
    setting: str = ""

    def enter(self) -> bool:
        """The calling thread at SCHED_RR ``priority``. Refused (no CAP_SYS_NICE, a cgroup
        without real-time runtime): one warning naming the setting, and the thread runs on at
        normal priority; a heartbeat path that is merely slower is no reason to stop."""
        if not self.priority:
            return False
        try:
            os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(self.priority))
        except OSError as exc:
            _warn_once(f"{self.setting} = {self.priority}: {threading.current_thread().name} stays at normal "
                       f"priority ({exc.strerror}); heartbeats may be answered late on a busy machine")
            return False
        return True


NORMAL = Realtime()
_warned: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        log.warning("%s", text)


class Workers:
    """Threads at ``realtime`` kept for the next task. A thread that a real-time thread starts
    begins at normal priority (SCHED_RESET_ON_FORK) and raises itself only once the kernel
    first runs it: behind a loaded machine's normal processes, 4 to 6 ms on the rig, which a
    thread per failover step paid each time. A task runs on an idle worker, or on a new one
    while every worker is busy (a rebuild may run for minutes beside a fence); one worker
    waits from the start, and each waits for another task after its own."""

    def __init__(self, realtime: Realtime, name: str) -> None:
        self._realtime = realtime
        self._name = name
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self._idle = 1  # waiting for a task, none promised to them yet: the first one
        self._busy = 0  # tasks handed over and not yet done
        self._started = 0
        self._start()

    def _start(self) -> None:
        self._started += 1
        threading.Thread(target=self._work, name=f"{self._name}-{self._started}", daemon=True).start()

    def run(self, task: Callable[[], None]) -> None:
        """``task`` on a worker thread, now; it handles its own errors (one that escapes is logged)."""
        with self._lock:
            self._busy += 1
            if self._idle:
                self._idle -= 1  # that one is this task's
            else:
                self._start()
        self._tasks.put(task)

    def _work(self) -> None:
        self._realtime.enter()
        while True:
            task = self._tasks.get()
            try:
                task()
            except Exception:
                log.exception("%s: a task failed", threading.current_thread().name)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._idle += 1
                    self._finished.notify_all()

    def join(self, timeout: float) -> bool:
        """Whether every task handed over so far finished within ``timeout`` seconds."""
        with self._finished:
            return self._finished.wait_for(lambda: self._busy == 0, timeout)
