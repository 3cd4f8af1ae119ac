"""The one table of events the appliance can raise: name, severity, default text.

Every sink (log, SNMP, the alarm relay, the hook command) is fed from this table through
``firmware.notify``. The MIB's notification names are derived from the event names
(``link-down`` -> ``arbLinkDown``) and its numbering from ``number``; keep both stable.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.IntEnum):
    """Ordered: the alarm relay follows the most severe unacknowledged event."""

    CLEAR = 0
    INFO = 1
    WARNING = 2
    MAJOR = 3
    CRITICAL = 4


@dataclass(frozen=True)
class EventType:
    number: int
    name: str
    severity: Severity
    text: str
    clears: tuple[str, ...] = ()  # raising this event clears these ones


_TABLE = (
    EventType(1, "arbiter-started", Severity.INFO, "arbiter started"),
    EventType(2, "link-down", Severity.WARNING, "heartbeat link lost; the other link still answers"),
    EventType(3, "link-up", Severity.CLEAR, "heartbeat link restored", ("link-down",)),
    EventType(4, "server-down", Severity.MAJOR, "server silent on every link"),
    EventType(5, "server-up", Severity.CLEAR, "server answers again", ("server-down",)),
    EventType(6, "failover-started", Severity.MAJOR, "automatic failover started"),
    EventType(7, "failover-completed", Severity.MAJOR, "failover completed; service on the new primary"),
    EventType(8, "failover-failed", Severity.CRITICAL, "failover failed; operator action needed"),
    EventType(9, "fence-done", Severity.MAJOR, "server fenced: power off confirmed"),
    EventType(10, "fence-failed", Severity.CRITICAL, "fence not confirmed; no promotion"),
    EventType(11, "switchover-started", Severity.INFO, "planned switchover started"),
    EventType(12, "switchover-completed", Severity.INFO, "planned switchover completed"),
    EventType(13, "switchover-failed", Severity.CRITICAL, "planned switchover failed"),
    EventType(14, "standby-lagging", Severity.MAJOR, "standby is behind the lag limit or not in sync"),
    EventType(15, "standby-in-sync", Severity.CLEAR, "standby is in sync again", ("standby-lagging",)),
    EventType(16, "split-brain-suspected", Severity.CRITICAL, "more than one host answers for the virtual IP"),
    EventType(17, "ups-on-battery", Severity.WARNING, "UPS on battery"),
    EventType(18, "ups-low-battery", Severity.CRITICAL, "UPS battery low"),
    EventType(19, "ups-power-restored", Severity.CLEAR, "UPS back on line power", ("ups-on-battery", "ups-low-battery")),
    EventType(20, "ups-monitoring-lost", Severity.WARNING, "UPS not monitored: upsd or its driver does not answer"),
    EventType(21, "ups-monitoring-restored", Severity.CLEAR, "UPS monitored again", ("ups-monitoring-lost",)),
    EventType(22, "config-reloaded", Severity.INFO, "configuration reloaded"),
    EventType(23, "config-rejected", Severity.WARNING, "new configuration rejected; old one kept"),
    EventType(24, "operator-needed", Severity.CRITICAL, "no safe automatic action; waiting for an operator"),
    EventType(25, "old-primary-returned", Severity.MAJOR, "fenced old primary answers again; kept out"),
    EventType(26, "frames-rejected", Severity.WARNING, "forged, replayed or damaged frames dropped"),
    EventType(27, "backup-requested", Severity.MAJOR, "backup hook started on the primary"),
    EventType(28, "shutdown-requested", Severity.CRITICAL, "orderly shutdown requested"),
    EventType(29, "maintenance-on", Severity.WARNING, "observe-only mode: decisions are reported, not acted on"),
    EventType(30, "maintenance-off", Severity.INFO, "observe-only mode ended", ("maintenance-on",)),
    EventType(31, "alarm-acknowledged", Severity.INFO, "alarm acknowledged by an operator"),
    EventType(32, "standby-down", Severity.MAJOR, "no standby is available to take over"),
    EventType(33, "power-restored-by-operator", Severity.INFO, "operator restored a server's power"),
    EventType(34, "service-degraded", Severity.WARNING,
              "the primary answers but its service health check fails; failover after policy.unhealthy_grace"),
    EventType(35, "service-restored", Severity.CLEAR, "the primary's service health check passes again",
              ("service-degraded",)),
    EventType(36, "clients-unreachable", Severity.WARNING,
              "the primary reaches no ping target while a standby does; failover after policy.reachability_grace"),
    EventType(37, "clients-reachable", Severity.CLEAR, "the primary reaches the ping targets again",
              ("clients-unreachable",)),
    EventType(38, "network-down", Severity.MAJOR,
              "no server reaches the ping targets: the clients' network failed, not the primary; no failover"),
    EventType(39, "network-up", Severity.CLEAR, "the ping targets answer again", ("network-down",)),
    EventType(40, "vip-rogue", Severity.MAJOR,
              "a server other than the primary holds the virtual IP; it is told to release it"),
    EventType(41, "vip-lost", Severity.MAJOR, "nobody answers for the virtual IP; the primary is told to take it again"),
    EventType(42, "vip-restored", Severity.CLEAR, "only the primary holds the virtual IP again", ("vip-rogue", "vip-lost")),
    EventType(43, "standby-available", Severity.CLEAR, "a standby may take over again", ("standby-down",)),
    # continuity: losing the synchronous standby, fencing levels, standby rebuild (numbered from 50)
    EventType(50, "durability-reduced", Severity.MAJOR, "synchronous standby lost: the primary's commits no longer"
              " wait for it (policy.sync_loss = degrade); no automatic failover until it is in sync again"),
    EventType(51, "durability-restored", Severity.CLEAR, "synchronous replication restored",
              ("durability-reduced", "commits-blocked")),
    EventType(52, "commits-blocked", Severity.CRITICAL, "synchronous standby lost: commits on the primary wait"
              " for it (policy.sync_loss = block)"),
    EventType(53, "fence-escalated", Severity.MAJOR, "fence level 1 (power relay) not confirmed; trying level 2"
              " (UPS outlet)"),
    EventType(54, "rebuild-started", Severity.MAJOR, "standby rebuild from the primary (pg_basebackup) started"),
    EventType(55, "rebuild-done", Severity.CLEAR, "standby rebuilt and replicating again", ("rebuild-failed",)),
    EventType(56, "rebuild-failed", Severity.CRITICAL, "standby rebuild failed; operator action needed"),
    # Watching the watcher: the appliance's periodic alive trap (SNMP only, alerts.heartbeat_interval;
    # its seq is the last alert's, so a manager also sees alerts it missed), and the agents' own
    # alert when no valid poll from the appliance has arrived for agent.unobserved_after.
    EventType(60, "heartbeat", Severity.INFO, "appliance alive"),
    EventType(61, "agent-unobserved", Severity.MAJOR, "no valid poll from the appliance: nobody watches this "
              "server"),
    EventType(62, "agent-observed", Severity.CLEAR, "the appliance polls this server again", ("agent-unobserved",)),
    # The appliance's own faults: an unexpected error in a cycle, a damaged file (safe halted mode).
    EventType(70, "internal-error", Severity.CRITICAL,
              "internal error or damaged file: the text names it; twice in a row, or a damaged file,"
              " halts the appliance safely until it is restarted"),
)

EVENTS: dict[str, EventType] = {e.name: e for e in _TABLE}

# Raised at most once per operation (a failover, a fence, a rebuild, an operator's order) or per
# real change of a condition, never once per cycle: not de-duplicated, so a second operation
# inside alerts.min_repeat_s (two rebuilds of one server, a failover and the failback an
# operator forces) is reported like the first.
ONCE_PER_OPERATION = frozenset({
    "failover-started", "failover-completed", "failover-failed", "fence-done", "fence-failed", "fence-escalated",
    "switchover-started", "switchover-completed", "switchover-failed", "durability-reduced", "durability-restored",
    "rebuild-started", "rebuild-done", "rebuild-failed", "power-restored-by-operator", "maintenance-on",
    "maintenance-off", "alarm-acknowledged"})

# Never held back by the rate limit: they cannot storm (criticals are de-duplicated where they
# repeat), and losing one in a link-flap storm would hide the one thing the operator must know.
UNLIMITED = frozenset(e.name for e in _TABLE if e.severity is Severity.CRITICAL) | (
    ONCE_PER_OPERATION - {"maintenance-on", "maintenance-off", "alarm-acknowledged", "power-restored-by-operator"})


def event_type(name: str) -> EventType:
    try:
        return EVENTS[name]
    except KeyError:
        raise KeyError(f"unknown event {name!r}; known: {', '.join(EVENTS)}") from None
