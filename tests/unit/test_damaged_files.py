"""A damaged file is an alarm, never a crash: the daemon starts in safe halted mode with a line
naming the file, the alarm relay on and an internal-error alert, and acts on nothing. An
unexpected error in a cycle is alarmed, skips the watchdog pet, and twice in a row halts."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from firmware.daemon import Daemon
from firmware.errors import ConfigError
from firmware.site_state import Phase
from firmware.state import SlotStore
from hil import toml_out


def make_daemon(tmp_path: Path, managers: list | None = None) -> Daemon:
    key = tmp_path / "site.key"
    key.write_bytes(b"k" * 32)
    servers = [{"name": n, "address": "127.0.0.1", "port": 1, "fence_relay": f"relay{i}", "power_sense": f"sense{i}"}
               for i, n in enumerate(("master", "standby"), 1)]
    conf = tmp_path / "arbiter.toml"
    conf.write_text(toml_out.dumps({
        "site": {"name": "t", "key_file": str(key), "state_dir": str(tmp_path / "state"),
                 "socket": str(tmp_path / "ctl.sock")},
        "board": {"kind": "hil", "pin_factory": "mock", "alarm_relay": "alarm"},
        "vip": {"address": "192.0.2.100/24", "verify": "none"},
        "alerts": {"managers": managers or []},
        "servers": servers,
    }))
    return Daemon(conf)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


def start_halted(tmp_path: Path, named: str, caplog, managers: list | None = None) -> Daemon:
    caplog.set_level(logging.INFO)
    daemon = make_daemon(tmp_path, managers)
    try:
        daemon.app.notifier.notify("arbiter-started")
        assert daemon.app.damaged and named in daemon.app.damaged[0]
        daemon._halt("; ".join(daemon.app.damaged))
        assert daemon.halted and named in daemon.halted
        assert daemon.state.phase is Phase.HALTED and named in daemon.state.reason
        assert daemon.app.board.outputs()["alarm"] is True  # the relay is on
        assert any(r.levelno == logging.CRITICAL and named in r.getMessage() for r in caplog.records)
        alerts = [r for r in daemon.app.journal.tail(50, kind="alert") if r.get("event") == "internal-error"]
        assert alerts and named in alerts[-1]["text"]
        assert daemon._cycle() is True  # alive, petted, deciding nothing
    finally:
        daemon.app.close()
    return daemon


@pytest.mark.parametrize("site", [{"phase": 7}, {"phase": "normal", "fenced": 5}, "not a table"],
                         ids=["phase-a-number", "fenced-a-number", "site-a-string"])
def test_a_wrongly_typed_state_file_halts_safely_and_is_kept(tmp_path, state_dir, caplog, site):
    text = json.dumps({"site": site})
    (state_dir / "state.json").write_text(text)
    start_halted(tmp_path, "state.json", caplog)
    assert (state_dir / "state.json").read_text() == text  # never overwritten: a restart halts again


def test_torn_state_slots_halt_safely_and_are_kept(tmp_path, state_dir, caplog):
    """Both slots torn (or one torn, the other never written): no whole save is left."""
    store = SlotStore(state_dir / "state.json")
    store.save({"site": {"phase": "normal", "primary": "master"}})
    store.close()
    torn = store.slots[1].read_bytes()[:30]
    store.slots[1].write_bytes(torn)
    start_halted(tmp_path, "state.b.json", caplog)
    assert store.slots[1].read_bytes() == torn and not store.slots[0].exists()


def test_a_wrongly_typed_run_counter_halts_safely_and_is_kept(tmp_path, state_dir, caplog):
    (state_dir / "runs").write_text('{"run": "seven"}')
    daemon = start_halted(tmp_path, "runs", caplog)
    assert daemon.app.run_id == 0 and (state_dir / "runs").read_text() == '{"run": "seven"}'


def test_a_wrongly_typed_alarm_file_halts_safely_and_is_set_aside(tmp_path, state_dir, caplog):
    (state_dir / "alarm.json").write_text('{"active": [["link-down", "master", "serial", "loud"]]}')
    start_halted(tmp_path, "alarm.json", caplog)
    assert (state_dir / "alarm.json.damaged").exists()


def test_a_damaged_outbox_line_halts_safely_and_is_set_aside(tmp_path, state_dir, caplog):
    manager = {"host": "127.0.0.1", "port": 9, "notify": "inform"}
    outbox = state_dir / "outbox-127.0.0.1-9.jsonl"
    outbox.write_text('{"seq": 1, "event": "link-down"}\n{"seq": 2, "ev\n{"seq": 3, "event": "link-up"}\n')
    start_halted(tmp_path, "outbox-127.0.0.1-9.jsonl", caplog, managers=[manager])
    assert (state_dir / "outbox-127.0.0.1-9.jsonl.damaged").exists()


def test_non_utf8_bytes_in_the_journal_halt_safely_and_it_is_set_aside(tmp_path, state_dir, caplog):
    (state_dir / "journal.jsonl").write_bytes(b'{"event": "a"}\n\xff\xfe\x00garbage\n{"event": "b"}\n')
    start_halted(tmp_path, "journal.jsonl", caplog)
    assert (state_dir / "journal.jsonl.damaged").exists()


def test_an_unexpected_error_alarms_skips_the_pet_and_twice_in_a_row_halts(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    daemon = make_daemon(tmp_path)
    try:
        def broken(*_args):
            raise ZeroDivisionError("bug in decide")
        monkeypatch.setattr("firmware.daemon.decide", broken)
        assert daemon._cycle() is False  # no watchdog pet for this cycle
        assert not daemon.halted and daemon.app.board.outputs()["alarm"] is True
        assert any(r.exc_info and "bug in decide" in r.getMessage() for r in caplog.records)  # with traceback
        assert daemon._cycle() is False
        assert daemon.halted and "ZeroDivisionError" in daemon.state.reason
        assert daemon.state.phase is Phase.HALTED
        assert daemon._cycle() is True  # halted: nothing decided, the loop and the watchdog live on
        assert not (tmp_path / "state" / "state.json").exists()  # the failing state is never replaced
    finally:
        daemon.app.close()


def test_one_unexpected_error_then_a_good_cycle_does_not_halt(tmp_path, monkeypatch):
    daemon = make_daemon(tmp_path)
    try:
        real = __import__("firmware.daemon", fromlist=["decide"]).decide
        calls = []

        def flaky(*args):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("once")
            return real(*args)
        monkeypatch.setattr("firmware.daemon.decide", flaky)
        assert daemon._cycle() is False
        assert daemon._cycle() is True
        assert daemon._cycle() is True and not daemon.halted
    finally:
        daemon.app.close()


def test_a_unit_watchdog_longer_than_the_setting_stops_start_up(tmp_path, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with pytest.raises(ConfigError, match="timing.watchdog_timeout = 15"):
        make_daemon(tmp_path)
