"""Protocol v2 against the findings of an attack on v1 (issue 15): each test below names the
finding it covers and fails on the v1 code."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.errors import ProtocolError
from firmware.links import Poller
from firmware.model import Channel
from firmware.protocol import (MAX_BOOT_ID, MAX_BOOT_JUMP, ROLES, Codec, Frame, Kind, ReplayGuard, Reply, decode,
                               derive_key, encode)
from host_tools.agent import Agent
from host_tools.agent_config import parse
from host_tools.replication import ReplicationStatus

MASTER_KEY = b"m" * 32
K = {name: derive_key(MASTER_KEY, name) for name in ("master", "standby")}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def appliance(run: int = 1) -> Codec:
    return Codec("arbiter", K, run)


def agent_codec(name: str, boot: int = 7) -> Codec:
    return Codec(name, {"arbiter": K[name]}, boot)


class FakeAdapter:
    def __init__(self, status=None) -> None:
        self.promotes = 0
        self._status = status or (lambda: ReplicationStatus("standby", True, 0, 0.0, True))

    def status(self) -> ReplicationStatus:
        return self._status()

    def health(self, timeout: float) -> None:
        return None

    def promote(self) -> None:
        self.promotes += 1

    def demote(self) -> None:
        pass

    def rejoin(self, primary: str) -> None:
        pass


def make_agent(tmp: Path, adapter: FakeAdapter, name: str = "standby") -> Agent:
    key = tmp / f"{name}.key"
    key.write_bytes(K[name] + b"\n")
    cfg = parse({"agent": {"name": name, "key_file": str(key), "listen": "127.0.0.1", "port": _free_port(),
                           "state_file": str(tmp / f"{name}-state.json")}})
    return Agent(cfg, adapter)


class Wire:
    """What an agent sends back, decoded with the appliance's view of that server's key."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.raws: list[bytes] = []

    def __call__(self, raw: bytes) -> None:
        self.raws.append(raw)

    def acks(self) -> list[dict]:
        frames = [decode(r, K[self.server]) for r in self.raws]
        return [f.payload for f in frames if f.kind is Kind.ACK]


def wait_until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within time"
        time.sleep(0.01)


def command(codec: Codec, to: str, cmd_id: str, op: str = "promote") -> bytes:
    return codec.make(Kind.COMMAND, to, {"id": cmd_id, "op": op, "args": {}})[1]


def poll(codec: Codec, to: str, nonce: int = 1) -> bytes:
    return codec.make(Kind.POLL, to, {"n": nonce})[1]


# ---------------------------------------------------------------- finding 1: redirected commands


def test_1_a_command_for_one_server_is_refused_by_another():
    arb = appliance()
    promote_master = command(arb, "master", "arbiter-1-1")
    standby = agent_codec("standby")
    assert standby.read(promote_master) is None  # signed with master's key
    # even a server that held the master's key would refuse it: the frame names its receiver
    same_key = Codec("standby", {"arbiter": K["master"]}, 7)
    assert same_key.read(promote_master) is None and same_key.dropped == {"not-for-me": 1}
    assert agent_codec("master").read(promote_master).payload["id"] == "arbiter-1-1"


def test_1_an_agent_never_runs_a_command_forwarded_from_another_server(tmp_path):
    adapter = FakeAdapter()
    agent = make_agent(tmp_path, adapter, "standby")
    try:
        arb = appliance()
        wire = Wire("standby")
        agent._dispatch(poll(arb, "standby"), "arbiter", wire)
        agent._dispatch(command(arb, "master", "arbiter-1-1"), "arbiter", wire)
        time.sleep(0.2)
        assert adapter.promotes == 0 and wire.acks() == []
    finally:
        agent.close()


# ---------------------------------------------------------------- finding 2: acks of the wrong server


def _poller(**kw) -> Poller:
    servers = [("master", "", 0, "127.0.0.1", _free_port()), ("standby", "", 0, "127.0.0.1", _free_port())]
    return Poller(appliance(), servers, bind=("127.0.0.1", 0), **kw)


def test_2_an_ack_counts_only_from_the_server_the_command_went_to():
    poller = _poller()
    try:
        cmd_id = poller.send_command("master", "promote", {})
        ack = {"id": cmd_id, "done": True, "ok": True, "detail": ""}
        poller._receive("standby", Channel.LAN, agent_codec("standby").make(Kind.ACK, "arbiter", ack)[1])
        assert poller.wait_result(cmd_id, 0.0) is None and poller.dropped().get("ack-unmatched") == 1
        poller._receive("master", Channel.LAN, agent_codec("master").make(Kind.ACK, "arbiter", ack)[1])
        assert poller.wait_result(cmd_id, 0.0) == (True, "")
    finally:
        poller.close()


