"""sd_notify in a few lines: READY, WATCHDOG and STATUS datagrams to $NOTIFY_SOCKET.

A path or an abstract socket ("@name"); a no-op when the variable is unset (not under
systemd), so the daemon calls it unconditionally.
"""
from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False


def watchdog_timeout() -> float | None:
    """systemd's WatchdogSec for this process, in seconds; None if not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec, as sd_watchdog_enabled suggests; None if not asked for."""
    timeout = watchdog_timeout()
    return None if timeout is None else timeout / 2
