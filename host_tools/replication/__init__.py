"""Replication adapters: how the agent learns its server's replication state and acts on it.

An adapter reports the role, whether this copy is in sync, its lag, and whether the
replication stream from the primary is alive (the standby's own view of the peer); it
carries out promote, demote and rejoin. An adapter that can tell whether the service itself
works (a query answered in time, not only a role read) says so through ``health``. Adapters: ``command`` (any product, through
scripts with a documented contract), ``postgres``, ``drbd``; ``make_adapter`` picks one
from the agent's config.
"""
from __future__ import annotations

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
    sync_standbys: tuple[str, ...] | None = None  # primary: standbys holding every acknowledged commit


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
