"""Plain data shared by the detector, the decision core, the executor and the daemon.

Observations are frozen snapshots taken once per cycle; ``None`` means *unknown* (start-up,
no data yet) and never counts as a change. Actions are plain data carried out by the
executor. Nothing here does I/O.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property


class Channel(str, enum.Enum):
    SERIAL = "serial"
    LAN = "lan"


class LinkState(str, enum.Enum):
    """Heartbeat semantics per link: UNKNOWN until init dead ends or a reply arrives."""

    UNKNOWN = "unknown"
    UP = "up"
    LATE = "late"  # no reply for warn_time: a warning, nothing more
    DEAD = "dead"  # no reply for dead_time
    ABSENT = "absent"  # the server has no such link configured


class Role(str, enum.Enum):
    PRIMARY = "primary"
    STANDBY = "standby"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Replication:
    """A server's replication view as its agent reports it; None where not known."""

    in_sync: bool | None = None
    lag_bytes: int | None = None
    lag_s: float | None = None
    peer_alive: bool | None = None  # a standby still receives the primary's stream
    sync_standbys: tuple[str, ...] | None = None  # a primary's: standbys holding every acknowledged commit


@dataclass(frozen=True)
class AgentReport:
    """The content of a server's latest valid reply."""

    role: Role
    healthy: bool
    vip: bool = False
    repl: Replication = field(default_factory=Replication)
    hears_primary: bool | None = None  # the standby's own peer heartbeat to the primary
    detail: str = ""
    reach: bool | None = None  # some ping target answered its last probe; None: none configured
    unhealthy_s: float | None = None  # how long the agent has seen its service fail; None: healthy


@dataclass(frozen=True)
class LinkObs:
    channel: Channel
    state: LinkState
    last_seen: float | None = None  # monotonic time of the last valid reply
    rtt_s: float | None = None


@dataclass(frozen=True)
class UpsObs:
    """One UPS as NUT reports it. ``reachable`` False: upsd or its driver is not answering."""

    name: str
    reachable: bool | None = None
    flags: frozenset[str] = frozenset()  # ups.status words: OL OB LB RB CHRG DISCHRG FSD ...
    charge: float | None = None
    runtime_s: float | None = None
    error: str = ""


@dataclass(frozen=True)
class ServerObs:
    name: str
    links: tuple[LinkObs, ...]
    report: AgentReport | None = None
    power_on: bool | None = None  # readback input (or UPS outlet state); None: no sensor
    relay_open: bool = False  # the fence relay holds the power off
    ups: UpsObs | None = None

    @cached_property
    def alive(self) -> bool | None:
        """True if any link is up or late; False only if every configured link is dead.
        Computed once per snapshot (decide asks it dozens of times a cycle); the snapshot is
        frozen, so the answer cannot go stale."""
        states = [link.state for link in self.links if link.state is not LinkState.ABSENT]
        if any(s in (LinkState.UP, LinkState.LATE) for s in states):
            return True
        if states and all(s is LinkState.DEAD for s in states):
            return False
        return None

    def link(self, channel: Channel) -> LinkObs | None:
        return next((link for link in self.links if link.channel is channel), None)


class RequestKind(str, enum.Enum):
    SWITCHOVER = "switchover"
    FAILOVER = "failover"
    MAINTENANCE_ON = "maintenance-on"
    MAINTENANCE_OFF = "maintenance-off"
    ACK = "ack"
    POWER_ON = "power-on"
    REBUILD = "rebuild"


@dataclass(frozen=True)
class Request:
    """An operator command, delivered to decide exactly once; ``id`` pairs it with its verdict."""

    kind: RequestKind
    server: str | None = None
    force: bool = False
    id: int = 0


@dataclass(frozen=True)
class Verdict:
    """decide's answer to one request: accepted or refused, and why."""

    accepted: bool
    reason: str


@dataclass(frozen=True)
class ActionResult:
    """What the executor learnt about an action since the last cycle."""

    action_id: str
    ok: bool
    detail: str = ""
    code: str = ""  # ActionError.code of a failure, e.g. "split-brain"


@dataclass(frozen=True)
class VipAudit:
    """Who answered ARP for the virtual IP in the appliance's latest audit, and when it began."""

    at: float  # monotonic
    macs: frozenset[str]


@dataclass(frozen=True)
class Observations:
    servers: tuple[ServerObs, ...]
    results: tuple[ActionResult, ...] = ()
    requests: tuple[Request, ...] = ()
    run: int = 0  # the daemon's boot id: actions issued by an earlier run are re-issued
    vip_audit: VipAudit | None = None  # None: no audit done yet (or vip.audit_interval = 0)
    reach: bool | None = None  # the appliance's own probe of the ping targets; None: not probed

    def server(self, name: str) -> ServerObs:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)

    def result(self, action_id: str) -> ActionResult | None:
        return next((r for r in self.results if r.action_id == action_id), None)


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Action:
    """Base of every action. ``ref`` is given by decide so a result matches its action."""

    ref: int = field(default=0, kw_only=True)

    @property
    def id(self) -> str:
        return f"{type(self).__name__}#{self.ref}"


@dataclass(frozen=True)
class Fence(Action):
    """Open the server's power relay and confirm the power is off (readback)."""

    server: str


@dataclass(frozen=True)
class HoldFence(Action):
    """Re-assert the relays of servers already fenced (after a restart); not a new fence."""

    servers: tuple[str, ...]


@dataclass(frozen=True)
class PowerOn(Action):
    server: str


@dataclass(frozen=True)
class Promote(Action):
    server: str


@dataclass(frozen=True)
class Demote(Action):
    server: str


@dataclass(frozen=True)
class Rejoin(Action):
    """Have a returning old primary rejoin as a standby of ``primary``."""

    server: str
    primary: str


@dataclass(frozen=True)
class DegradeSync(Action):
    """policy.sync_loss = degrade: the primary stops waiting for the synchronous standbys it lost."""

    server: str
    lost: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreSync(Action):
    """The primary names ``standbys`` synchronous again (they have caught up)."""

    server: str
    standbys: tuple[str, ...]


@dataclass(frozen=True)
class Rebuild(Action):
    """Make ``server`` a fresh copy of ``primary`` and its standby (when rejoin cannot)."""

    server: str
    primary: str


@dataclass(frozen=True)
class TakeIp(Action):
    server: str


@dataclass(frozen=True)
class ReleaseIp(Action):
    server: str


@dataclass(frozen=True)
class VerifyIp(Action):
    """ARP-probe the virtual IP: ok only if exactly the expected server's MAC answers."""

    expect: str


@dataclass(frozen=True)
class Backup(Action):
    server: str


@dataclass(frozen=True)
class Shutdown(Action):
    server: str


@dataclass(frozen=True)
class Notify(Action):
    event: str
    server: str = ""
    channel: str = ""
    text: str = ""


@dataclass(frozen=True)
class SetStatus(Action):
    """Status LEDs: ok, degraded, failed-over, fault."""

    status: str


# Actions that only report: allowed in observe-only mode, never waited for.
REPORTING = (Notify, SetStatus)