# ---------------------------------------------------------------- finding 3: stale truth


def _report_after_one_status_read(tmp_path: Path, adapter: FakeAdapter) -> Reply:
    agent = make_agent(tmp_path, adapter)
    try:
        agent.status = ReplicationStatus("standby", True, 0, 0.0, True)  # a good state read earlier
        agent.status_at = time.monotonic()
        thread = threading.Thread(target=agent._status_loop, daemon=True)
        thread.start()
        time.sleep(0.2)
        agent.stop.set()
        thread.join(2.0)
        assert not thread.is_alive()
        return agent._report(5)
    finally:
        agent.close()


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"), MemoryError(),
                                   KeyError("role"), ZeroDivisionError()])
def test_3_any_exception_in_the_status_loop_reports_unknown(tmp_path, error):
    def boom() -> ReplicationStatus:
        raise error
    report = _report_after_one_status_read(tmp_path, FakeAdapter(boom))
    assert (report.role, report.in_sync, report.lag_bytes, report.peer_alive) == ("unknown", None, None, None)
    assert "status failed" in report.detail


def test_3_a_status_older_than_a_few_intervals_is_unknown(tmp_path):
    agent = make_agent(tmp_path, FakeAdapter())
    try:
        agent.status = ReplicationStatus("standby", True, 0, 0.0, True)
        agent.status_at = time.monotonic()
        assert agent._report(1).in_sync is True
        agent.status_at = time.monotonic() - agent.stale_after - 0.01  # the status thread hangs
        stale = agent._report(2)
        assert stale.role == "unknown" and stale.in_sync is None and "old" in stale.detail
    finally:
        agent.close()


# ---------------------------------------------------------------- finding 4: one key, replay before sender


def test_4_a_server_cannot_lock_out_another_by_claiming_its_name():
    arb = appliance()
    forged = encode(Frame(Kind.REPLY, "standby", "arbiter", 2**64 - 1, 1, {}), K["master"])  # master's key
    assert arb.read(forged, expect="master") is None  # on the master's own link
    assert arb.read(forged, expect="standby") is None  # spoofed onto the standby's address
    assert arb.dropped == {"wrong-sender": 1, "bad-mac": 1}
    real = agent_codec("standby", boot=10**15)
    assert arb.read(real.make(Kind.REPLY, "arbiter", {})[1], expect="standby") is not None


def test_4_a_server_key_cannot_speak_as_the_appliance():
    fake_appliance = Codec("arbiter", {"standby": K["master"]}, 99)  # all a compromised master holds
    assert agent_codec("standby").read(command(fake_appliance, "standby", "x")) is None


def test_4_a_boot_id_cannot_jump_without_bound():
    arb = appliance()
    real = agent_codec("standby", boot=10**15)
    assert arb.read(real.make(Kind.REPLY, "arbiter", {})[1], "standby") is not None
    jump = Codec("standby", {"arbiter": K["standby"]}, 10**15 + MAX_BOOT_JUMP + 1)
    assert arb.read(jump.make(Kind.REPLY, "arbiter", {})[1], "standby") is None
    top = Codec("standby", {"arbiter": K["standby"]}, 2**64 - 1)
    assert arb.read(top.make(Kind.REPLY, "arbiter", {})[1], "standby") is None
    assert arb.dropped == {"bad-boot": 2}
    assert arb.read(real.make(Kind.REPLY, "arbiter", {})[1], "standby") is not None  # not locked out


# ---------------------------------------------------------------- finding 5: replies from an earlier run


def test_5_a_reply_recorded_in_one_appliance_run_is_refused_in_the_next():
    agent = agent_codec("master")
    first = _poller()
    try:
        first.poll_all()
        nonce = next(iter(first._links[("master", Channel.LAN)].polls))
        captured = agent.make(Kind.REPLY, "arbiter", Reply(re=nonce, healthy=True, role="primary").payload())[1]
    finally:
        first.close()
    second = Poller(appliance(run=2), [("master", "", 0, "127.0.0.1", _free_port())], bind=("127.0.0.1", 0))
    try:
        second.poll_all()  # poll numbers restart with the run; nonces do not
        second._receive("master", Channel.LAN, captured)
        assert second.snapshot()["master"][Channel.LAN].report is None
        assert second.dropped() == {"stale-reply": 1}
    finally:
        second.close()


