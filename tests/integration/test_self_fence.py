"""An isolated primary's agent stops its database; one that still hears the appliance does not."""
from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from firmware.protocol import Codec, Kind
from tests.integration.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, port: int, isolation: float) -> tuple[subprocess.Popen, Path]:
    """The agent of a primary with that isolation timeout; its log in tmp_path/agent.log."""
    key = tmp_path / "key"
    key.write_text(secrets.token_hex(32))
    role = tmp_path / "role.json"
    role.write_text(json.dumps({"role": "primary", "in_sync": True, "lag_bytes": 0}))
    marker = tmp_path / "fenced"
    conf = tmp_path / "agent.toml"
    conf.write_text(f'[agent]\nname = "master"\nkey_file = "{key}"\nlisten = "127.0.0.1"\nport = {port}\n'
                    f'state_file = "{tmp_path / "state.json"}"\nisolation_timeout = {isolation}\n'
                    f'[replication]\nadapter = "command"\nstatus = "cat {role}"\n'
                    f'self_fence = "sh -c \'date +%s.%N > {marker}\'"\n')
    with open(tmp_path / "agent.log", "wb") as log:
        agent = subprocess.Popen([sys.executable, "-m", "host_tools.agent", "--config", str(conf)], cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT)
    return agent, marker


def test_a_primary_that_hears_nobody_fences_itself_and_says_why(tmp_path):
    agent, marker = _start(tmp_path, free_port(), 0.5)
    log = tmp_path / "agent.log"
    try:
        deadline = time.monotonic() + 10
        while "self-fenced in" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        agent.terminate()
        agent.wait(10)
    out = log.read_text()
    assert marker.exists()
    assert "SELF-FENCING: no frame from the appliance on any channel nor from any peer" in out
    assert "(agent.isolation_timeout = 0.5 s)" in out and "self-fenced in" in out


def test_a_primary_the_appliance_still_polls_keeps_running(tmp_path):
    port = free_port()
    agent, marker = _start(tmp_path, port, 2.0)  # a start-up slowed by a busy machine is no isolation
    codec = Codec("arbiter", {"master": (tmp_path / "key").read_bytes().rstrip(b"\n")}, 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            sock.sendto(codec.make(Kind.POLL, "master", {"n": 1})[1], ("127.0.0.1", port))
            time.sleep(0.1)
        assert not marker.exists()
    finally:
        sock.close()
        agent.terminate()
        agent.wait(10)
