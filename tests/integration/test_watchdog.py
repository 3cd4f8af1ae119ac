"""The real daemon starting up and staying alive: under a systemd-style notify listener, READY once after the first full
cycle, WATCHDOG from the loop while it is healthy, none while it hangs."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from firmware.control import request
from firmware.daemon import Daemon
from hil import toml_out

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    key = tmp_path / "key"
    key.write_text(secrets.token_hex(32))
    conf = tmp_path / "arbiter.toml"
    conf.write_text(toml_out.dumps({
        "site": {"name": "wd", "key_file": str(key), "state_dir": str(tmp_path / "state"),
                 "socket": str(tmp_path / "ctl.sock")},
        "board": {"kind": "hil", "pin_factory": "mock"},
        "policy": {"fencing": "none"},
        "vip": {"address": "192.0.2.100/24", "verify": "none"},
        "servers": [{"name": "a", "address": "127.0.0.1", "port": 1}, {"name": "b", "address": "127.0.0.1", "port": 2}],
    }))
    return conf


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_then_watchdog_and_silence_while_hung(tmp_path, abstract):
    conf = _config(tmp_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = f"@arbiter-test-{secrets.token_hex(4)}" if abstract else str(tmp_path / "notify")
    listener.bind("\0" + address[1:] if abstract else address)
    listener.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
    daemon = subprocess.Popen([sys.executable, "-m", "firmware.daemon", "--config", str(conf)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "wb"))
    try:
        got = _collect(listener, 3.0)
        assert got[0][1] == "READY=1" and [m for _, m in got].count("READY=1") == 1
        pets = [t for t, m in got if m == "WATCHDOG=1"]
        assert len(pets) >= 5 and max(b - a for a, b in zip(pets, pets[1:])) < 0.5
        daemon.send_signal(signal.SIGSTOP)  # the loop hangs
        assert [m for _, m in _collect(listener, 1.5)] == []
        daemon.send_signal(signal.SIGCONT)
        assert "WATCHDOG=1" in [m for _, m in _collect(listener, 1.0)]
    finally:
        daemon.kill()
        daemon.wait()
        listener.close()


def test_status_line_and_reload_are_told_to_systemd(tmp_path):
    conf = _config(tmp_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    daemon = subprocess.Popen([sys.executable, "-m", "firmware.daemon", "--config", str(conf)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "wb"))
    try:
        got = [m for _, m in _collect(listener, 2.0)]
        assert got.index("READY=1") < next(i for i, m in enumerate(got) if m.startswith("STATUS=phase "))
        daemon.send_signal(signal.SIGHUP)
        got = [m for _, m in _collect(listener, 1.5) if m != "WATCHDOG=1"]
        assert got[:2] == ["RELOADING=1", "READY=1"], got
    finally:
        daemon.kill()
        daemon.wait()
        listener.close()


def _collect(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append((time.monotonic(), sock.recv(256).decode()))
        except socket.timeout:
            pass
    return out


def test_only_the_loop_pets_a_loop_stuck_in_a_cycle_goes_silent_while_other_threads_run(tmp_path, monkeypatch):
    """SIGSTOP above freezes every thread; here only the loop hangs (a poll that never
    returns) while the control socket's thread keeps answering: still no WATCHDOG=1."""
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    daemon = Daemon(_config(tmp_path))
    sent: list[tuple[float, str]] = []
    daemon.app.sd_notify = lambda m: sent.append((time.monotonic(), m)) or True
    flowing = threading.Event()
    flowing.set()
    poll_all = daemon.app.poller.poll_all
    daemon.app.poller.poll_all = lambda: (flowing.wait(), poll_all())
    marks: dict[str, object] = {}

    def drive() -> None:
        time.sleep(1.5)
        flowing.clear()
        marks["hung"] = time.monotonic()
        time.sleep(1.5)
        marks["status"] = request(str(tmp_path / "ctl.sock"), {"cmd": "status"})
        marks["resumed"] = time.monotonic()
        flowing.set()
        time.sleep(1.0)
        daemon._stop()

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    threading.Thread(target=drive, daemon=True).start()
    try:
        daemon.run()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    pets = [t for t, m in sent if m == "WATCHDOG=1"]
    hung, resumed = marks["hung"], marks["resumed"]
    assert [m for _, m in sent].count("READY=1") == 1
    assert len([t for t in pets if t < hung]) >= 5
    assert [t for t in pets if hung + 0.1 < t < resumed] == []  # one cycle may have been past the gate
    assert marks["status"]["ok"] and marks["status"]["phase"]
    assert any(t > resumed for t in pets)


def test_a_saved_state_naming_a_server_missing_from_the_config_stops_start_up(tmp_path):
    conf = _config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text('{"site": {"phase": "normal", "primary": "a", "fenced": ["old-db"]}}')
    done = subprocess.run([sys.executable, "-m", "firmware.daemon", "--config", str(conf)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3  # cannot start: not a bad config, not a usage error
    assert "names old-db, not in the config's [[servers]]" in done.stderr
