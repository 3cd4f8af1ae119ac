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
from firmware import state as state_mod
from firmware.errors import DamagedFile
from firmware.state import SlotStore, StateStore

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


@pytest.mark.parametrize("store", ["StateStore", "SlotStore"])
def test_killing_a_writer_at_random_instants_never_leaves_a_torn_file(tmp_path, store):
    path = tmp_path / "state.json"
    writer = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              f"from firmware.state import {store}\n"
              f"s = {store}({str(path)!r}); i = 1\n"
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
        data = getattr(state_mod, store)(path).load()
        assert data is not None and data["pad"] == "x" * 4000
        seen.append(data["n"])
    assert max(seen) > 1


def _tear(slot: Path, keep: int) -> None:
    """A power cut in the middle of the slot's write: its first ``keep`` bytes are new."""
    raw = slot.read_bytes()
    slot.write_bytes(raw[:keep] + b"\0" * (len(raw) - keep))


def test_slots_are_written_in_turn_and_the_newest_whole_one_wins(tmp_path):
    store = SlotStore(tmp_path / "state.json")
    assert store.load() is None
    for n in range(1, 6):
        store.save({"n": n})
    a, b = store.slots
    assert a.stat().st_size == b.stat().st_size == SlotStore.BLOCK
    assert SlotStore(tmp_path / "state.json").load() == {"n": 5}
    newest = SlotStore(tmp_path / "state.json")
    assert newest.load() == {"n": 5} and newest.source == b  # seq 5: the odd slot
    _tear(b, 40)  # the save of n = 5 torn: n = 4, whole in the other slot, is what was saved last
    again = SlotStore(tmp_path / "state.json")
    assert again.load() == {"n": 4}
    again.save({"n": 6})  # over the torn slot, never over the whole one
    assert SlotStore(tmp_path / "state.json").load() == {"n": 6}
    _tear(b, 10)
    assert SlotStore(tmp_path / "state.json").load() == {"n": 4}


def test_a_slot_keeps_its_size_and_grows_for_a_bigger_state(tmp_path):
    store = SlotStore(tmp_path / "state.json")
    store.save({"pad": "x" * 5000})
    store.save({"pad": "x" * 10})
    store.save({"pad": "x" * 10})
    a, b = store.slots
    assert b.stat().st_size == 2 * SlotStore.BLOCK and a.stat().st_size == SlotStore.BLOCK
    assert SlotStore(tmp_path / "state.json").load() == {"pad": "x" * 10}


def test_no_whole_slot_is_a_damaged_state_never_a_fresh_start(tmp_path):
    store = SlotStore(tmp_path / "state.json")
    store.save({"n": 1, "pad": "x" * 100})
    store.save({"n": 2, "pad": "x" * 100})
    _tear(store.slots[0], 30)  # in its header
    _tear(store.slots[1], 100)  # in its body
    with pytest.raises(DamagedFile, match="corrupt"):
        SlotStore(tmp_path / "state.json").load()
    only = tmp_path / "only"
    only.mkdir()
    SlotStore(only / "state.json").save({"n": 1})
    _tear(SlotStore(only / "state.json").slots[1], 20)
    with pytest.raises(DamagedFile):
        SlotStore(only / "state.json").load()


def test_the_single_file_of_older_versions_is_read_then_replaced(tmp_path):
    old = StateStore(tmp_path / "state.json")
    old.save({"n": 41})
    store = SlotStore(tmp_path / "state.json")
    assert store.load() == {"n": 41} and store.source == tmp_path / "state.json"
    store.save({"n": 42})
    assert not (tmp_path / "state.json").exists()
    assert SlotStore(tmp_path / "state.json").load() == {"n": 42}


def test_a_first_save_torn_after_an_upgrade_leaves_the_older_file(tmp_path):
    StateStore(tmp_path / "state.json").save({"n": 41})
    store = SlotStore(tmp_path / "state.json")
    store.load()
    store._write(store.slots[1], b"{\"seq\": 1, \"len")  # the first slot write, cut short
    assert SlotStore(tmp_path / "state.json").load() == {"n": 41}


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
