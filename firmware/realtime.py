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
import threading
from dataclasses import dataclass

log = logging.getLogger("arbiter.realtime")
MAX_PRIORITY = 99
REALTIME_PRIORITY = 10  # shipped: above every normal process, below the kernel's threaded interrupts (50)


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
