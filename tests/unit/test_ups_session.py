"""The UPS watch keeps its connection to upsd from poll to poll, and a kept connection that
upsd dropped (a restart) costs no reading. A small stand-in for upsd counts connections;
the watch against the real upsd is in tests/integration/test_ups.py."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from firmware.ups import UpsWatch

ANSWERS = {b"LIST UPS": b'BEGIN LIST UPS\nUPS u "stand-in"\nEND LIST UPS\n',
           b"LIST VAR u": b'BEGIN LIST VAR u\nVAR u battery.charge "100"\nVAR u ups.status "OL"\nEND LIST VAR u\n'}


class StandInUpsd:
    """Answers LIST UPS and LIST VAR u on every connection; ``hang_up_after`` readings per
    connection, then closes it as a restarting upsd would."""

    def __init__(self, hang_up_after: int = 0) -> None:
        self.connections = 0
        self._hang_up_after = hang_up_after
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(4)
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        readings, buffer = 0, b""
        with conn:
            while True:
                try:
                    data = conn.recv(1024)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line not in ANSWERS:
                        return  # LOGOUT, or anything else: the end
                    conn.sendall(ANSWERS[line])
                    readings += line == b"LIST VAR u"
                    if readings == self._hang_up_after:
                        return

    def close(self) -> None:
        """No more connections: shutdown ends the accept under way, which close alone does not."""
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()


@pytest.fixture
def upsd() -> Iterator[StandInUpsd]:
    server = StandInUpsd()
    yield server
    server.close()


def test_one_connection_serves_every_poll(upsd):
    watch = UpsWatch({"master": f"u@127.0.0.1:{upsd.port}", "standby": f"u@127.0.0.1:{upsd.port}"}, timeout=1.0)
    for _ in range(5):
        got = watch.poll()
        assert all(o.reachable and o.flags == frozenset({"OL"}) and o.charge == 100 for o in got.values())
    assert upsd.connections == 1
    watch.close()


def test_a_connection_upsd_dropped_costs_no_reading():
    upsd = StandInUpsd(hang_up_after=1)
    try:
        watch = UpsWatch({"master": f"u@127.0.0.1:{upsd.port}"}, timeout=1.0)
        for _ in range(3):
            assert watch.poll()["master"].reachable
        assert upsd.connections == 3
        watch.close()
    finally:
        upsd.close()


def test_upsd_gone_is_one_unreachable_reading(upsd):
    watch = UpsWatch({"master": f"u@127.0.0.1:{upsd.port}"}, timeout=1.0)
    assert watch.poll()["master"].reachable
    upsd.close()
    watch.close()  # the kept connection gone too: nothing left to read from
    down = watch.poll()["master"]
    assert not down.reachable and down.error.startswith(f"upsd 127.0.0.1:{upsd.port}: ConnectionRefusedError")
