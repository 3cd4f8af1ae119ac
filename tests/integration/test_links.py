"""The appliance's links against a real agent: serial over socat pty pairs, UDP on loopback."""
from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.links import Poller, SerialPort
from firmware.model import Channel
from firmware.protocol import Codec, Kind, decode, derive_key
from firmware.state import SlotStore
from tests.integration.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]


class Cable:
    def __init__(self, tmp: Path) -> None:
        self.a, self.b = tmp / "tty-arbiter", tmp / "tty-server"
        self.proc: subprocess.Popen | None = None

    def plug(self) -> None:
        self.proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not (self.a.exists() and self.b.exists()):
            assert time.monotonic() < deadline, "socat did not start"
            time.sleep(0.01)

    def pull(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()


def agent_key(tmp_path: Path) -> bytes:
    """The master's own key, as `arbiterd derive-key master` prints it from the site key."""
    return derive_key((tmp_path / "site.key").read_bytes(), "master")


@pytest.fixture
def site(tmp_path):
    (tmp_path / "site.key").write_text(secrets.token_hex(32))
    key = tmp_path / "key"
    key.write_bytes(agent_key(tmp_path) + b"\n")
    cable = Cable(tmp_path)
    cable.plug()
    port = free_port()
    role = tmp_path / "role.json"
    role.write_text(json.dumps({"role": "primary", "in_sync": True, "lag_bytes": 0}))
    marker = tmp_path / "promoted"
    conf = tmp_path / "agent.toml"
    conf.write_text(f'''
[agent]
name = "master"
key_file = "{key}"
listen = "127.0.0.1"
port = {port}
serial = "{cable.b}"
state_file = "{tmp_path / 'agent-state.json'}"
[replication]
adapter = "command"
status = "cat {role}"
[hooks]
promote = "sh -c 'echo once >> {marker}'"
''')
    agent = subprocess.Popen([sys.executable, "-m", "host_tools.agent", "--config", str(conf)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    codec = Codec("arbiter", {"master": agent_key(tmp_path)}, 1)
    poller = Poller(codec, [("master", str(cable.a), 115200, "127.0.0.1", port)])
    try:
        yield poller, cable, agent, marker, port
    finally:
        poller.close()
        agent.kill()
        agent.wait()
        cable.pull()


def poll_for(poller: Poller, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        poller.poll_all()
        time.sleep(0.02)


def fresh(poller: Poller, channel: Channel, within: float = 0.3) -> bool:
    rec = poller.snapshot()["master"][channel]
    return rec.last_seen is not None and time.monotonic() - rec.last_seen < within


def test_agent_answers_on_both_links(site):
    poller, *_ = site
    poll_for(poller, 1.5)
    for channel in (Channel.SERIAL, Channel.LAN):
        rec = poller.snapshot()["master"][channel]
        assert fresh(poller, channel) and rec.report.role.value == "primary" and rec.rtt_s < 0.2


def test_pulling_the_serial_cable_leaves_the_lan_alive_and_back(site):
    poller, cable, *_ = site
    poll_for(poller, 1.0)
    cable.pull()
    poll_for(poller, 1.0)
    assert not fresh(poller, Channel.SERIAL) and fresh(poller, Channel.LAN)
    cable.plug()
    poll_for(poller, 2.0)
    assert fresh(poller, Channel.SERIAL), "the serial link must come back when the cable is plugged again"


def test_silencing_the_lan_leaves_the_serial_alive(site):
    poller, _cable, _agent, _marker, port = site
    poll_for(poller, 1.0)
    poller._udp_peer["master"] = ("127.0.0.1", free_port())  # the LAN path now leads nowhere
    poll_for(poller, 1.0)
    assert fresh(poller, Channel.SERIAL) and not fresh(poller, Channel.LAN)


def test_replayed_reply_is_rejected_and_counted(site, tmp_path):
    poller, _cable, _agent, _marker, port = site
    poll_for(poller, 1.0)  # the agent is up
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    with poller._codec_lock:  # a poll of this very run whose reply a spy takes off the wire
        _, poll = poller._codec.make(Kind.POLL, "master", {"n": 12345})
    sock.sendto(poll, ("127.0.0.1", port))
    captured = sock.recv(4096)  # a genuine reply, captured on the wire
    before = sum(poller.dropped().values())
    poller._receive("master", Channel.LAN, captured)
    poller._receive("master", Channel.LAN, captured)
    dropped = poller.dropped()
    assert sum(dropped.values()) == before + 2
    assert dropped.get("stale-reply", 0) + dropped.get("replay", 0) >= 2


def test_command_runs_once_though_sent_on_both_links_and_repeated(site):
    poller, _cable, _agent, marker, _port = site
    poll_for(poller, 0.5)
    cmd = poller.send_command("master", "promote", {})
    deadline = time.monotonic() + 5
    while poller.wait_result(cmd, 0.02) is None and time.monotonic() < deadline:
        poller.poll_all()
    assert poller.wait_result(cmd, 0.0) == (True, "")
    poll_for(poller, 0.5)
    assert marker.read_text().splitlines() == ["once"]


def _agent_udp(tmp_path: Path, port: int) -> tuple[socket.socket, bytes]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sock.connect(("127.0.0.1", port))
    return sock, agent_key(tmp_path)


def _ack(sock: socket.socket, key: bytes, cmd_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        frame = decode(sock.recv(4096), key)
        if frame.kind is Kind.ACK and frame.payload["id"] == cmd_id and frame.payload["done"]:
            return frame.payload
    raise AssertionError(f"no final ack for {cmd_id}")


def test_a_command_resent_after_an_agent_restart_is_answered_not_run_again(site, tmp_path):
    _poller, _cable, agent, marker, port = site
    sock, key = _agent_udp(tmp_path, port)
    run7 = Codec("arbiter", {"master": key}, 7)
    promote = {"id": "arbiter-7-1", "op": "promote", "args": {}}
    time.sleep(1.0)  # the agent is up
    sock.send(run7.make(Kind.POLL, "master", {"n": 1})[1])  # commands follow a poll of the same run
    sock.send(run7.make(Kind.COMMAND, "master", promote)[1])
    assert _ack(sock, key, "arbiter-7-1")["ok"]
    agent.kill()
    agent.wait()
    again = subprocess.Popen([sys.executable, "-m", "host_tools.agent", "--config", str(tmp_path / "agent.toml")],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        sock.send(run7.make(Kind.POLL, "master", {"n": 2})[1])
        sock.send(run7.make(Kind.COMMAND, "master", promote)[1])  # a resend: a new frame, the same id
        assert _ack(sock, key, "arbiter-7-1")["ok"]
        assert marker.read_text().splitlines() == ["once"]
    finally:
        again.kill()
        again.wait()


def test_the_boot_id_grows_across_restarts_even_with_the_clock_behind(tmp_path):
    (tmp_path / "site.key").write_text(secrets.token_hex(32))
    key = tmp_path / "key"
    key.write_bytes(agent_key(tmp_path))
    ahead = time.time_ns() // 1000 + 10**12  # as if the last start had a clock ten days ahead
    (tmp_path / "state.json").write_text(json.dumps({"boot": ahead, "commands": {}}))
    port = free_port()
    conf = tmp_path / "agent.toml"
    conf.write_text(f'[agent]\nname = "master"\nkey_file = "{key}"\nlisten = "127.0.0.1"\nport = {port}\n'
                    f'state_file = "{tmp_path / "state.json"}"\n')
    agent = subprocess.Popen([sys.executable, "-m", "host_tools.agent", "--config", str(conf)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock, k = _agent_udp(tmp_path, port)
        time.sleep(1.0)
        sock.send(Codec("arbiter", {"master": k}, 1).make(Kind.POLL, "master", {"n": 1})[1])
        assert decode(sock.recv(4096), k).boot_id == ahead + 1
        assert SlotStore(tmp_path / "state.json").load()["boot"] == ahead + 1
    finally:
        agent.kill()
        agent.wait()


def test_a_malformed_but_signed_reply_does_not_stop_the_agent(site, tmp_path):
    poller, _cable, _agent, _marker, port = site
    poll_for(poller, 1.0)  # the agent is up
    sock, key = _agent_udp(tmp_path, port)
    with poller._codec_lock:  # signed by the appliance itself, so only the content is wrong
        bad_frames = [poller._codec.make(Kind.REPLY, "master", bad)[1]
                      for bad in ({"re": "not a number"}, {"re": [1]}, {"re": None})]
        bad_frames += [poller._codec.make(Kind.POLL, "master", bad)[1] for bad in ({"n": "x"}, {}, {"n": -1})]
    for raw in bad_frames:
        sock.send(raw)
    time.sleep(0.2)
    poll_for(poller, 1.0)
    assert fresh(poller, Channel.LAN), "the agent must still answer on UDP"


def test_a_cable_nobody_reads_never_holds_up_the_writer(tmp_path):
    """A powered-off server's end of a socat cable reads nothing: once the buffers are full a
    blocking write would freeze the decision loop (seen on the rig after a power loss); the
    frames are lost instead, each write returning at once."""
    cable = Cable(tmp_path)
    cable.plug()
    port = SerialPort(str(cable.a), 115200, on_frame=lambda raw: None, on_error=lambda reason: None)
    port.start()
    try:
        deadline = time.monotonic() + 5
        while port._port is None:
            assert time.monotonic() < deadline, "the port did not open"
            time.sleep(0.01)
        slowest, t0 = 0.0, time.monotonic()
        for _ in range(1000):  # 1000 frames of ~300 bytes: several times what the cable buffers
            start = time.monotonic()
            port.write(b"p" * 300)
            slowest = max(slowest, time.monotonic() - start)
        assert slowest < 0.1 and time.monotonic() - t0 < 5.0, (slowest, time.monotonic() - t0)
    finally:
        port.close()
        cable.pull()


def test_the_agents_serial_reader_starts_when_its_owner_is_ready(tmp_path):
    """The agent answers a frame through its SerialPort object: a reader started inside the
    constructor handed over a poll before the agent held that object (AttributeError, the
    frame dropped, seen when a powered-on server's agent started)."""
    import serial
    from firmware.protocol import frame_serial
    cable = Cable(tmp_path)
    cable.plug()
    other_end = serial.Serial(str(cable.b), 115200)
    got: list[bytes] = []
    try:
        port = SerialPort(str(cable.a), 115200, on_frame=got.append, on_error=lambda reason: None)
        try:
            time.sleep(0.2)
            assert port._port is None and got == []  # not started: not even opened
            port.start()
            deadline = time.monotonic() + 5
            while port._port is None:
                assert time.monotonic() < deadline, "the port did not open"
                time.sleep(0.01)
            other_end.write(frame_serial(b"fresh"))
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                time.sleep(0.01)
            assert got == [b"fresh"]
        finally:
            port.close()
    finally:
        other_end.close()
        cable.pull()
