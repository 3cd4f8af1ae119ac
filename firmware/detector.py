"""Failure detection with Heartbeat's semantics, as leases on a monotonic clock.

A link is UP while ``now < last_seen + warn_time``, LATE (a warning) until
``last_seen + dead_time``, then DEAD. Before any reply, a link is UNKNOWN for ``init_dead``
after the appliance started, so a boot raises no false alarm; after that a link that never
answered is DEAD. A server is dead only when every configured link is dead
(``ServerObs.alive``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from firmware.config import Config, Timing
from firmware.model import AgentReport, Channel, LinkObs, LinkState, ServerObs, UpsObs


@dataclass(frozen=True)
class Stall:
    """The appliance's own loop stood still (SIGSTOP, a starved board) from its cycle at
    ``began`` to its cycle at ``ended``."""
    began: float
    ended: float


def link_state(last_seen: float | None, now: float, started_at: float, t: Timing,
               stall: Stall | None = None) -> LinkState:
    """``stall``: the silence over it is the appliance's, not the server's, so a lease that
    still ran when the stall began restarts at its end, and the server must stay silent a
    full dead time after it to be dead. A link already dead when the stall began stays
    dead: the stall is no news from it (reviving it made a powered-off old primary look
    alive, and its last report, primary with the virtual IP, looked like a split brain)."""
    last_seen = lease_start(last_seen, t, stall)
    if last_seen is None:
        return LinkState.UNKNOWN if now - started_at < t.init_dead else LinkState.DEAD
    silent = now - last_seen
    if silent >= t.dead_time:
        return LinkState.DEAD
    if silent >= t.warn_time:
        return LinkState.LATE
    return LinkState.UP


LEASE_MARGIN_S = 0.001  # a lease ends at last_seen + dead_time: look just after, not just before


def lease_start(last_seen: float | None, t: Timing, stall: Stall | None = None) -> float | None:
    """When a link's lease began: its last reply, or the end of a stall that began while the
    lease still ran (see link_state)."""
    if last_seen is not None and stall is not None and stall.began - last_seen < t.dead_time:
        return max(last_seen, stall.ended)
    return last_seen


def first_lease_end(servers: Iterable[ServerObs], t: Timing, stall: Stall | None = None) -> float:
    """When the first link now up or late turns dead, if nothing arrives before (inf: none
    will). The daemon wakes then, so a server's death is decided as its last lease ends;
    while every server answers, each lease ends after the next poll and this changes nothing.
    ``stall``: the one link_state was given; its leases end a dead time after it (counted
    from the last reply, the lease ended in the past, and the loop spun at once, polling
    every server each time, for a dead time after every stall of a loaded appliance)."""
    starts = (lease_start(link.last_seen, t, stall) for srv in servers for link in srv.links
              if link.state in (LinkState.UP, LinkState.LATE))
    return min((s + t.dead_time + LEASE_MARGIN_S for s in starts if s is not None), default=math.inf)


def latest_report(records: Mapping[Channel, object]) -> AgentReport | None:
    """The report from whichever link answered last."""
    best = max(
        (r for r in records.values() if getattr(r, "report", None) is not None),
        key=lambda r: r.last_seen or 0.0,
        default=None,
    )
    return best.report if best is not None else None


def observe_servers(cfg: Config, records: Mapping[str, Mapping[Channel, object]], now: float,
                    started_at: float, power: Mapping[str, tuple[bool, bool | None]],
                    ups: Mapping[str, UpsObs], stall: Stall | None = None) -> tuple[ServerObs, ...]:
    """Turn the links' raw records into one frozen snapshot per server.

    ``records[server][channel]`` has ``last_seen``, ``rtt_s`` and ``report`` (links.LinkRecord);
    ``power[server]`` is (relay cut, power readback).
    """
    out = []
    for srv in cfg.servers:
        recs = records.get(srv.name, {})
        links = []
        for channel, configured in ((Channel.SERIAL, bool(srv.serial)), (Channel.LAN, bool(srv.address))):
            rec = recs.get(channel)
            if not configured:
                links.append(LinkObs(channel, LinkState.ABSENT))
                continue
            last = getattr(rec, "last_seen", None)
            links.append(LinkObs(channel, link_state(last, now, started_at, cfg.timing, stall), last,
                                 getattr(rec, "rtt_s", None)))
        relay_cut, power_on = power.get(srv.name, (False, None))
        out.append(ServerObs(srv.name, tuple(links), latest_report(recs), power_on, relay_cut,
                             ups.get(srv.name)))
    return tuple(out)
