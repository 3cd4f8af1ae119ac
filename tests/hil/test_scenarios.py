"""Every rig scenario end to end: a real site in network namespaces, the real daemon and
agents, socat serial cables, snmptrapd, and the fault injected. Reports go to reports/hil/."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from hil.report import render
from hil.scenarios import SCENARIOS, run_scenario
from hil.site import cleanup_stale

REPORTS = Path(__file__).resolve().parents[2] / "reports" / "hil"
KEYS = {"scenario", "passed", "failovers", "false_failovers", "detection_s", "outage_s", "acked_tx",
        "lost_tx", "alerts", "split_brain"}


@pytest.mark.hil
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name):
    cleanup_stale("ba")
    workdir = Path(tempfile.mkdtemp(prefix="hil-"))  # short: Unix socket paths are limited to 107 bytes
    report = run_scenario(name, workdir / name)
    if report.passed:
        shutil.rmtree(workdir, ignore_errors=True)  # a failed run keeps its logs
    report.write(REPORTS / f"{name}.json")
    print(render(report))
    data = json.loads((REPORTS / f"{name}.json").read_text())
    assert KEYS <= set(data)
    assert report.passed, render(report) + "\n" + json.dumps(report.details, default=str)[:3000]
    if SCENARIOS[name].expect_failover:
        assert report.failovers == 1 and report.outage_s is not None
    else:
        assert report.failovers == 0 and report.false_failovers == 0
