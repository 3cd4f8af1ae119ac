"""A short endurance run (the bench runs the long ones: arbiter-hil bench --endurance N):
three failovers in a row on one site under billing load, power loss, crash and hang in turn,
the old primary reinstated each time; nothing lost, no split brain, every failover done."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from hil.endurance import run_endurance
from hil.site import cleanup_stale


@pytest.mark.hil
@pytest.mark.timeout(280)
def test_three_failovers_in_a_row_lose_nothing():
    cleanup_stale("ba")
    workdir = Path(tempfile.mkdtemp(prefix="hil-"))  # short: Unix socket paths are limited to 107 bytes
    result = run_endurance(3, workdir / "endurance")
    shown = json.dumps(result, indent=1)[:4000]
    assert [r["fault"] for r in result["runs"]] == ["power-loss", "crash", "hang"], shown
    assert result["completed"] == 3, shown
    assert [(r["from"], r["to"]) for r in result["runs"]] == [("master", "standby"), ("standby", "master"),
                                                              ("master", "standby")], shown
    assert result["split_brains"] == 0 and result["acked_tx"] > 0 and result["lost_tx"] == 0, shown
    assert result["outage_s"]["n"] == 3 and all(0 < o < 5 for o in result["outages"]), shown
    shutil.rmtree(workdir, ignore_errors=True)
