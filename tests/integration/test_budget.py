"""The bench's Pi-class budget: a busy process put in it gets about a quarter of one core."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hil.budget import SHARE, CpuBudget


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_busy_process_gets_about_a_quarter_of_one_core():
    busy = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
    try:
        with CpuBudget() as budget:
            budget.add(busy.pid)
            time.sleep(0.5)
            c0, t0 = _cpu_seconds(busy.pid), time.monotonic()
            time.sleep(3.0)
            share = (_cpu_seconds(busy.pid) - c0) / (time.monotonic() - t0)
        assert budget.method, "no mechanism named"
        print(f"{budget.method}: {share:.2f} of one core")
        assert SHARE * 0.5 < share < SHARE * 1.3, f"{budget.method}: {share:.2f} of one core"
        assert budget.group is None or not budget.group.exists(), "the cgroup outlived the budget"
    finally:
        busy.kill()
        busy.wait()
