"""The state store survives a kill at any instant; the journal stays bounded and readable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.errors import StateError
from firmware.journal import Journal
from firmware.state import StateStore

ROOT = Path(__file__).resolve().parents[2]


def test_save_load_and_a_leftover_temp_file_is_ignored(tmp_path):
    store = StateStore(tmp_path / "state.json")
    assert store.load() is None
    store.save({"phase": "normal", "n": 1})
    (tmp_path / ".state.json.tmp").write_text('{"phase": "tor')  # a crash mid-write
    assert store.load() == {"phase": "normal", "n": 1}


def test_corrupt_state_is_an_error_never_a_fresh_start(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError, match="corrupt"):
        StateStore(tmp_path / "state.json").load()


def test_killing_a_writer_at_random_instants_never_leaves_a_torn_file(tmp_path):
    path = tmp_path / "state.json"
    writer = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from firmware.state import StateStore\n"
              f"s = StateStore({str(path)!r}); i = 1\n"
              "s.save({'n': i, 'pad': 'x' * 4000}); print('saving', flush=True)\n"
              "while True:\n    i += 1; s.save({'n': i, 'pad': 'x' * 4000})\n")
    seen = []
    for round_ in range(25):
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"saving\n"
        time.sleep((round_ % 5) * 0.007)  # kill at different points of the save loop
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        data = StateStore(path).load()
        assert data is not None and data["pad"] == "x" * 4000
        seen.append(data["n"])
    assert max(seen) > 1


def test_journal_is_bounded_and_survives_a_restart_and_a_torn_line(tmp_path):
    j = Journal(tmp_path / "j.jsonl", max_entries=10)
    for i in range(35):
        j.append({"event": "link-down", "n": i})
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) <= 20
    j.close()
    with open(tmp_path / "j.jsonl", "a") as f:
        f.write('{"event": "tor')
    j2 = Journal(tmp_path / "j.jsonl", max_entries=10)
    j2.append({"event": "server-up", "n": 99})
    tail = j2.tail(3)
    assert [r["n"] for r in tail][-1] == 99 and all("ts" in r for r in tail)
    assert json.loads((tmp_path / "j.jsonl").read_text().splitlines()[0])["n"] >= 15
