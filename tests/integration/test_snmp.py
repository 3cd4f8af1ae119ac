"""SNMP alerts against net-snmp's real snmptrapd on a high port on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config import Alerts, Config, Site, SnmpAgent, SnmpManager, Vip
from firmware.events import EVENTS
from firmware.mib import SERVER_COLUMNS, SERVER_TABLE_ARC, notification_name, status_oid
from firmware.notify import Alert
from firmware.site_state import Phase, State
from firmware.snmp import SnmpSink, engine_id
from firmware.snmp_agent import SnmpResponder
from hil.snmptrapd import MIB_DIR, TrapReceiver, stage_mibs
from tests.unit.test_web import VIEW

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


# arbiterd's own process: firmware.footprint first, as firmware.daemon imports it
SEND_AS_ARBITERD = """
from firmware import footprint
import json, sys, time
from pathlib import Path
from firmware.config import Alerts, Config, Site, SnmpManager, Vip
from firmware.events import EVENTS
from firmware.notify import Alert
from firmware.snmp import SnmpSink
tmp, sha1_port, sha256_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
managers = [SnmpManager(host="127.0.0.1", port=port, version="v3", notify=kind, user="arbuser", auth_protocol=auth,
                        priv_protocol=priv, auth_key_file=str(tmp / "auth"), priv_key_file=str(tmp / "priv"))
            for port, auth, priv in ((sha1_port, "sha", "aes"), (sha256_port, "sha256", "aes256"))
            for kind in ("inform", "trap")]
cfg = Config(site=Site(name="arbsnmp", key_file=str(tmp / "key")), servers=(), vip=Vip(address="192.0.2.10/24"),
             alerts=Alerts(managers=managers, inform_timeout=0.3, inform_retries=1))
sink = SnmpSink(cfg, tmp)
e = EVENTS["server-down"]
sink.send(Alert(9, e.name, e.severity, "db1", "lan", e.text, time.time()))
deadline = time.monotonic() + 10.0
while sum(sink.pending().values()) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"pending": sink.pending(), "hashlib": repr(sys.modules.get("_hashlib", "never imported")),
                  "libcrypto": "libcrypto" in Path("/proc/self/maps").read_text()}))
