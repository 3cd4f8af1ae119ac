"""arbiterctl and the control socket, against a real socket with a recording handler."""
from __future__ import annotations

import json
import os

import pytest

from firmware.cli import main, render_status
from firmware.control import ControlServer, NotRunning, request

STATUS = {
    "ok": True, "site": "billing-a", "phase": "normal", "primary": "master", "target": None,
    "maintenance": False, "mode": "active", "hold_down_remaining_s": None,
    "alarm": {"severity": "WARNING", "acked": False}, "last_reason": "master: link down on serial",
    "frames_dropped": {"bad-mac": 3}, "running": [],
    "servers": [{"name": "master", "role": "primary", "alive": True, "fenced": False, "power_on": True,
                 "healthy": True, "links": {"serial": {"state": "dead", "age_s": 3.0, "rtt_ms": None},
                                            "lan": {"state": "up", "age_s": 0.01, "rtt_ms": 0.4}},
                 "repl": {"in_sync": None, "lag_bytes": None, "lag_s": None, "peer_alive": None}, "ups": None}],
}


@pytest.fixture
def daemon(tmp_path):
    seen = []

    def handler(req):
        seen.append(req)
        if req["cmd"] == "status":
            return STATUS
        if req["cmd"] == "switchover" and req.get("server") == "nowhere":
            return {"ok": False, "error": "unknown server 'nowhere'"}
        return {"ok": True, "message": f"{req['cmd']} queued", "events": [], "reason": "r", "phase": "normal",
                "at": "now"}

    server = ControlServer(str(tmp_path / "ctl" / "sock"), handler, allowed_uid=os.getuid())
    server.start()
    yield str(tmp_path / "ctl" / "sock"), seen
    server.stop()


def test_status_table_names_the_dead_link_and_the_reason(daemon, capsys):
    sock, _ = daemon
    assert main(["--socket", sock, "status"]) == 0
    out = capsys.readouterr().out
    assert "primary master" in out and "master: link down on serial" in out
    assert "dead" in out and "up 0.4ms" in out and "bad-mac 3" in out


def test_status_json_is_the_raw_answer(daemon, capsys):
    sock, _ = daemon
    assert main(["--socket", sock, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["servers"][0]["name"] == "master"


def test_failover_needs_force_and_confirmation(daemon, capsys):
    sock, seen = daemon
    assert main(["--socket", sock, "failover", "--to", "standby"]) == 1
    assert "--force" in capsys.readouterr().err and seen == []
    assert main(["--socket", sock, "failover", "--to", "standby", "--force", "--yes"]) == 0
    assert seen[-1] == {"cmd": "failover", "server": "standby", "force": True}


def test_refusal_and_unreachable_daemon_exit_codes(daemon, tmp_path, capsys):
    sock, _ = daemon
    assert main(["--socket", sock, "switchover", "--to", "nowhere"]) == 1
    assert "unknown server" in capsys.readouterr().err
    assert main(["--socket", str(tmp_path / "none"), "status"]) == 3


def test_maintenance_and_power_on_send_their_requests(daemon):
    sock, seen = daemon
    assert main(["--socket", sock, "maintenance", "on"]) == 0
    assert main(["--socket", sock, "power-on", "master", "--yes"]) == 0
    assert seen[-2:] == [{"cmd": "maintenance", "on": True}, {"cmd": "power-on", "server": "master"}]


def test_other_uid_is_refused(tmp_path):
    server = ControlServer(str(tmp_path / "s"), lambda r: {"ok": True}, allowed_uid=os.getuid() + 1)
    server.start()
    try:
        assert request(str(tmp_path / "s"), {"cmd": "status"}) == {"ok": False, "error": "root only"}
    finally:
        server.stop()
    with pytest.raises(NotRunning):
        request(str(tmp_path / "s"), {"cmd": "status"})


def test_refusal_is_read_even_when_it_closes_before_the_request_is_sent(tmp_path):
    # A request larger than the socket buffer is still being written when the refusal
    # arrives and the server closes: the client's write breaks, the answer is still there.
    server = ControlServer(str(tmp_path / "s"), lambda r: {"ok": True}, allowed_uid=os.getuid() + 1)
    server.start()
    try:
        big = {"cmd": "status", "pad": "x" * (4 << 20)}
        assert request(str(tmp_path / "s"), big) == {"ok": False, "error": "root only"}
    finally:
        server.stop()


def test_socket_file_is_private(daemon):
    sock, _ = daemon
    assert os.stat(sock).st_mode & 0o777 == 0o600


def test_render_status_survives_an_empty_site():
    assert "phase starting" in render_status({**STATUS, "phase": "starting", "servers": []})