# ---------------------------------------------------------------- finding 6: a captured command after a restart


def test_6_a_captured_command_never_run_is_refused_by_the_restarted_agent(tmp_path):
    adapter = FakeAdapter()
    arb = appliance(run=3)
    wire = Wire("standby")
    agent = make_agent(tmp_path, adapter)
    try:
        agent._dispatch(poll(arb, "standby"), "arbiter", wire)
        captured = command(arb, "standby", "arbiter-3-1")  # sent by the appliance, lost on the way
    finally:
        agent.close()
    again = make_agent(tmp_path, adapter)
    try:
        again._dispatch(captured, "arbiter", wire)  # before any poll: no fresh run seen
        again._dispatch(poll(arb, "standby"), "arbiter", wire)  # the appliance polls on
        again._dispatch(captured, "arbiter", wire)  # older than that poll
        time.sleep(0.2)
        assert adapter.promotes == 0 and wire.acks() == []
        assert again.codec.dropped == {"stale-run": 1, "replay": 1}
    finally:
        again.close()


def test_6_a_command_from_an_earlier_appliance_run_is_refused(tmp_path):
    adapter = FakeAdapter()
    agent = make_agent(tmp_path, adapter)
    try:
        old, new = appliance(run=3), appliance(run=4)
        wire = Wire("standby")
        captured = command(old, "standby", "arbiter-3-1")
        agent._dispatch(poll(new, "standby"), "arbiter", wire)
        agent._dispatch(captured, "arbiter", wire)
        time.sleep(0.2)
        assert adapter.promotes == 0 and wire.acks() == []
    finally:
        agent.close()


# ---------------------------------------------------------------- finding 7: resends


def test_7_a_command_whose_first_copies_are_lost_is_still_carried_out_and_acked_again(tmp_path):
    adapter = FakeAdapter()
    agent = make_agent(tmp_path, adapter)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(1.0)
    poller = Poller(appliance(), [("standby", "", 0, "127.0.0.1", sink.getsockname()[1])], bind=("127.0.0.1", 0))
    try:
        wire = Wire("standby")
        cmd_id = poller.send_command("standby", "promote", {})
        frames = []
        for _ in range(40):  # ~31 poll cycles sank a v1 command whose copies were lost
            poller.poll_all()
        while True:
            try:
                frames.append(sink.recv(4096))
            except (TimeoutError, socket.timeout):
                break
        polls = [r for r in frames if decode(r, K["standby"]).kind is Kind.POLL]
        copies = [r for r in frames if decode(r, K["standby"]).kind is Kind.COMMAND]
        assert len(copies) == 41 and len({decode(r, K["standby"]).seq for r in copies}) == 41
        agent._dispatch(polls[-2], "arbiter", wire)  # the last poll cycle but one
        agent._dispatch(copies[-2], "arbiter", wire)  # its command copy; all earlier copies were lost
        wait_until(lambda: adapter.promotes == 1 and len(wire.acks()) == 2)
        agent._dispatch(copies[-1], "arbiter", wire)  # the final ack was lost: the resend gets it again
        assert wire.acks()[-1] == {"id": cmd_id, "done": True, "ok": True, "detail": "promote done; role now primary"}
        assert adapter.promotes == 1
        for raw in wire.raws:
            poller._receive("standby", Channel.LAN, raw)
        assert poller.wait_result(cmd_id, 0.0) == (True, "promote done; role now primary")
    finally:
        poller.close()
        sink.close()
        agent.close()


# ---------------------------------------------------------------- finding 10: LAN flood


def test_10_a_flood_from_a_server_address_is_limited_before_the_mac():
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder.bind(("127.0.0.1", 0))
    address, port = flooder.getsockname()
    poller = Poller(appliance(), [("master", "", 0, address, port)], bind=("127.0.0.1", 0), source_rate=100.0)
    try:
        garbage = encode(Frame(Kind.REPLY, "master", "arbiter", 1, 1, {"re": 1}), b"x" * 32)  # well formed, bad MAC
        target = poller._sock.getsockname()
        started = time.monotonic()
        for _ in range(5000):
            flooder.sendto(garbage, target)
        time.sleep(0.3)
        elapsed = time.monotonic() - started
        dropped = poller.dropped()
        assert dropped.get("rate-limited", 0) > 0
        assert dropped.get("bad-mac", 0) <= poller.limit.burst + 100.0 * elapsed + 1  # MACs computed: bounded
    finally:
        poller.close()
        flooder.close()


