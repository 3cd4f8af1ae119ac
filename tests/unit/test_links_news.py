"""A reply that changes a server's view of the primary wakes the loop at once: a failover
waits for the standby to stop hearing a silent primary (safety rule 4), and a reply comes
after the poll of its cycle, so decide saw it one cycle late, often two."""
from __future__ import annotations

import socket

from firmware.links import Poller
from firmware.model import Channel
from firmware.protocol import Codec, Kind, Reply, derive_key

K = {"standby": derive_key(b"m" * 32, "standby")}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_only_a_change_of_the_view_of_the_primary_wakes_the_loop():
    woken: list[int] = []
    poller = Poller(Codec("arbiter", K, 1), [("standby", "", 0, "127.0.0.1", _free_port())], bind=("127.0.0.1", 0),
                    on_news=lambda: woken.append(1))
    agent = Codec("standby", {"arbiter": K["standby"]}, 7)

    def reply(hears: bool, stream: bool, lag: int = 0) -> None:
        poller.poll_all()
        nonce = next(reversed(poller._links[("standby", Channel.LAN)].polls))
        raw = agent.make(Kind.REPLY, "arbiter", Reply(re=nonce, role="standby", healthy=True, hears_primary=hears,
                                                      peer_alive=stream, lag_bytes=lag).payload())[1]
        poller._receive("standby", Channel.LAN, raw)
    try:
        reply(True, True)
        assert woken == []  # the first report is no change
        reply(True, True, lag=4096)
        assert woken == []  # lag and the like change all the time: the next cycle sees them
        reply(False, True)
        assert woken == [1]  # stopped hearing the primary's heartbeat
        reply(False, True)
        assert woken == [1]
        reply(False, False)
        assert woken == [1, 1]  # and its replication stream
        assert poller.snapshot()["standby"][Channel.LAN].report.hears_primary is False
    finally:
        poller.close()
