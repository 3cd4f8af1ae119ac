"""Watching the watcher: a real agent process raises agent-unobserved through its alert hook
when the appliance stops polling it, and agent-observed when its polls come back; a peer's
polls do not count."""
from __future__ import annotations

import itertools
import json
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from firmware.protocol import Codec, Kind, derive_key
from tests.integration.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
AFTER = 0.6


def test_agent_alerts_when_the_appliance_stops_polling(tmp_path):
    master = secrets.token_hex(32).encode()
    key, peer_key = tmp_path / "key", tmp_path / "peer.key"
    key.write_bytes(derive_key(master, "db2") + b"\n")
    peer_key.write_bytes(derive_key(master, "db2", "db1") + b"\n")
    port, alerts = free_port(), tmp_path / "alerts.jsonl"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the peer's: the agent answers a peer at its address
    sock.bind(("127.0.0.1", 0))
    appliance_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    role = tmp_path / "role.json"
    role.write_text(json.dumps({"role": "standby", "in_sync": True, "lag_bytes": 0}))
    hook = (f"sh -c 'printf \"%s %s %s.0.%s %s\\n\" \"$ARBITER_EVENT\" \"$ARBITER_SERVER\" \"$ARBITER_ENTERPRISE\""
            f" \"$ARBITER_EVENT_NUMBER\" \"$ARBITER_SEVERITY\" >> {alerts}'")
    conf = tmp_path / "agent.toml"
    conf.write_text(f'''
[agent]
name = "db2"
key_file = "{key}"
listen = "127.0.0.1"
port = {port}
state_file = "{tmp_path / 'state.json'}"
unobserved_after = {AFTER}
alert_hook = """{hook}"""
[[peers]]
name = "db1"
key_file = "{peer_key}"
address = "127.0.0.1"
port = {sock.getsockname()[1]}
[replication]
adapter = "command"
status = "cat {role}"
''')
    agent = subprocess.Popen([sys.executable, "-m", "host_tools.agent", "--config", str(conf)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    appliance = Codec("arbiter", {"db2": derive_key(master, "db2")}, 1)
    peer = Codec("db1", {"db2": derive_key(master, "db2", "db1")}, 1)

    nonce = itertools.count(1)

    def poll(codec: Codec, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            (sock if codec is peer else appliance_sock).sendto(codec.make(Kind.POLL, "db2", {"n": next(nonce)})[1],
                                                               ("127.0.0.1", port))
            time.sleep(0.05)

    def drain(s: socket.socket) -> int:
        """How many replies the agent sent to the peer (its own polls to the peer don't count)."""
        s.setblocking(False)
        n = 0
        while True:
            try:
                frame = peer.read(s.recv(4096))
            except BlockingIOError:
                return n
            n += frame is not None and frame.kind is Kind.REPLY

    def lines() -> list[str]:
        return alerts.read_text().splitlines() if alerts.exists() else []

    try:
        poll(appliance, 1.5)  # watched: no alert
        assert lines() == []
        drain(sock)
        stopped = time.monotonic()
        poll(peer, 3.0)  # only a peer polls now: that is nobody watching
        assert drain(sock) > 0  # the peer's polls were valid: answered
        got = lines()
        assert got == ["agent-unobserved db2 1.3.6.1.4.1.64400.0.61 MAJOR"]
        took = alerts.stat().st_mtime - (time.time() - (time.monotonic() - stopped))
        assert AFTER - 0.1 <= took < AFTER + 1.0, took  # the last poll left up to 50 ms before `stopped`
        poll(appliance, 0.5)
        assert lines()[1:] == ["agent-observed db2 1.3.6.1.4.1.64400.0.62 CLEAR"]
    finally:
        sock.close()
        appliance_sock.close()
        agent.kill()
        out = agent.communicate()[0].decode()
    assert "nobody watches this server (agent.unobserved_after = 0.6 s)" in out