# ---------------------------------------------------------------- version


def test_a_version_1_frame_is_refused_naming_both_versions():
    v1 = b"BA\x01\x03\x06master" + (1).to_bytes(8, "big") * 2 + b"\x00\x02{}" + b"\x00" * 32
    arb = appliance()
    assert arb.read(v1, "master") is None
    assert arb.last_error.reason == "bad-version"
    assert "version 1" in arb.last_error.detail and "version 2" in arb.last_error.detail


def test_keys_differ_per_server_and_pair_and_are_symmetric_for_a_pair():
    keys = {derive_key(MASTER_KEY, "master"), derive_key(MASTER_KEY, "standby"),
            derive_key(MASTER_KEY, "master", "standby"), derive_key(b"other" * 4, "master")}
    assert len(keys) == 4 and all(len(k) == 64 for k in keys)
    assert derive_key(MASTER_KEY, "standby", "master") == derive_key(MASTER_KEY, "master", "standby")


def test_agent_state_file_written_by_v1_is_read(tmp_path):
    (tmp_path / "standby-state.json").write_text(json.dumps({"boot": 5, "commands": {"a-1-1": {
        "done": True, "ok": True, "detail": ""}}}))
    agent = make_agent(tmp_path, FakeAdapter())
    try:
        assert "a-1-1" in agent.commands and agent.boot_id > 5
    finally:
        agent.close()


# ---------------------------------------------------------------- properties of the new fields

U64 = st.integers(0, 2**64 - 1)
OPT_BOOL = st.none() | st.booleans()
IDS = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=32)


@settings(max_examples=300, deadline=None)
@given(st.builds(Reply, re=U64, healthy=st.booleans(), role=st.sampled_from(ROLES), vip=st.booleans(),
                 in_sync=OPT_BOOL, lag_bytes=st.none() | st.integers(0, 2**63),
                 lag_s=st.none() | st.floats(0, 1e9, allow_nan=False), peer_alive=OPT_BOOL,
                 hears_primary=OPT_BOOL, detail=st.text(max_size=200), reach=OPT_BOOL,
                 sync_standbys=st.none() | st.lists(IDS, max_size=3).map(tuple)))
def test_a_reply_survives_the_wire_field_for_field(reply):
    key = derive_key(MASTER_KEY, "standby")
    raw = encode(Frame(Kind.REPLY, "standby", "arbiter", 1, 1, reply.payload()), key)
    assert Reply.parse(decode(raw, key).payload) == reply


@settings(max_examples=300, deadline=None)
@given(sender=IDS, receiver=IDS, me=IDS, boot=U64, seq=U64)
def test_a_frame_is_read_only_by_its_receiver_and_only_from_its_link(sender, receiver, me, boot, seq):
    raw = encode(Frame(Kind.POLL, sender, receiver, boot, seq, {"n": 1}), b"k" * 32)
    codec = Codec(me, {sender: b"k" * 32}, 1)
    got = codec.read(raw, expect=sender)
    accepted = me == receiver and me != sender and boot <= MAX_BOOT_ID
    assert (got is not None) == accepted
    assert Codec(me, {sender: b"k" * 32}, 1).read(raw, expect=sender + "x") is None  # another link: refused
    if got is not None:
        assert (got.sender, got.receiver, got.boot_id, got.seq) == (sender, receiver, boot, seq)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3) | st.integers(2**47, 2**49) | U64, st.integers(0, 200)), max_size=60))
def test_the_replay_guard_never_accepts_a_frame_twice_nor_an_older_or_unbounded_boot(frames):
    guard, seen, top_boot = ReplayGuard(window=16), set(), -1
    for boot, seq in frames:
        try:
            guard.accept(Frame(Kind.REPLY, "s", "arbiter", boot, seq))
        except ProtocolError as exc:
            assert exc.reason in ("replay", "bad-boot")
            continue
        assert (boot, seq) not in seen and boot >= top_boot and boot <= MAX_BOOT_ID
        assert top_boot < 0 or boot - top_boot <= MAX_BOOT_JUMP
        seen.add((boot, seq))
        top_boot = boot


# ---------------------------------------------------------------- keys in the configs


