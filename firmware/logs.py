"""Logging set-up shared by arbiterd and arbiter-agent.

Under systemd, stderr goes to journald (``JOURNAL_STREAM`` names that stream): each line then
starts with its syslog priority (``<3>`` for an error), which journald reads, so
``journalctl -u arbiterd -p err`` shows exactly the errors, and it carries no timestamp of
its own (journald stamps every line). Anywhere else, lines start with the time as before.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

# Python levels to syslog priorities (sd-daemon(3)): critical 2, error 3, warning 4, info 6, debug 7.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<priority>name: message``; a traceback follows on the lines after, at the same priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def priority(levelno: int) -> int:
    """The syslog priority of a Python level; levels in between take the next more severe one."""
    return next((p for level, p in sorted(_PRIORITY.items()) if levelno <= level), 2)


def on_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journald stream systemd gave this service (sd_journal_stream_fd)."""
    wanted = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in wanted:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return wanted == f"{st.st_dev}:{st.st_ino}"


def setup(level: str | int = logging.INFO, stream: TextIO | None = None) -> None:
    """Replaces the root logger's handlers with one on ``stream`` (stderr by default)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if on_journal(stream)
                         else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