sink.close()
"""


def test_v3_authpriv_goes_out_from_a_process_without_openssl_as_arbiterd_runs(tmp_path: Path, port: int) -> None:
    """arbiterd keeps OpenSSL's hashlib out of its process (firmware.footprint): SNMPv3's
    authentication and key localisation then run on CPython's own hashes (privacy on
    cryptography's ciphers). An inform (SHA-1, AES-128) and a trap (SHA-256, AES-256) from
    such a process decode with the right user."""
    cfg = site_config(tmp_path, [])
    users = [("arbuser", AUTH, PRIV, ""), ("arbuser", AUTH, PRIV, engine_id(cfg).hex())]
    strong = free_udp_port()
    with TrapReceiver(tmp_path / "sha1", port, v3_users=users) as sha1, \
            TrapReceiver(tmp_path / "sha256", strong, v3_users=users, v3_protocols=("SHA-256", "AES-256")) as sha256:
        sent = subprocess.run([sys.executable, "-c", SEND_AS_ARBITERD, str(tmp_path), str(port), str(strong)],
                              cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr[-2000:]
        got = sha1.wait_for(2, 5.0) + sha256.wait_for(2, 5.0)
    result = json.loads(sent.stdout.strip().splitlines()[-1])
    assert result["hashlib"] == "None" and result["libcrypto"] is False  # as in arbiterd: no OpenSSL hashing
    assert result["pending"] == {f"127.0.0.1:{port}": 0, f"127.0.0.1:{strong}": 0}  # both informs acknowledged
    assert sorted(n["pdu"] for n in got) == ["INFORM", "INFORM", "TRAP2", "TRAP2"]
    assert all(n["version"] == "v3" and n["user"] == "arbuser" and n["event"] == "arbServerDown" for n in got)


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


def test_v3_sha256_aes256_traps_and_informs(tmp_path: Path, port: int, sinks: list[SnmpSink]) -> None:
    strong = [dataclasses.replace(v3(tmp_path, port, kind), auth_protocol="sha256", priv_protocol="aes256")
              for kind in ("inform", "trap")]
    cfg = site_config(tmp_path, strong)
    users = [("arbuser", AUTH, PRIV, ""), ("arbuser", AUTH, PRIV, engine_id(cfg).hex())]
    with TrapReceiver(tmp_path / "mgr", port, v3_users=users, v3_protocols=("SHA-256", "AES-256")) as rx:
        sinks.append(SnmpSink(cfg, tmp_path))
        sinks[0].send(alert(3, "fence-done"))
        sinks[0].heartbeat(alert(3, "heartbeat", server="", channel=""))
        got = rx.wait_for(4, 5.0)
    assert sorted((n["pdu"], n["event"]) for n in got) == [("INFORM", "arbFenceDone"), ("INFORM", "arbHeartbeat"),
                                                           ("TRAP2", "arbFenceDone"), ("TRAP2", "arbHeartbeat")]
    assert all(n["version"] == "v3" and n["user"] == "arbuser" for n in got)
    assert sinks[0].pending() == {f"127.0.0.1:{port}": 0}  # the heartbeat never went through the outbox


# ---------------------------------------------------------------- polling the status objects

POLL_AUTH, POLL_PRIV, COMMUNITY = "poll-auth-pass", "poll-priv-pass", "ro-community-7"


@pytest.fixture
def responder(tmp_path: Path, port: int) -> Iterator[dict]:
    for name, value in (("community", COMMUNITY), ("auth", POLL_AUTH), ("priv", POLL_PRIV)):
        (tmp_path / f"poll-{name}").write_text(value + "\n")
    cfg = SnmpAgent(address="127.0.0.1", port=port, community_file=str(tmp_path / "poll-community"),
                    user="arbmon", auth_key_file=str(tmp_path / "poll-auth"), priv_key_file=str(tmp_path / "poll-priv"))
    box = {"view": VIEW}
    r = SnmpResponder(cfg, "1.3.6.1.4.1.64400", lambda: box["view"], b"\x80\x00\xfa\x10\x04poll-test")
    r.start()
    try:
        yield {"port": port, "box": box}
    finally:
        r.close()


def net_snmp(tool: str, port: int, *args: str, auth: tuple[str, ...] = ("-v2c", "-c", COMMUNITY)) -> str:
    done = subprocess.run([tool, *auth, "-t", "1", "-r", "1", "-M", str(MIB_DIR), "-m", "BILLMASTER-ARBITER-MIB",
                           f"127.0.0.1:{port}", *args], capture_output=True, text=True, timeout=20, check=False)
    return done.stdout + done.stderr


V3 = ("-v3", "-l", "authPriv", "-u", "arbmon", "-a", "SHA-256", "-A", POLL_AUTH, "-x", "AES-256", "-X", POLL_PRIV)


def test_snmpget_and_snmpwalk_v2c_read_the_status_objects(responder: dict) -> None:
    port = responder["port"]
    out = net_snmp("snmpget", port, "BILLMASTER-ARBITER-MIB::arbPhase.0", "BILLMASTER-ARBITER-MIB::arbPrimary.0",
                   "BILLMASTER-ARBITER-MIB::arbFailovers.0")
    assert "arbPhase.0 = INTEGER: normal(2)" in out and 'arbPrimary.0 = STRING: master' in out
    assert "arbFailovers.0 = Counter32: 2" in out
    walk = net_snmp("snmpwalk", port, "BILLMASTER-ARBITER-MIB::arbStatus")
    for line in ("arbServerName.2 = STRING: standby", "arbServerRole.1 = INTEGER: primary(1)",
                 "arbServerRole.2 = INTEGER: standby(2)", "arbServerLanLink.1 = INTEGER: dead(4)",
                 "arbServerSerialLink.1 = INTEGER: up(2)", "arbServerInSync.2 = INTEGER: true(1)",
                 "arbServerLagBytes.2 = Gauge32: 0", "arbAlarmSeverity.0 = INTEGER: warning(2)"):
        assert line in walk
    bulk = net_snmp("snmpbulkwalk", port, "BILLMASTER-ARBITER-MIB::arbServerTable")
    assert bulk.count("arbServer") >= 16
    responder["box"]["view"] = dataclasses.replace(VIEW, state=State(phase=Phase.TAKING_IP, primary="standby"))
    out = net_snmp("snmpget", port, "BILLMASTER-ARBITER-MIB::arbPhase.0", "BILLMASTER-ARBITER-MIB::arbPrimary.0")
    assert "takingIp(5)" in out and "STRING: standby" in out


def test_a_walk_ends_with_end_of_mib_view_as_rfc_3416_says(responder: dict) -> None:
    """Nothing follows arbStatus in the view a poller is given: the GETNEXT past its last object
    answers with the name asked for and endOfMibView (RFC 3416, 4.2.2), which snmpwalk prints as
    "No more variables left in this MIB View" and still exits 0; v1 gets noSuchName instead
    (RFC 3584), printed "End of MIB"."""
    port = responder["port"]
    last = f".{status_oid('1.3.6.1.4.1.64400')}.{SERVER_TABLE_ARC}.1.{SERVER_COLUMNS[-1][1]}.2"

    def run(tool: str, version: str, oid: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, version, "-c", COMMUNITY, "-On", "-t", "1", "-r", "1", f"127.0.0.1:{port}", oid],
                              capture_output=True, text=True, timeout=20, check=False)

    walk = run("snmpwalk", "-v2c", f".{status_oid('1.3.6.1.4.1.64400')}")
    assert walk.returncode == 0 and walk.stdout.splitlines()[-2].startswith(f"{last} = Gauge32: ")
    assert walk.stdout.splitlines()[-1] == (f"{last} = No more variables left in this MIB View "
                                            "(It is past the end of the MIB tree)")
    after_last = run("snmpgetnext", "-v2c", last)
    assert after_last.stdout.strip().startswith(f"{last} = No more variables left in this MIB View")
    assert "End of MIB" in run("snmpwalk", "-v1", f".{status_oid('1.3.6.1.4.1.64400')}").stdout


def test_v3_sha256_aes256_reads_and_nothing_else_does(responder: dict) -> None:
    port = responder["port"]
    assert "INTEGER: normal(2)" in net_snmp("snmpget", port, "BILLMASTER-ARBITER-MIB::arbPhase.0", auth=V3)
    assert "arbServerName.1 = STRING: master" in net_snmp("snmpwalk", port, "BILLMASTER-ARBITER-MIB::arbStatus",
                                                         auth=V3)
    wrong_priv = tuple("wrong-priv-pass" if a == POLL_PRIV else a for a in V3)
    assert "normal" not in net_snmp("snmpget", port, "BILLMASTER-ARBITER-MIB::arbPhase.0", auth=wrong_priv)
    no_priv = ("-v3", "-l", "authNoPriv", "-u", "arbmon", "-a", "SHA-256", "-A", POLL_AUTH)
    assert "normal" not in net_snmp("snmpget", port, "BILLMASTER-ARBITER-MIB::arbPhase.0", auth=no_priv)
    assert "Timeout" in net_snmp("snmpget", port, "BILLMASTER-ARBITER-MIB::arbPhase.0",
                                 auth=("-v2c", "-c", "public"))
    outside = net_snmp("snmpget", port, "1.3.6.1.2.1.1.1.0")
    assert "No Such Object" in outside


def test_staging_ignores_the_machines_net_snmp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other net-snmp tools on the machine write /var/lib/snmp; a damaged file there is not our MIB's fault."""
    damaged = tmp_path / "persist"
    damaged.mkdir()
    (damaged / "snmpapp.conf").write_text("half a line of garbage\n")
    monkeypatch.setenv("SNMP_PERSISTENT_DIR", str(damaged))
    monkeypatch.setenv("SNMPCONFPATH", str(damaged))
    stage_mibs(tmp_path / "staged", MIB_DIR, "BILLMASTER-ARBITER-MIB::arbLinkDown")


def test_the_dispatchers_timer_stops_once_every_alert_is_out_and_runs_again_for_the_next(
        tmp_path: Path, port: int, sinks: list[SnmpSink]) -> None:
    """pysnmp's dispatcher, once open, ticks ten times a second for ever: its timer stops when
    nothing is in flight, and the next trap still arrives (informs: the outbox test)."""
    cfg = site_config(tmp_path, [SnmpManager(host="127.0.0.1", port=port)])
    with TrapReceiver(tmp_path / "mgr", port) as rx:
        sinks.append(SnmpSink(cfg, tmp_path))
        for seq in (1, 2):
            sinks[0].send(alert(seq, "server-down"))
            assert len(rx.wait_for(seq, 10.0)) == seq
            deadline = time.monotonic() + 5.0
            while sinks[0].engine.transport_dispatcher.loopingcall is not None:
                assert time.monotonic() < deadline, "the dispatcher's timer still runs with nothing to send"
                time.sleep(0.05)
