"""Leases: when the first live link runs out, the moment the daemon wakes to judge it."""
from __future__ import annotations

import math

from firmware.config import Timing
from firmware.detector import LEASE_MARGIN_S, first_lease_end, link_state
from firmware.model import Channel, LinkObs, LinkState, ServerObs

T = Timing()


def _server(name: str, *links: tuple[LinkState, float | None]) -> ServerObs:
    channels = (Channel.SERIAL, Channel.LAN)
    return ServerObs(name, tuple(LinkObs(c, s, seen) for c, (s, seen) in zip(channels, links)), None, True, False, None)


def test_the_first_live_lease_to_end_wakes_the_loop_just_after_it_ends():
    servers = [_server("master", (LinkState.UP, 10.00), (LinkState.LATE, 9.95)),
               _server("standby", (LinkState.UP, 10.01), (LinkState.UP, 10.02))]
    end = first_lease_end(servers, T)
    assert end == 9.95 + T.dead_time + LEASE_MARGIN_S
    assert link_state(9.95, end, 0.0, T) is LinkState.DEAD  # judged then, the link is dead
    assert link_state(9.95, end - 2 * LEASE_MARGIN_S, 0.0, T) is LinkState.LATE


def test_dead_unknown_absent_or_never_seen_links_wake_nobody():
    servers = [_server("master", (LinkState.DEAD, 1.0), (LinkState.DEAD, 1.1)),
               _server("standby", (LinkState.UNKNOWN, None), (LinkState.ABSENT, None))]
    assert first_lease_end(servers, T) == math.inf
    assert first_lease_end([], T) == math.inf
