"""The real daemon under a systemd-style notify listener: READY once after the first full
cycle, WATCHDOG from the loop while it is healthy, none while it hangs."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil import toml_out

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_then_watchdog_and_silence_while_hung(tmp_path, abstract):
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


def _collect(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append((time.monotonic(), sock.recv(256).decode()))
        except socket.timeout:
            pass
    return out
