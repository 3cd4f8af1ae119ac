"""SNMP alerts against net-snmp's real snmptrapd on a high port on 127.0.0.1."""
from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config import Alerts, Config, Site, SnmpManager, Vip
from firmware.events import EVENTS
from firmware.mib import notification_name
from firmware.notify import Alert
from firmware.snmp import SnmpSink, engine_id
from hil.snmptrapd import MIB_DIR, TrapReceiver, stage_mibs

AUTH, PRIV = "arb-auth-pass", "arb-priv-pass"


def free_udp_port() -> int:
    """A random high port nobody is bound to right now (other suites run in parallel)."""
    for _ in range(50):
        port = random.randint(30000, 39999)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port in 30000..39999")


def site_config(tmp_path: Path, managers: list[SnmpManager]) -> Config:
    (tmp_path / "auth").write_text(AUTH + "\n")
    (tmp_path / "priv").write_text(PRIV + "\n")
    return Config(site=Site(name="arbsnmp", key_file=str(tmp_path / "key")), servers=(),
                  vip=Vip(address="192.0.2.10/24"),
                  alerts=Alerts(managers=managers, inform_timeout=0.3, inform_retries=1))


def v3(tmp_path: Path, port: int, notify: str) -> SnmpManager:
    return SnmpManager(host="127.0.0.1", port=port, version="v3", notify=notify, user="arbuser",
                       auth_key_file=str(tmp_path / "auth"), priv_key_file=str(tmp_path / "priv"))


def alert(seq: int, event: str, server: str = "db1", channel: str = "lan") -> Alert:
    e = EVENTS[event]
    return Alert(seq, event, e.severity, server, channel, f"{e.text} #{seq}", time.time())


@pytest.fixture
def port() -> int:
    return free_udp_port()


@pytest.fixture
def sinks() -> Iterator[list[SnmpSink]]:
    made: list[SnmpSink] = []
    try:
        yield made
    finally:
        for s in made:
            s.close()


def test_every_event_arrives_as_v2c_trap_with_names(tmp_path: Path, port: int, sinks: list[SnmpSink]) -> None:
    cfg = site_config(tmp_path, [SnmpManager(host="127.0.0.1", port=port)])
    with TrapReceiver(tmp_path / "mgr", port) as rx:
        sinks.append(SnmpSink(cfg, tmp_path))
        events = sorted(EVENTS.values(), key=lambda e: e.number)
        for seq, e in enumerate(events, 1):
            sinks[0].send(alert(seq, e.name))
        got = rx.wait_for(len(events), 10.0)
    assert len(got) == len(events)
    by_seq = {int(n["varbinds"]["arbEventSeq.0"]): n for n in got}
    for seq, e in enumerate(events, 1):
        n = by_seq[seq]
        assert n["pdu"] == "TRAP2" and n["version"] == "v2c" and n["community"] == "public"
        assert n["event"] == notification_name(e.name)
        assert n["varbinds"] == {
            "arbEventSeq.0": str(seq),
            "arbEventSeverity.0": f"{e.severity.name.lower()}({int(e.severity)})",
            "arbEventServer.0": "db1",
            "arbEventChannel.0": "lan",
            "arbEventText.0": f"{e.text} #{seq}",
        }


def test_v3_authpriv_informs_decode_with_the_right_user(tmp_path: Path, port: int,
                                                         sinks: list[SnmpSink]) -> None:
    cfg = site_config(tmp_path, [v3(tmp_path, port, "inform"), v3(tmp_path, port, "trap")])
    users = [("arbuser", AUTH, PRIV, ""), ("arbuser", AUTH, PRIV, engine_id(cfg).hex())]
    with TrapReceiver(tmp_path / "mgr", port, v3_users=users) as rx:
        sinks.append(SnmpSink(cfg, tmp_path))
        sinks[0].send(alert(7, "server-down"))
        got = rx.wait_for(2, 5.0)
    assert sorted(n["pdu"] for n in got) == ["INFORM", "TRAP2"]
    for n in got:
        assert n["version"] == "v3" and n["user"] == "arbuser"
        assert n["event"] == "arbServerDown"
        assert n["varbinds"]["arbEventSeverity.0"] == "major(3)"
    assert sinks[0].pending() == {f"127.0.0.1:{port}": 0}


def test_wrong_priv_key_does_not_decode(tmp_path: Path, port: int, sinks: list[SnmpSink]) -> None:
    cfg = site_config(tmp_path, [v3(tmp_path, port, "inform"), v3(tmp_path, port, "trap")])
    users = [("arbuser", AUTH, "another-priv-pass", ""),
             ("arbuser", AUTH, "another-priv-pass", engine_id(cfg).hex())]
    with TrapReceiver(tmp_path / "mgr", port, v3_users=users) as rx:
        sinks.append(SnmpSink(cfg, tmp_path))
        sinks[0].send(alert(1, "fence-failed"))
        time.sleep(1.0)
        assert rx.received() == []
        assert "error parsing ScopedPDU" in rx.log_text()  # decryption failed
    assert sinks[0].pending() == {f"127.0.0.1:{port}": 1}


def test_informs_queue_while_manager_down_survive_restart_and_arrive_once_in_order(
        tmp_path: Path, port: int, sinks: list[SnmpSink]) -> None:
    cfg = site_config(tmp_path, [v3(tmp_path, port, "inform")])
    rx = TrapReceiver(tmp_path / "mgr", port, v3_users=[("arbuser", AUTH, PRIV, "")])
    try:
        rx.start()
        sinks.append(SnmpSink(cfg, tmp_path, backoff_max=0.5))
        sinks[0].send(alert(1, "link-down"))
        assert len(rx.wait_for(1, 5.0)) == 1
        rx.stop()
        for seq in (2, 3, 4):
            sinks[0].send(alert(seq, "link-up" if seq % 2 else "link-down"))
        time.sleep(1.0)
        assert sinks[0].pending() == {f"127.0.0.1:{port}": 3}
        sinks[0].close()  # the appliance restarts while the manager is still down
        restarted = SnmpSink(cfg, tmp_path, backoff_max=0.5)
        sinks.append(restarted)
        assert restarted.pending() == {f"127.0.0.1:{port}": 3}
        restarted.send(alert(5, "server-down"))
        rx.start()
        got = rx.wait_for(5, 10.0)
        time.sleep(0.5)  # anything sent twice would show up now
        got = rx.received()
    finally:
        rx.stop()
    assert [int(n["varbinds"]["arbEventSeq.0"]) for n in got] == [1, 2, 3, 4, 5]
    assert [n["pdu"] for n in got] == ["INFORM"] * 5
    assert restarted.pending() == {f"127.0.0.1:{port}": 0}



def test_the_shipped_mib_folder_loads_and_any_rejected_line_is_an_error(tmp_path: Path) -> None:
    probe = "BILLMASTER-ARBITER-MIB::arbLinkDown"
    stage_mibs(tmp_path / "shipped", MIB_DIR, probe)  # our MIB and the base modules, nothing dropped
    for module, anchor in (("BILLMASTER-ARBITER-MIB", "IMPORTS"), ("SNMPv2-TC", "IMPORTS")):
        src = tmp_path / f"src-{module}"
        src.mkdir()
        for f in MIB_DIR.iterdir():
            (src / f.name).write_text(f.read_text())
        (src / module).write_text((MIB_DIR / module).read_text().replace(anchor, f"{anchor}\n    stray words here\n", 1))
        with pytest.raises(RuntimeError, match="net-snmp rejects"):
            stage_mibs(tmp_path / f"dest-{module}", src, probe)