def _site_file(tmp: Path, key: bytes = MASTER_KEY) -> Path:
    (tmp / "site.key").write_bytes(key + b"\n")
    conf = tmp / "arbiter.toml"
    conf.write_text(f'[site]\nname = "s"\nkey_file = "{tmp / "site.key"}"\n[vip]\naddress = "192.0.2.100/24"\n'
                    'verify = "none"\n[policy]\nfencing = "none"\n'
                    '[[servers]]\nname = "master"\naddress = "192.0.2.1"\n'
                    '[[servers]]\nname = "standby"\naddress = "192.0.2.2"\n')
    return conf


def test_derive_key_prints_a_servers_key_and_a_pairs_key(tmp_path, capsys):
    from firmware.daemon import main
    conf = _site_file(tmp_path)
    assert main(["--config", str(conf), "derive-key", "master"]) == 0
    assert capsys.readouterr().out.strip() == K["master"].decode()
    assert main(["--config", str(conf), "derive-key", "standby", "master"]) == 0
    assert capsys.readouterr().out.strip() == derive_key(MASTER_KEY, "master", "standby").decode()
    assert main(["--config", str(conf), "derive-key", "nobody"]) == 2
    assert "'nobody' is not a server" in capsys.readouterr().err
    (tmp_path / "site.key").write_bytes(b"short\n")
    assert main(["--config", str(conf), "derive-key", "master"]) == 1  # bad config (a short master key)
    err = capsys.readouterr().err
    assert "site.key_file = " in err and "key is 5 bytes, minimum 16" in err


def test_agent_check_config_names_the_key_that_is_missing(tmp_path, capsys):
    from host_tools.agent import main
    (tmp_path / "own.key").write_bytes(K["standby"])
    conf = tmp_path / "agent.toml"
    conf.write_text(f'[agent]\nname = "standby"\nkey_file = "{tmp_path / "own.key"}"\n'
                    f'state_file = "{tmp_path / "state.json"}"\n'
                    f'[[peers]]\nname = "master"\nkey_file = "{tmp_path / "pair.key"}"\naddress = "192.0.2.1"\n')
    assert main(["check-config", str(conf)]) == 1  # bad config
    assert f"peers[0].key_file = '{tmp_path / 'pair.key'}': cannot read" in capsys.readouterr().err
    (tmp_path / "pair.key").write_bytes(derive_key(MASTER_KEY, "master", "standby"))
    assert main(["check-config", str(conf)]) == 0


def test_agent_config_refuses_a_peer_named_like_itself_or_the_appliance():
    from firmware.errors import ConfigError
    with pytest.raises(ConfigError, match="'standby' is used twice"):
        parse({"agent": {"name": "standby", "key_file": "/k", "state_file": "/s"},
               "peers": [{"name": "standby", "key_file": "/p", "address": "192.0.2.1"}]})


def test_10_the_read_budget_bounds_the_datagrams_handled_a_second():
    from firmware.links import ReadBudget
    budget = ReadBudget(per_s=5000, tick=0.02)  # 100 a tick
    started = time.monotonic()
    for _ in range(1000):
        budget.spend()
    assert time.monotonic() - started >= 0.17 and budget.pauses >= 9


@pytest.mark.parametrize("sync", [[""], ["x" * 33], [1], ["é"], ["s"] * 9, "standby"])
def test_a_reply_naming_its_synchronous_standbys_wrongly_is_refused(sync):
    with pytest.raises(ProtocolError) as exc:
        Reply.parse({"re": 1, "healthy": True, "role": "primary", "repl": {"sync": sync}})
    assert exc.value.reason == "bad-reply" and "sync" in str(exc.value)


def test_a_command_handler_is_woken_by_the_acknowledgement():
    """The executor's thread waits on the poller; the reader's acknowledgement wakes it at
    once (it looked every millisecond before), and no acknowledgement is a None at the end."""
    poller = _poller()
    try:
        cmd_id = poller.send_command("master", "promote", {})
        ack = agent_codec("master").make(Kind.ACK, "arbiter", {"id": cmd_id, "done": True, "ok": True, "detail": "x"})
        arrived: list[float] = []

        def agent_answers() -> None:
            time.sleep(0.1)
            arrived.append(time.monotonic())
            poller._receive("master", Channel.LAN, ack[1])
        threading.Thread(target=agent_answers, daemon=True).start()
        assert poller.wait_result(cmd_id, 5.0) == (True, "x")
        assert time.monotonic() - arrived[0] < 0.05
        t0 = time.monotonic()
        assert poller.wait_result(poller.send_command("master", "take_ip", {}), 0.2) is None
        assert 0.2 <= time.monotonic() - t0 < 1.0
    finally:
        poller.close()
