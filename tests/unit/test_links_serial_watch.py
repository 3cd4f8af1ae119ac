"""The links reader registers a serial device with its epoll once, and again when the port was
closed and reopened (a reopened device is a new object, often with the old descriptor number)
or opens late (a cable plugged after start-up): either way its frames are read again."""
from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware.links import REOPEN_EVERY_S, Poller
from firmware.model import Channel
from firmware.protocol import Codec, Deframer, Kind, Reply, derive_key, frame_serial, poll_nonce

KEY = derive_key(b"m" * 32, "master")


class Server:
    """The far end of a pty cable: answers the appliance's polls as an agent would."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        self._codec = Codec("master", {"arbiter": KEY}, 7)
        self._deframer = Deframer()

    def answer_one(self, timeout: float = 2.0) -> None:
        """Read the next poll on the line and reply to it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.05)[0]:
                for raw in self._deframer.feed(os.read(self.master, 4096)):
                    frame = self._codec.read(raw, expect="arbiter")
                    if frame is not None and frame.kind is Kind.POLL:
                        reply = Reply(re=poll_nonce(frame.payload), role="primary", healthy=True)
                        os.write(self.master, frame_serial(self._codec.make(Kind.REPLY, "arbiter", reply.payload())[1]))
                        return
        raise AssertionError("no poll came over the cable")

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


def wait_for(what: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def heard(poller: Poller, server: Server) -> float:
    """Poll, let the server answer, and return when the reply was taken in."""
    before = poller.snapshot()["master"][Channel.SERIAL].last_seen
    poller.poll_all()
    server.answer_one()
    wait_for(lambda: poller.snapshot()["master"][Channel.SERIAL].last_seen != before)
    seen = poller.snapshot()["master"][Channel.SERIAL].last_seen
    assert seen is not None
    return seen


def test_a_reopened_port_is_read_again(server: Server) -> None:
    poller = Poller(Codec("arbiter", {"master": KEY}, 1), [("master", server.path, 115200, "", 0)],
                    bind=("127.0.0.1", 0))
    try:
        port = poller._serial["master"]
        first = heard(poller, server)
        old = port.device
        port._drop_port()  # what a failed write does: the reader must notice and reopen
        wait_for(lambda: port.device is not None and port.device is not old)
        assert heard(poller, server) > first
        assert poller.dropped() == {}
    finally:
        poller.close()


def test_a_port_that_appears_after_start_up_is_read(server: Server, tmp_path: Path) -> None:
    cable = tmp_path / "tty-arbiter"  # as socat's link on the rig: not there until the cable is
    poller = Poller(Codec("arbiter", {"master": KEY}, 1), [("master", str(cable), 115200, "", 0)],
                    bind=("127.0.0.1", 0))
    try:
        port = poller._serial["master"]
        time.sleep(0.1)
        assert port.device is None
        cable.symlink_to(server.path)
        wait_for(lambda: port.device is not None, timeout=REOPEN_EVERY_S + 2.0)
        assert heard(poller, server) is not None
    finally:
        poller.close()
