"""Helpers for tests that run real processes on loopback."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A UDP port nobody holds right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
