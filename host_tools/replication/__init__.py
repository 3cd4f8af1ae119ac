"""Replication adapters: how the agent learns its server's replication state and acts on it.

An adapter reports the role, whether this copy is in sync, its lag, and whether the
replication stream from the primary is alive (the standby's own view of the peer); it
carries out promote, demote and rejoin. An adapter that can tell whether the service itself
works (a query answered in time, not only a role read) says so through ``health``. Adapters: ``command`` (any product, through
scripts with a documented contract), ``postgres``, ``drbd``; ``make_adapter`` picks one
from the agent's config.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Protocol


@dataclass(frozen=True)
class ReplicationStatus:
    role: str  # "primary", "standby" or "unknown"
    in_sync: bool | None = None
    lag_bytes: int | None = None
    lag_s: float | None = None
    peer_alive: bool | None = None  # standby: the stream from the primary is alive
    detail: str = ""


@dataclass(frozen=True)
class Health:
    """Does the service answer, within the agent's health timeout? ``detail`` says why not."""

    ok: bool
    detail: str = ""


class Adapter(Protocol):
    def status(self) -> ReplicationStatus: ...

    def health(self, timeout: float) -> Health | None:
        """None: this adapter cannot judge the service (agent.health_command does)."""

    def promote(self) -> None: ...

    def demote(self) -> None: ...

    def rejoin(self, primary: str) -> None: ...

    def sync_degrade(self, lost: list[str]) -> str:
        """On a primary that lost its synchronous standbys ``lost``: stop waiting for them (name
        another standby that is in sync, or none); the new setting in words."""

    def sync_restore(self, standbys: list[str]) -> str:
        """On a primary: name ``standbys`` synchronous again, beside those still named."""

    def rebuild(self, primary: str, progress: Callable[[str], None]) -> str:
        """Make this server a fresh copy of ``primary`` and a standby of it; ``progress`` gets
        lines while the copy runs."""

    def self_fence(self, timeout: float) -> str:
        """Stop accepting writes now (an isolated primary): stop or demote the database
        within ``timeout`` seconds."""


OUTPUT_CAP = 64 * 1024  # bytes kept of a command's stdout and of its stderr


def run_checked(argv: list[str], what: str, timeout: float, env: dict[str, str] | None = None,
                bound: str = "replication.timeout") -> str:
    """Run a site command without a shell; its stdout, or ActionError saying what failed
    (``bound``: the setting that gave the timeout).

    It runs in a process group of its own: on timeout, or when it prints more than
    OUTPUT_CAP on either stream, the whole group is killed (a script's children included),
    so a hung or chatty script costs neither memory nor stray processes."""
    from firmware.errors import ActionError

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    except OSError as exc:
        raise ActionError(f"{what}: cannot run ({exc})") from exc
    try:
        out, err, problem = _read_capped(proc, time.monotonic() + timeout)
        if problem == "timeout":
            raise ActionError(f"{what} did not finish within {bound} = {timeout:g} s")
        if problem:
            raise ActionError(f"{what} printed more than {OUTPUT_CAP // 1024} KiB on {problem}; stopped")
    finally:
        _kill_group(proc)
    stdout, stderr = (b.decode(errors="replace") for b in (out, err))
    if proc.returncode != 0:
        raise ActionError(f"{what} exit {proc.returncode}: {(stderr or stdout).strip()[-300:]}")
    return stdout


def _read_capped(proc: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, bytes, str]:
    """Both pipes read until EOF and the exit, the deadline, or a stream over the cap:
    (stdout, stderr, "" | "timeout" | "stdout" | "stderr")."""
    assert proc.stdout is not None and proc.stderr is not None
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    names = {proc.stdout: "stdout", proc.stderr: "stderr"}
    with selectors.DefaultSelector() as sel:
        for pipe in bufs:
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), "timeout"
            for sk, _ in sel.select(left):
                chunk = os.read(sk.fd, 65536)
                if not chunk:
                    sel.unregister(sk.fileobj)
                    continue
                buf = bufs[sk.fileobj]  # type: ignore[index]
                buf += chunk
                if len(buf) > OUTPUT_CAP:
                    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), names[sk.fileobj]  # type: ignore[index]
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), "timeout"
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """The leader is reaped; a group still running after a timeout or overflow is killed."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def make_adapter(table: dict) -> Adapter:
    """The adapter named by the agent config's [replication] table."""
    from firmware.errors import ConfigError

    kind = table.get("adapter")
    if kind == "command":
        from host_tools.replication.command import CommandAdapter
        return CommandAdapter.from_table(table)
    if kind == "postgres":
        from host_tools.replication.postgres import PostgresAdapter
        return PostgresAdapter.from_table(table)
    if kind == "drbd":
        from host_tools.replication.drbd import DrbdAdapter
        return DrbdAdapter.from_table(table)
    raise ConfigError([f"replication.adapter = {kind!r}: must be one of command, postgres, drbd"])
