"""The operator's commands as types, shared by ``arbiterctl`` and the daemon's control handler.

The CLI builds a ``Command`` and sends ``to_wire()``; the daemon reads it back with
``Command.from_wire`` and gets the same checks, so the wire schema is written once. An order
(a command that asks the site to change) is answered with a ``Verdict``: what ``decide``
made of it, accepted or refused, with its reason. ``Operator`` says who gave it.
"""
from __future__ import annotations

import enum
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.errors import ArbiterError
from firmware.model import Request, RequestKind, Verdict


class Name(str, enum.Enum):
    STATUS = "status"
    EVENTS = "events"
    HISTORY = "history"
    WHY = "why"
    SWITCHOVER = "switchover"
    FAILOVER = "failover"
    MAINTENANCE = "maintenance"
    ACK = "ack"
    POWER_ON = "power-on"
    REBUILD = "rebuild"


# Orders go through decide, which accepts or refuses each one.
ORDERS = {Name.SWITCHOVER: RequestKind.SWITCHOVER, Name.FAILOVER: RequestKind.FAILOVER,
          Name.POWER_ON: RequestKind.POWER_ON, Name.REBUILD: RequestKind.REBUILD}


class BadCommand(ArbiterError):
    """A request the control handler cannot read: refused before decide sees it."""


@dataclass(frozen=True)
class Command:
    name: Name
    server: str | None = None  # switchover --to, failover --to, power-on SERVER, rebuild SERVER
    force: bool = False  # failover --force
    on: bool = False  # maintenance on/off
    n: int = 20  # events -n, history -n
    since: float | None = None  # history --since, a wall-clock epoch
    sudo_user: str = ""  # the CLI's SUDO_USER: who ran it through sudo (the peer uid is root)

    def to_wire(self) -> dict[str, Any]:
        return {"cmd": self.name.value, "server": self.server, "force": self.force, "on": self.on,
                "n": self.n, "since": self.since, "sudo_user": self.sudo_user}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Command:
        """Every field checked by type: a malformed request is refused, never guessed at."""
        try:
            name = Name(data.get("cmd"))
        except ValueError:
            raise BadCommand(f"unknown command {data.get('cmd')!r} (known: {', '.join(n.value for n in Name)})") \
                from None
        server, since, n = data.get("server"), data.get("since"), data.get("n", 20)
        if server is not None and not isinstance(server, str):
            raise BadCommand(f"server = {server!r}: must be a name")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 100_000:
            raise BadCommand(f"n = {n!r}: must be an integer within 0..100000")
        if since is not None and (not isinstance(since, (int, float)) or isinstance(since, bool)):
            raise BadCommand(f"since = {since!r}: must be a wall-clock time in seconds")
        flags = {k: data.get(k, False) for k in ("force", "on")}
        for key, value in flags.items():
            if not isinstance(value, bool):
                raise BadCommand(f"{key} = {value!r}: must be true or false")
        sudo_user = data.get("sudo_user") or ""
        if not isinstance(sudo_user, str):
            raise BadCommand(f"sudo_user = {sudo_user!r}: must be a string")
        return cls(name, server, flags["force"], flags["on"], n,
                   None if since is None else float(since), sudo_user[:64])

    def request_kind(self) -> RequestKind | None:
        """The decide request this command becomes; None for the ones the daemon answers itself."""
        if self.name is Name.MAINTENANCE:
            return RequestKind.MAINTENANCE_ON if self.on else RequestKind.MAINTENANCE_OFF
        return ORDERS.get(self.name)


@dataclass(frozen=True)
class Operator:
    """Who gave an order: the control socket peer's uid (SO_PEERCRED), the SUDO_USER its
    CLI reported, and the kernel's audit loginuid of the peer process (who logged in, even
    through su or sudo; None where the kernel keeps none)."""

    uid: int
    pid: int
    sudo_user: str = ""
    loginuid: int | None = None

    def describe(self) -> str:
        parts = [f"uid {self.uid}"]
        if self.sudo_user:
            parts.append(f"sudo from {self.sudo_user}")
        if self.loginuid is not None:
            parts.append(f"loginuid {self.loginuid}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "pid": self.pid, "sudo_user": self.sudo_user, "loginuid": self.loginuid}


UNSET_LOGINUID = 2**32 - 1  # (uid_t)-1: a process never logged in (a system service)


def peer_loginuid(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The audit login uid of ``pid``, set by pam_loginuid at login and kept across sudo."""
    try:
        value = int((proc / str(pid) / "loginuid").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if value == UNSET_LOGINUID else value


def sudo_user() -> str:
    return os.environ.get("SUDO_USER", "")


@dataclass
class _Waiting:
    done: threading.Event
    verdict: Verdict | None = None
    target: str | None = None


class OrderDesk:
    """Hands orders to the decision loop and waits for decide's verdict on each.

    The control thread calls ``submit`` and blocks in ``wait``; the loop drains ``requests``
    into its observations and calls ``answer`` with the verdicts of its decision.
    """

    def __init__(self) -> None:
        self.requests: queue.Queue[Request] = queue.Queue()
        self._lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, _Waiting] = {}

    def submit(self, kind: RequestKind, server: str | None, force: bool) -> int:
        with self._lock:
            self._next += 1
            rid = self._next
            self._waiting[rid] = _Waiting(threading.Event())
        self.requests.put(Request(kind, server, force, rid))
        return rid

    def drain(self) -> tuple[Request, ...]:
        out = []
        while True:
            try:
                out.append(self.requests.get_nowait())
            except queue.Empty:
                return tuple(out)

    def answer(self, verdicts: tuple[tuple[int, Verdict], ...], target: str | None) -> None:
        with self._lock:
            for rid, verdict in verdicts:
                waiting = self._waiting.get(rid)
                if waiting is not None:
                    waiting.verdict, waiting.target = verdict, target
                    waiting.done.set()

    def wait(self, rid: int, timeout: float) -> tuple[Verdict | None, str | None]:
        """The verdict and the operation's target; (None, None) if the loop did not decide in time."""
        with self._lock:
            waiting = self._waiting[rid]
        waiting.done.wait(timeout)
        with self._lock:
            self._waiting.pop(rid, None)
        return waiting.verdict, waiting.target
