"""A reply that changes a server's view of the primary wakes the loop at once: a failover
waits for the standby to stop hearing a silent primary (safety rule 4), and a reply comes
after the poll of its cycle, so decide saw it one cycle late, often two."""
from __future__ import annotations

import socket
import time

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


def test_a_hurried_poll_goes_on_the_lan_alone_and_only_to_the_servers_named():
    """A serial line carries one poll and its reply an interval at up to 80 % of its speed."""
    keys = {n: derive_key(b"m" * 32, n) for n in ("master", "standby")}
    poller = Poller(Codec("arbiter", keys, 1), [(n, "loop://", 115200, "127.0.0.1", _free_port())
                                                for n in ("master", "standby")], bind=("127.0.0.1", 0))
    sent: list[tuple[str, Channel]] = []
    poller._send = lambda name, channel, raw: sent.append((name, channel))  # type: ignore[method-assign]
    try:
        poller.poll_lan(["standby"])
        assert sent == [("standby", Channel.LAN)]
        sent.clear()
        poller.poll_all()
        assert sorted(sent) == sorted((n, c) for n in ("master", "standby") for c in (Channel.SERIAL, Channel.LAN))
    finally:
        poller.close()


def test_a_serial_link_given_as_a_pyserial_url_is_read():
    """A URL (rfc2217://, socket://, loop://) has a reader thread of its own: the poller starts it."""
    keys = {"standby": derive_key(b"m" * 32, "standby")}
    poller = Poller(Codec("arbiter", keys, 1), [("standby", "loop://", 115200, "", 0)], bind=("127.0.0.1", 0))
    try:
        poller.poll_all()  # loop:// hands the poll back: read, and refused (not a reply from the standby)
        for _ in range(200):
            if poller.dropped():
                break
            time.sleep(0.01)
        assert poller.dropped()
    finally:
        poller.close()
