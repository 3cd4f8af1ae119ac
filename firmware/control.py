"""The operator's local control socket: one JSON object per line each way, root only.

The daemon passes a handler; the server thread turns each request into one handler call,
with the peer's credentials (SO_PEERCRED), so an order can name who gave it. A peer that is
not the allowed uid is refused before anything is read.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.errors import ArbiterError

Handler = Callable[[dict[str, Any], "Peer"], dict[str, Any]]

log = logging.getLogger("arbiter.control")

MAX_REQUEST = 64 * 1024


@dataclass(frozen=True)
class Peer:
    """The kernel's word on who is at the other end of the socket."""

    pid: int
    uid: int


class ControlServer:
    def __init__(self, path: str, handler: Handler, allowed_uid: int = 0) -> None:
        self.path = Path(path)
        self.handler = handler
        self.allowed_uid = allowed_uid
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock = self._sock  # stop() may clear the attribute while this thread waits in accept()
        assert sock is not None
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10.0)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", creds)
            if uid != self.allowed_uid:
                self._reply(conn, {"ok": False, "error": "root only"})
                return
            try:
                with conn.makefile("rb") as f:
                    line = f.readline(MAX_REQUEST)
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
            except (OSError, ValueError) as exc:
                self._reply(conn, {"ok": False, "error": f"bad request: {exc}"})
                return
            try:
                response = self.handler(request, Peer(pid, uid))
            except Exception as exc:  # one bad request must not take the socket down
                log.exception("control request %r failed", request.get("cmd"))
                response = {"ok": False, "error": str(exc)}
            self._reply(conn, response)

    @staticmethod
    def _reply(conn: socket.socket, payload: dict[str, Any]) -> None:
        try:
            conn.sendall(json.dumps(payload).encode() + b"\n")
        except OSError:
            pass

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.path.unlink(missing_ok=True)


class NotRunning(ArbiterError):
    """No daemon answers on the control socket."""


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request, one answer. The default timeout covers the daemon's wait for a verdict."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        try:
            sock.sendall(json.dumps(payload).encode() + b"\n")
        except BrokenPipeError:
            pass  # a refusing daemon answers and closes without reading: its answer is still queued
        with sock.makefile("rb") as f:
            line = f.readline()
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NotRunning(f"arbiterd not running? no socket at {path}") from exc
    except OSError as exc:
        raise NotRunning(f"arbiterd at {path} did not answer: {exc}") from exc
    finally:
        sock.close()
    if not line:
        raise NotRunning(f"arbiterd at {path} closed the connection without an answer")
    return json.loads(line)
