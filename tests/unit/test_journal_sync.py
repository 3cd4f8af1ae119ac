"""The journal's periodic fsync runs on a thread of its own: an append never waits for the
disk (the daemon's loop journals a failover's first decision between its steps)."""
from __future__ import annotations

import os
import threading
import time

from firmware import journal as journal_mod
from firmware.journal import Journal


def test_an_append_with_the_fsync_due_does_not_wait_for_it(tmp_path, monkeypatch):
    j = Journal(tmp_path / "journal.jsonl")
    started, release = threading.Event(), threading.Event()
    where: list[str] = []
    real = os.fsync

    def slow(fd: int) -> None:
        where.append(threading.current_thread().name)
        started.set()
        release.wait(5.0)
        real(fd)
    monkeypatch.setattr(journal_mod.os, "fsync", slow)
    try:
        j._synced = time.monotonic() - journal_mod.FSYNC_EVERY_S - 1
        t0 = time.monotonic()
        j.append({"kind": "decision", "reason": "fencing master"})
        assert started.wait(5.0) and where == ["journal-sync"]
        j.append({"kind": "phase", "to": "fencing"})  # while the disk is still busy
        assert time.monotonic() - t0 < 2.0
        release.set()
    finally:
        release.set()
        j.close()
    assert j._syncer is not None
    j._syncer.join(2.0)
    assert not j._syncer.is_alive()  # ends with the journal
    assert [r["kind"] for r in j.tail(5)] == ["decision", "phase"]


def test_no_thread_and_no_fsync_until_one_is_due(tmp_path, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(journal_mod.os, "fsync", calls.append)
    j = Journal(tmp_path / "journal.jsonl")
    try:
        for i in range(10):
            j.append({"kind": "alert", "n": i})
        assert j._syncer is None and calls == []
    finally:
        j.close()
