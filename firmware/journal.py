"""The event journal: one JSON line per event, bounded, surviving restarts.

Appends are flushed but fsync'd at most every few seconds: an SD card wears out, and the
SNMP outbox, not the journal, is what guarantees that no alert is lost. The fsync runs on a
thread of its own: the daemon's loop journals a failover's first decision right after handing
its fence to the executor, and an fsync there (0.8 ms median, 50 ms at worst on the loaded
rig) held up the next step.

Every record is stamped with the wall clock to the millisecond, for reading (``ts``, and
``t`` in seconds since the epoch for filtering), and with the monotonic clock (``mono``),
from which durations between records of one kernel boot are computed.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from firmware.errors import DamagedFile
from firmware.state import write_atomic

FSYNC_EVERY_S = 5.0


class Journal:
    def __init__(self, path: Path, max_entries: int = 2000) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lines = len(self._read())
        self._file = open(self.path, "a")
        if self.path.stat().st_size and not _ends_with_newline(self.path):
            self._file.write("\n")  # a line torn by a power cut must not swallow the next record
        self._synced = time.monotonic()
        self._sync_due = threading.Event()
        self._syncer: threading.Thread | None = None  # started with the first fsync due

    def _read(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in raw.splitlines():
            try:
                record = json.loads(line.decode())
            except UnicodeDecodeError as exc:  # the journal writes JSON text only: not a torn line
                raise DamagedFile(self.path, f"bytes that are not UTF-8 text: {exc}") from exc
            except (json.JSONDecodeError, RecursionError):
                continue  # a line torn by a power cut
            if isinstance(record, dict):
                out.append(record)
        return out

    def append(self, record: dict[str, Any]) -> None:
        wall = round(time.time(), 3)
        entry = {"ts": wall_stamp(wall), "t": wall, "mono": round(time.monotonic(), 3), **record}
        with self._lock:
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._file.flush()
            self._lines += 1
            if time.monotonic() - self._synced >= FSYNC_EVERY_S:
                self._synced = time.monotonic()
                if self._syncer is None:
                    self._syncer = threading.Thread(target=self._sync_loop, name="journal-sync", daemon=True)
                    self._syncer.start()
                self._sync_due.set()
            if self._lines > 2 * self.max_entries:
                self._compact()

    def _sync_loop(self) -> None:
        """Each fsync asked for by append, on a copy of the descriptor taken under the lock: a
        compaction may close and reopen the file meanwhile (its new file is fsync'd by
        write_atomic)."""
        while True:
            self._sync_due.wait()
            self._sync_due.clear()
            with self._lock:
                if self._file.closed:
                    return
                fd = os.dup(self._file.fileno())
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _compact(self) -> None:
        keep = self._read()[-self.max_entries:]
        self._file.close()
        write_atomic(self.path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in keep))
        self._file = open(self.path, "a")
        self._lines = len(keep)

    def tail(self, n: int, since: float | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """The newest ``n`` records, only those stamped at or after ``since`` (epoch seconds)
        and of ``kind`` where given."""
        with self._lock:
            records = self._read()
        picked = [r for r in records if (since is None or r.get("t", 0) >= since)
                  and (kind is None or r.get("kind") == kind)]
        return picked[-n:] if n > 0 else []

    def close(self) -> None:
        with self._lock:
            self._file.close()
        self._sync_due.set()  # the syncer finds the file closed and ends


def wall_stamp(wall: float) -> str:
    """Local time with milliseconds and the UTC offset: 2026-12-01T02:50:01.123+0000."""
    ms = round(wall * 1000)
    local = time.localtime(ms // 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{ms % 1000:03d}{time.strftime('%z', local)}"


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
