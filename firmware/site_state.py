"""The appliance's persisted view of the site, and the phases it moves through.

Transitions (``decide`` is the only code that makes them; ``TRANSITIONS`` below is this
diagram as code, checked at every change of phase, and a test keeps the two the same)::

    STARTING --all servers known--> NORMAL
    NORMAL --primary dead, safe target--> FENCING --power off confirmed--> PROMOTING
    NORMAL --primary answers but its service fails past a grace (health, ping nodes)--> FENCING
    NORMAL --operator failover --force--> FENCING
    NORMAL --the same with policy.fencing = none (no fence)--> PROMOTING
    NORMAL --operator/UPS switchover--> DEMOTING --old primary demoted, IP released--> SYNCING
    NORMAL --virtual IP audit: a stranger, a second primary or a holder that keeps it--> HALTED
    SYNCING --target has everything--> PROMOTING
    PROMOTING --target is primary--> TAKING_IP --address added--> VERIFYING
    TAKING_IP --address added, vip.verify = none--> NORMAL
    VERIFYING --only the target's MAC answers ARP--> NORMAL (hold-down after a failover)
    VERIFYING --ARP check failed, tries left--> VERIFYING
    VERIFYING --more than one MAC answers (split brain suspected)--> HALTED
    FENCING/PROMOTING/TAKING_IP/VERIFYING/DEMOTING/SYNCING --failure or timeout--> HALTED
    FENCING/PROMOTING/TAKING_IP/VERIFYING/DEMOTING --appliance restart: action again--> SAME
    HALTED --operator failover/switchover--> FENCING/PROMOTING/DEMOTING
    HALTED --maintenance off--> NORMAL

The state is saved (atomically) before the actions of a transition run, so a restarted
appliance resumes the phase it was in: it re-issues that phase's action, never an earlier
one, and never flips back.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from firmware.codec import decode, encode
from firmware.errors import TransitionError


class Phase(str, enum.Enum):
    STARTING = "starting"
    NORMAL = "normal"
    FENCING = "fencing"
    PROMOTING = "promoting"
    TAKING_IP = "taking-ip"
    VERIFYING = "verifying"
    DEMOTING = "demoting"
    SYNCING = "syncing"
    HALTED = "halted"


class CondKind(enum.StrEnum):
    """What an active condition is about. Each is raised once and cleared once."""

    SERVER_DOWN = "server-down"
    LINK_DOWN = "link-down"
    STANDBY_LAGGING = "standby-lagging"
    STANDBY_DOWN = "standby-down"  # no standby may take over
    SPLIT = "split"  # a server other than the primary claims the primary role
    OPERATOR_NEEDED = "operator-needed"
    LATE = "late"  # a reply later than warn time: a log warning only, no alert, no LED
    COMMITS_BLOCKED = "commits-blocked"  # policy.sync_loss = block: the primary's commits wait
    DURABILITY_REDUCED = "durability-reduced"  # policy.sync_loss = degrade acted: one copy fewer
    SERVICE_DEGRADED = "service-degraded"  # the primary's service health check fails
    CLIENTS_UNREACHABLE = "clients-unreachable"  # the primary reaches no ping target, a standby does
    NETWORK_DOWN = "network-down"  # no server reaches the ping targets
    VIP_ROGUE = "vip-rogue"  # a server other than the primary holds the virtual IP
    VIP_LOST = "vip-lost"  # nobody answers ARP for the virtual IP


@dataclass(frozen=True, order=True)
class Condition:
    """An active alert condition: its kind, and the server and channel it is about ('' for none)."""

    kind: CondKind
    server: str = ""
    channel: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.server}{'/' + self.channel if self.channel else ''}"


BUSY = frozenset({Phase.FENCING, Phase.PROMOTING, Phase.TAKING_IP, Phase.VERIFYING,
                  Phase.DEMOTING, Phase.SYNCING})

# Every allowed change of phase (the diagram above); a pair that is not here is a bug.
TRANSITIONS: frozenset[tuple[Phase, Phase]] = frozenset({
    (Phase.STARTING, Phase.NORMAL),
    (Phase.NORMAL, Phase.HALTED),  # the virtual IP audit finds split brain
    (Phase.NORMAL, Phase.FENCING), (Phase.NORMAL, Phase.PROMOTING), (Phase.NORMAL, Phase.DEMOTING),
    (Phase.FENCING, Phase.PROMOTING),
    (Phase.DEMOTING, Phase.SYNCING), (Phase.SYNCING, Phase.PROMOTING),
    (Phase.PROMOTING, Phase.TAKING_IP), (Phase.TAKING_IP, Phase.VERIFYING), (Phase.TAKING_IP, Phase.NORMAL),
    (Phase.VERIFYING, Phase.NORMAL), (Phase.VERIFYING, Phase.VERIFYING),
    *((busy, Phase.HALTED) for busy in BUSY),
    *((busy, busy) for busy in BUSY - {Phase.SYNCING}),  # resumed: SYNCING waits again, issues nothing
    (Phase.HALTED, Phase.FENCING), (Phase.HALTED, Phase.PROMOTING), (Phase.HALTED, Phase.DEMOTING),
    (Phase.HALTED, Phase.NORMAL),
})


def check_transition(old: Phase, new: Phase) -> None:
    """Refuse a change of phase that is not in TRANSITIONS (a bug in decide, never data)."""
    if (old, new) not in TRANSITIONS:
        raise TransitionError(f"phase {old.value} -> {new.value} is not in site_state.TRANSITIONS")


class OpKind(enum.StrEnum):
    FAILOVER = "failover"  # automatic: the primary is dead or does not serve
    MANUAL_FAILOVER = "manual-failover"  # arbiterctl failover --force
    SWITCHOVER = "switchover"  # planned: demote, sync, promote (operator or UPS policy)


@dataclass(frozen=True)
class Operation:
    """A failover or switchover: begun in NORMAL or HALTED, carried through the busy phases,
    and kept after it ends as the last one (status shows its target)."""

    kind: OpKind
    old: str  # the primary being replaced
    target: str
    tries: int = 0  # ARP checks of the takeover made so far (VERIFYING)

    @property
    def failover(self) -> bool:
        """Ends with a hold-down and counts as a failover; a switchover does neither."""
        return self.kind is not OpKind.SWITCHOVER


@dataclass(frozen=True)
class UpsSeen:
    """One server's last UPS reading, kept to raise UPS events on real changes only."""

    server: str
    reachable: bool | None
    flags: tuple[str, ...]
    charge: float | None
    runtime_s: float | None


