"""A Raspberry-Pi-class CPU budget for the appliance on the rig: a quarter of one core.

The best mechanism the machine allows, named in every report that uses it:

1. cgroup v2 ``cpu.max`` (a group under /sys/fs/cgroup with the cpu controller enabled);
2. cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (the same CFS bandwidth limit,
   where the cpu controller is still mounted as v1);
3. ``taskset`` onto CPU 0 beside a duty-cycled hog at nice -20 that takes three quarters
   of that core, where no cgroup can be made.

The period is 10 ms, not the kernel's default 100 ms: a slow core is slow all the time, it
does not stop for 75 ms out of every 100.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from hil.site import DEFAULT_PREFIX, check_prefix

SHARE = 0.25
PERIOD_US = 10_000
V2_ROOT = Path("/sys/fs/cgroup")
V1_CPU = Path("/sys/fs/cgroup/cpu")
GROUP = "arbiter-hil-budget"  # and the rig's prefix

# busy for three quarters of every period, asleep for the rest; above the appliance's priority
_HOG = ("import os, time\nos.nice(-20)\nbusy, period = {busy}, {period}\n"
        "while True:\n    end = time.perf_counter() + busy\n    while time.perf_counter() < end:\n        pass\n"
        "    time.sleep(period - busy)\n")


class CpuBudget:
    """``with CpuBudget() as b: b.add(pid)`` limits those processes (and their threads)."""

    def __init__(self, share: float = SHARE, period_us: int = PERIOD_US, enabled: bool = True,
                 prefix: str = DEFAULT_PREFIX) -> None:
        """``enabled`` False: no limit at all (method ""), so callers need no second code path.
        ``prefix``: the rig's; the cgroup is named after it, so two rigs' budgets never share one."""
        self.share, self.period_us, self.enabled = share, period_us, enabled
        self.name = f"{GROUP}-{check_prefix(prefix)}"
        self.method = ""
        self.group: Path | None = None
        self._hog: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CpuBudget:
        quota = int(self.share * self.period_us)
        if not self.enabled:
            return self
        if _v2_group(self.name):
            self.group = V2_ROOT / self.name
            (self.group / "cpu.max").write_text(f"{quota} {self.period_us}\n")
            self.method = f"cgroup v2 cpu.max = {quota} {self.period_us}"
        elif (V1_CPU / "cpu.cfs_quota_us").exists() and _try_mkdir(V1_CPU / self.name):
            self.group = V1_CPU / self.name
            (self.group / "cpu.cfs_period_us").write_text(f"{self.period_us}\n")
            (self.group / "cpu.cfs_quota_us").write_text(f"{quota}\n")
            self.method = f"cgroup v1 cpu.cfs_quota_us = {quota} per cpu.cfs_period_us = {self.period_us}"
            if (self.group / "cpu.rt_runtime_us").exists():  # the real-time threads get the same quarter
                (self.group / "cpu.rt_period_us").write_text(f"{self.period_us}\n")
                (self.group / "cpu.rt_runtime_us").write_text(f"{quota}\n")
                self.method += f", real-time threads cpu.rt_runtime_us = {quota} per {self.period_us}"
        else:
            period = self.period_us / 1e6
            self._hog = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c",
                                          _HOG.format(busy=period * (1 - self.share), period=period)],
                                         start_new_session=True)
            self.method = f"taskset -c 0 beside a hog at nice -20 busy {1 - self.share:.0%} of every {period * 1e3:g} ms"
        return self

    def add(self, pid: int) -> None:
        """The process and every thread it has or will have."""
        if self.group is not None:
            (self.group / "cgroup.procs").write_text(f"{pid}\n")
        elif self.enabled:
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pid)], check=True, capture_output=True)

    def __exit__(self, *exc: object) -> None:
        if self._hog is not None:
            os.killpg(self._hog.pid, signal.SIGKILL)
            self._hog.wait(5)
        if self.group is not None:
            parent = self.group.parent
            for pid in _read(self.group / "cgroup.procs").split():
                try:
                    (parent / "cgroup.procs").write_text(f"{pid}\n")
                except OSError:
                    pass  # gone meanwhile
            self.group.rmdir()


def _v2_group(name: str) -> bool:
    """A v2 group with cpu.max: the controller enabled for the root's children first."""
    if "cpu" not in _read(V2_ROOT / "cgroup.controllers").split():
        return False
    try:
        (V2_ROOT / "cgroup.subtree_control").write_text("+cpu\n")
    except OSError:
        pass  # already on, or not ours to change: cpu.max below tells
    if not _try_mkdir(V2_ROOT / name):
        return False
    if (V2_ROOT / name / "cpu.max").exists():
        return True
    (V2_ROOT / name).rmdir()
    return False


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _try_mkdir(path: Path) -> bool:
    try:
        path.mkdir(exist_ok=True)
        return True
    except OSError:
        return False
