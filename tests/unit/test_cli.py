"""arbiterctl and the control socket, against a real socket with a recording handler."""
from __future__ import annotations

import json
import os

import pytest

from firmware.model import RequestKind
from firmware.cli import follow, main, render_status
from firmware.commands import BadCommand, Command, Name, peer_loginuid
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

    def handler(req, peer):
        seen.append(req)
        if req["cmd"] == "status":
            return STATUS
        if req["cmd"] == "switchover" and req.get("server") == "nowhere":
            return {"ok": False, "accepted": False, "error": "unknown server 'nowhere'"}
        if req["cmd"] == "switchover" and req.get("server") == "stuck":
            return {"ok": False, "accepted": None, "error": "no verdict within 5 s"}
        return {"ok": True, "accepted": True, "reason": f"{req['cmd']} started", "events": [], "phase": "normal",
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
    assert Command.from_wire(seen[-1]) == Command(Name.FAILOVER, "standby", force=True)
    assert "accepted: failover started" in capsys.readouterr().out


def test_refusal_and_unreachable_daemon_exit_codes(daemon, tmp_path, capsys):
    sock, _ = daemon
    assert main(["--socket", sock, "switchover", "--to", "nowhere"]) == 1
    assert "refused: unknown server" in capsys.readouterr().err
    assert main(["--socket", sock, "switchover", "--to", "stuck"]) == 3
    assert "no verdict" in capsys.readouterr().err
    assert main(["--socket", str(tmp_path / "none"), "status"]) == 3
    with pytest.raises(SystemExit) as usage:
        main(["--socket", sock, "switchover", "--bogus"])
    assert usage.value.code == 2


def test_orders_carry_the_sudo_user_and_the_peer_is_the_caller(daemon, monkeypatch):
    sock, seen = daemon
    monkeypatch.setenv("SUDO_USER", "alice")
    assert main(["--socket", sock, "maintenance", "off"]) == 0
    assert Command.from_wire(seen[-1]).sudo_user == "alice"


def test_wait_follows_to_the_new_primary_a_line_a_second(capsys):
    states = iter([{"phase": "promoting", "primary": "master", "running": [{"action": "Promote#3", "elapsed_s": 1.2}]},
                   {"phase": "verifying", "primary": "standby", "running": []},
                   {"phase": "normal", "primary": "standby", "running": []}])
    clock, sleeps = iter([0.0, 0.0, 1.0, 2.0]), []
    assert follow(lambda: next(states), "standby", 60.0, clock=lambda: next(clock), sleep=sleeps.append) == 0
    out = capsys.readouterr().out.splitlines()
    assert sleeps == [1.0, 1.0] and "running Promote#3 1.2 s" in out[0] and "completed" in out[-1]


def test_wait_fails_on_a_halt_and_on_the_timeout(capsys):
    assert follow(lambda: {"phase": "halted", "primary": "master", "last_reason": "fence not confirmed"},
                  "standby", 60.0, sleep=lambda s: None) == 1
    assert "fence not confirmed" in capsys.readouterr().err
    clock = iter([0.0, 61.0])
    assert follow(lambda: {"phase": "promoting", "primary": "master"}, "standby", 60.0,
                  clock=lambda: next(clock), sleep=lambda s: None) == 1


def test_command_wire_form_is_checked_field_by_field():
    assert Command.from_wire(Command(Name.HISTORY, n=5, since=12.5).to_wire()) == Command(Name.HISTORY, n=5, since=12.5)
    for bad in ({"cmd": "reboot"}, {"cmd": "failover", "force": "yes"}, {"cmd": "events", "n": -1},
                {"cmd": "power-on", "server": 3}, {"cmd": "history", "since": "yesterday"}):
        with pytest.raises(BadCommand):
            Command.from_wire(bad)


def test_loginuid_of_a_process(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "loginuid").write_text("1000")
    (tmp_path / "43").mkdir()
    (tmp_path / "43" / "loginuid").write_text(str(2**32 - 1))
    assert peer_loginuid(42, tmp_path) == 1000
    assert peer_loginuid(43, tmp_path) is None and peer_loginuid(44, tmp_path) is None


def test_maintenance_and_power_on_send_their_requests(daemon, monkeypatch):
    sock, seen = daemon
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert main(["--socket", sock, "maintenance", "on"]) == 0
    assert main(["--socket", sock, "power-on", "master", "--yes"]) == 0
    assert [Command.from_wire(r) for r in seen[-2:]] == [Command(Name.MAINTENANCE, on=True),
                                                         Command(Name.POWER_ON, "master")]


def test_rebuild_is_an_order_for_decide(daemon, monkeypatch):
    sock, seen = daemon
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert main(["--socket", sock, "rebuild", "standby", "--yes"]) == 0
    sent = Command.from_wire(seen[-1])
    assert sent == Command(Name.REBUILD, "standby") and sent.request_kind() is RequestKind.REBUILD


def test_other_uid_is_refused(tmp_path):
    server = ControlServer(str(tmp_path / "s"), lambda r, p: {"ok": True}, allowed_uid=os.getuid() + 1)
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
    server = ControlServer(str(tmp_path / "s"), lambda r, p: {"ok": True}, allowed_uid=os.getuid() + 1)
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
