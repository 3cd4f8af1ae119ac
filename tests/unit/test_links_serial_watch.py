"""The links reader registers a serial device with its epoll once, and again when the port was
closed and reopened (a reopened device is a new object, often with the old descriptor number)
or opens late (a cable plugged after start-up): either way its frames are read again. A frame
a UART hands on a few bytes at a time is read in a few wake-ups, and not late."""
from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware.links import BITS_PER_BYTE, REOPEN_EVERY_S, Poller, SerialPort
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

    def answer_one(self, timeout: float = 2.0, uart: int = 0) -> float:
        """Read the next poll on the line and reply to it; when the reply's last byte went out.
        ``uart``: the reply goes out that many bytes at a time, each when a 115200-baud line
        would have carried it, as a UART's receive interrupts hand a frame on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.05)[0]:
                for raw in self._deframer.feed(os.read(self.master, 4096)):
                    frame = self._codec.read(raw, expect="arbiter")
                    if frame is not None and frame.kind is Kind.POLL:
                        reply = Reply(re=poll_nonce(frame.payload), role="primary", healthy=True, detail="x" * 150)
                        return self.send(frame_serial(self._codec.make(Kind.REPLY, "arbiter", reply.payload())[1]),
                                         uart)
        raise AssertionError("no poll came over the cable")

    def send(self, wire: bytes, uart: int = 0) -> float:
        if not uart:
            os.write(self.master, wire)
            return time.monotonic()
        due = time.monotonic()
        for at in range(0, len(wire), uart):
            part = wire[at:at + uart]
            due += len(part) * BITS_PER_BYTE / 115200
            time.sleep(max(0.0, due - time.monotonic()))
            os.write(self.master, part)
        return time.monotonic()

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


def counting(port: SerialPort) -> list[float]:
    """Count the port's reads (the reader calls the port's own read)."""
    reads: list[float] = []
    real = port.read

    def read(waited: bool = True) -> float:
        reads.append(time.monotonic())
        return real(waited)
    port.read = read  # type: ignore[method-assign]
    return reads


def test_a_frame_handed_on_in_parts_is_read_in_a_few_wake_ups_and_not_late(server: Server) -> None:
    """A reply of ~280 bytes, 8 bytes at a time at 115200 baud: 36 parts over 25 ms. The reader
    rests until the frame's rest can have come (by its header), so it reads it in a few
    wake-ups, where it read every part; and it reads its end as it comes, not later."""
    poller = Poller(Codec("arbiter", {"master": KEY}, 1), [("master", server.path, 115200, "", 0)],
                    bind=("127.0.0.1", 0))
    try:
        heard(poller, server)
        reads = counting(poller._serial["master"])
        late = []
        for _ in range(10):
            before = poller.snapshot()["master"][Channel.SERIAL].last_seen
            poller.poll_all()
            sent = server.answer_one(uart=8)
            wait_for(lambda: poller.snapshot()["master"][Channel.SERIAL].last_seen != before)
            late.append(poller.snapshot()["master"][Channel.SERIAL].last_seen - sent)
        assert poller.dropped() == {}
        assert len(reads) <= 10 * 5, f"{len(reads)} reads for 10 frames of 36 parts"
        assert sorted(late)[5] < 0.005, f"a frame's end read {sorted(late)[5] * 1000:.1f} ms after it came (median)"
    finally:
        poller.close()


def test_a_port_with_a_reader_of_its_own_rests_the_same_way(server: Server) -> None:
    """The agent's ports read on a thread of their own: the same rest between a frame's parts."""
    frames: list[tuple[float, bytes]] = []
    port = SerialPort(server.path, 115200, lambda raw: frames.append((time.monotonic(), raw)), lambda reason: None)
    reads = counting(port)
    port.start()
    try:
        codec = Codec("arbiter", {"master": KEY}, 1)
        late = []
        for n in range(10):
            sent = server.send(frame_serial(codec.make(Kind.COMMAND, "master", {"id": str(n), "op": "promote",
                                                                                "args": {"x": "y" * 150}})[1]), uart=8)
            wait_for(lambda: len(frames) > n)
            late.append(frames[n][0] - sent)
        assert len(reads) <= 10 * 5 + 3, f"{len(reads)} reads for 10 frames"  # + the waits for the first
        assert sorted(late)[5] < 0.005
    finally:
        port.close()
