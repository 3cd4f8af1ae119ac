"""What the agent reports right after it acknowledged a command: the role a successful
promote or demote proves, without a read of the server before the ack (it held a failover's
promote 4 to 12 ms on the rig); never what the command has just changed (a read begun in the
middle of a promotion), never a role a failed command did not reach."""
from __future__ import annotations

import threading

import pytest

from firmware.errors import ActionError
from firmware.protocol import Reply
from host_tools.agent import Agent, status_after
from host_tools.replication import ReplicationStatus
from tests.unit.test_protocol_v2 import Wire, appliance, command, make_agent, poll, wait_until

STANDBY = ReplicationStatus("standby", True, 0, 0.0, True)
PRIMARY = ReplicationStatus("primary", True, 0, 0.0, True, sync_standbys=("master",))


class Server:
    """A replicated server whose role the ops change, counting the status reads; a read can be
    held (``hold``) until the test lets it go, to see what a late read does."""

    def __init__(self, role: str = "standby", fail: str = "") -> None:
        self.role = role
        self.fail = fail  # the op that raises
        self.reads = 0
        self.hold: list[threading.Event] = []  # each read takes the first gate, if any, and waits on it
        self.reading = threading.Event()  # set while a held read waits

    def status(self) -> ReplicationStatus:
        self.reads += 1
        said = STANDBY if self.role == "standby" else PRIMARY
        if self.hold:
            gate = self.hold.pop(0)
            self.reading.set()
            gate.wait(5.0)
        return said

    def health(self, timeout: float) -> None:
        return None

    def _op(self, op: str, role: str) -> None:
        if self.fail == op:
            raise ActionError(f"{op} failed on purpose")
        self.role = role

    def promote(self) -> None:
        self._op("promote", "primary")

    def demote(self) -> None:
        self._op("demote", "standby")

    def rejoin(self, primary: str) -> None:
        self._op("rejoin", "standby")

    def sync_degrade(self, lost: list[str]) -> str:
        return "synchronous_standby_names 'db2' -> ''"


@pytest.fixture
def agent_of(tmp_path):
    """An agent in front of a fake server, closed after the test."""
    made: list[Agent] = []

    def make(server: Server, name: str = "standby") -> Agent:
        made.append(make_agent(tmp_path, server, name))
        return made[-1]
    yield make
    for agent in made:
        agent.close()


def _order(agent: Agent, name: str, cmd_id: str, op: str) -> list[dict]:
    """The appliance polls, then orders ``op``; the acks once the command is done."""
    arb, wire = appliance(), Wire(name)
    agent._dispatch(poll(arb, name), "arbiter", wire)
    agent._dispatch(command(arb, name, cmd_id, op), "arbiter", wire)
    wait_until(lambda: any(a["done"] for a in wire.acks()))
    return wire.acks()


def _report(agent: Agent) -> Reply:
    return agent._report(9)


@pytest.mark.parametrize("op, role", [("promote", "primary"), ("demote", "standby")])
def test_a_role_changing_op_proves_its_role_and_nothing_more(op, role):
    st = status_after(op)
    assert st is not None and st.role == role
    assert (st.in_sync, st.lag_bytes, st.lag_s, st.peer_alive, st.sync_standbys) == (None,) * 5


@pytest.mark.parametrize("op", ["rejoin", "rebuild", "sync_degrade", "sync_restore", "take_ip", "release_ip",
                                "backup", "shutdown"])
def test_other_ops_prove_nothing_the_report_could_say(op):
    """rejoin leaves a DRBD primary primary; a sync change moves the primary's list of synchronous
    standbys: those are read before the ack."""
    assert status_after(op) is None


def test_a_promote_is_acknowledged_without_a_read_and_the_next_reply_says_primary(agent_of):
    server = Server()
    agent = agent_of(server)
    reads = server.reads
    acks = _order(agent, "standby", "arbiter-1-1", "promote")
    assert acks[-1] == {"id": "arbiter-1-1", "done": True, "ok": True, "detail": "promote done; role now primary"}
    assert server.reads == reads  # no read between the promote's return and the ack
    reply = _report(agent)
    assert reply.role == "primary" and reply.in_sync is None and reply.sync_standbys is None
    assert agent._status_due.is_set()  # the full read comes at once


def test_a_read_begun_during_the_promotion_never_overwrites_the_acknowledged_role(tmp_path):
    """The status thread reads the server while it is still in recovery; that read comes back
    after the ack and is dropped; the read after it (the server as it is now) is kept."""
    server = Server()
    agent = make_agent(tmp_path, server)
    first, second = threading.Event(), threading.Event()
    loop = threading.Thread(target=agent._status_loop, daemon=True)
    try:
        server.hold = [first, second]
        server.role = "standby"
        loop.start()
        assert server.reading.wait(5.0)  # a read under way, the server still a standby
        server.reading.clear()
        acks = _order(agent, "standby", "arbiter-1-1", "promote")
        assert acks[-1]["ok"] is True and _report(agent).role == "primary"
        first.set()  # the read of the standby ends after the ack
        assert server.reading.wait(5.0)  # the next read has begun: the late one was handled
        assert _report(agent).role == "primary"
        second.set()
        wait_until(lambda: _report(agent).sync_standbys == ("master",))  # the full read replaced the partial one
        assert _report(agent).role == "primary"
    finally:
        first.set()
        second.set()
        agent.close()
        loop.join(2.0)


def test_a_failed_promote_never_reports_primary_and_has_the_server_read_at_once(agent_of):
    server = Server(fail="promote")
    agent = agent_of(server)
    acks = _order(agent, "standby", "arbiter-1-1", "promote")
    assert acks[-1]["ok"] is False and "failed on purpose" in acks[-1]["detail"]
    assert _report(agent).role == "standby"
    assert agent._status_due.is_set()


def test_a_demote_reports_standby_as_soon_as_it_is_acknowledged(agent_of):
    """A switchover's demoted primary must not go on saying primary (a rogue primary to decide)."""
    server = Server(role="primary")
    agent = agent_of(server, "master")
    assert _report(agent).role == "primary"
    acks = _order(agent, "master", "arbiter-1-1", "demote")
    assert acks[-1]["ok"] is True and _report(agent).role == "standby"


def test_a_sync_change_is_read_before_it_is_acknowledged(agent_of):
    server = Server(role="primary")
    agent = agent_of(server, "master")
    reads = server.reads
    acks = _order(agent, "master", "arbiter-1-1", "sync_degrade")
    assert acks[-1]["ok"] is True and acks[-1]["detail"].endswith("; role now primary")
    assert server.reads == reads + 1
    assert _report(agent).sync_standbys == ("master",)  # what the read said, not unknown
