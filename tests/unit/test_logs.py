"""Logs under journald carry their priority and no second timestamp; elsewhere, the time."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from firmware import logs


def _log_through(path: Path, monkeypatch: pytest.MonkeyPatch, journal: bool) -> str:
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        if journal:
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        else:
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # another stream's
        logs.setup("debug", stream)
        log = logging.getLogger("arbiter")
        log.error("fence not confirmed")
        log.warning("link down")
        log.info("phase normal")
        log.debug("cycle")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("cycle failed")
        logging.getLogger().handlers[0].flush()
    return path.read_text()


def test_under_journald_each_line_starts_with_its_priority_and_has_no_timestamp(tmp_path, monkeypatch):
    out = _log_through(tmp_path / "journal", monkeypatch, journal=True).splitlines()
    assert out[:4] == ["<3>arbiter: fence not confirmed", "<4>arbiter: link down", "<6>arbiter: phase normal",
                       "<7>arbiter: cycle"]
    assert out[4] == "<3>arbiter: cycle failed" and all(line.startswith("<3>") for line in out[5:])
    assert any("RuntimeError: boom" in line for line in out[5:])


def test_elsewhere_lines_start_with_the_time(tmp_path, monkeypatch):
    out = _log_through(tmp_path / "plain", monkeypatch, journal=False).splitlines()
    assert out[0].endswith("arbiter ERROR fence not confirmed") and out[0][:4].isdigit()


def test_levels_between_take_the_more_severe_priority():
    assert [logs.priority(n) for n in (5, 10, 15, 20, 25, 30, 40, 50, 60)] == [7, 7, 6, 6, 4, 4, 3, 2, 2]