@dataclass(frozen=True)
class SavedAlert:
    """An alert of the decision that made a state, saved with it (sent again after a restart)."""

    event: str
    server: str = ""
    channel: str = ""
    text: str = ""


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.STARTING
    since: float = 0.0  # monotonic time the phase began
    primary: str | None = None
    op: Operation | None = None  # the running operation, or the last one; None before the first
    fenced: tuple[str, ...] = ()  # servers held powered off / kept out of service
    fenced_at: float | None = None  # monotonic time the last fence was confirmed
    rejoining: tuple[str, ...] = ()  # powered on by an operator, to rejoin as standbys
    returned: tuple[str, ...] = ()  # fenced servers seen answering again (alerted once)
    hold_down_until: float | None = None
    maintenance: bool = False
    awaiting: tuple[str, ...] = ()  # ids of the actions this phase waits for
    results: tuple[tuple[str, bool, str], ...] = ()  # (id, ok, detail) of those that reported
    issued_run: int = 0  # the daemon run that issued them
    seen_run: int = 0  # the daemon run that last decided
    next_ref: int = 1
    conditions: tuple[Condition, ...] = ()  # active alert conditions, sorted
    ups_seen: tuple[UpsSeen, ...] = ()
    ups_handled: str = ""  # the UPS intent already acted on
    led: str = ""
    # the alerts of the decision that made this state, saved with it: an appliance killed before
    # they reached the notifier sends them again when it restarts (a duplicate at worst)
    alerts: tuple[SavedAlert, ...] = ()
    failovers: int = 0
    reason: str = ""
    # continuity (firmware.decide.continuity): losing and regaining the synchronous standby, rebuilds
    sync_seen: str = ""  # the primary last seen with a synchronous standby: only a loss after that counts
    sync_lost_since: float | None = None  # monotonic time it was first seen without one
    degraded: tuple[str, ...] = ()  # standbys it stopped waiting for: no automatic failover meanwhile
    resync: tuple[str, ...] = ()  # standbys to name synchronous again once they have caught up
    pending: tuple[tuple[str, str, str, float], ...] = ()  # (action id, what, server, issued at) of tracked actions
    # the primary's service spells, (server, monotonic start); None while none runs
    unhealthy: tuple[str, float] | None = None  # its health check failing
    restoring: tuple[str, float] | None = None  # healthy again while service-degraded is raised
    unreachable: tuple[str, float] | None = None  # it reaches no ping target while a standby does
    vip_audit_at: float = 0.0  # start of the last ARP audit of the virtual IP that was judged
    vip_released: tuple[tuple[str, float], ...] = ()  # rogue holders told to release it, and when

    def evolve(self, **changes: Any) -> State:
        """``dataclasses.replace`` at a fifth of its cost: decide changes the state several
        times a cycle, 25 cycles a second, and replace() calls __init__ with all 37 fields.
        State has no __post_init__ and no field with init=False (a test holds it to that), so
        a copy of the fields with the changes applied is the very value replace() builds."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"State has no field {', '.join(sorted(unknown))}")
        new = object.__new__(State)
        new.__dict__.update(self.__dict__, **changes)  # frozen forbids setattr, not this
        return new

    def to_dict(self) -> dict[str, Any]:
        return encode(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> State:
        """Reads what this version writes and what earlier versions wrote (conditions as
        "kind:server/channel" text or [kind, server, channel], UPS readings and alerts as
        lists, the operation as loose old/target/operation/verify_tries keys). A value of the
        wrong type is a TypeError or ValueError naming the field."""
        state = decode(cls, _upgraded(data))
        if state.phase in BUSY and state.op is None:
            raise ValueError(f"op: phase {state.phase.value} is part of an operation, and none is saved")
        return dataclasses.replace(state, conditions=tuple(sorted(state.conditions)))

    def substance(self) -> State:
        """The state without its reason text, its late links and the stamp of the last ARP audit
        judged: those alone are not worth an SD card write. A late reply under packet loss comes
        and goes many times an hour; an audit is judged every vip.audit_interval (a write a
        second), and what it finds is saved as conditions, actions and vip_released, while an
        older stamp after a restart only lets the next audit be judged, as it would be anyway."""
        return self.evolve(reason="", vip_audit_at=0.0,
                           conditions=tuple(c for c in self.conditions if c.kind is not CondKind.LATE))

    def rebased(self, now: float, hold_down: float) -> State:
        """Monotonic stamps from another kernel boot mean nothing: restart every timer now.

        A running hold-down restarts in full, the safe direction: it only delays automatics.
        """
        hold = None if self.hold_down_until is None else now + hold_down
        lost = None if self.sync_lost_since is None else now
        pending = tuple((i, w, s, now) for i, w, s, _ in self.pending)
        return dataclasses.replace(self, since=now, hold_down_until=hold, sync_lost_since=lost, pending=pending, fenced_at=None,
                                   unhealthy=None, restoring=None, unreachable=None, vip_audit_at=0.0,
                                   vip_released=tuple((n, now) for n, _ in self.vip_released))


_FIELDS = frozenset(f.name for f in dataclasses.fields(State))


def _upgraded(data: dict[str, Any]) -> dict[str, Any]:
    """State files of earlier versions in today's shape: the codec then reads them all."""
    if not isinstance(data, dict):
        raise TypeError(f"{data!r:.60} is not an object")
    out = dict(data)
    lists = {"conditions": ("kind", "server", "channel"), "alerts": ("event", "server", "channel", "text"),
             "ups_seen": ("server", "reachable", "flags", "charge", "runtime_s")}
    for key, names in lists.items():
        items = out.get(key, [])
        if isinstance(items, list):
            out[key] = [_as_object(item, names) for item in items]
    if "op" not in out and out.get("operation"):  # the loose keys themselves are left to the codec to drop
        out["op"] = {"kind": out["operation"], "old": out.get("old"), "target": out.get("target"),
                     "tries": out.get("verify_tries", 0)}
    return out


def _as_object(item: Any, names: tuple[str, ...]) -> Any:
    if isinstance(item, str) and names[0] == "kind":  # "kind:server/channel"
        kind, _, where = item.partition(":")
        server, _, channel = where.partition("/")
        return {"kind": kind, "server": server, "channel": channel}
    if isinstance(item, list) and len(item) == len(names):
        return dict(zip(names, item))
    return item  # an object already, or damaged: the codec says which field
