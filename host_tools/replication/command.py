"""The command adapter: replication state and role changes through site scripts, for any
product the appliance has no adapter for (Oracle Data Guard through dgmgrl, a SAN, ...).

Contract:

* ``status``: a command that prints ONE JSON object on stdout and exits 0, with keys
  ``role`` ("primary" | "standby" | "unknown"), ``in_sync`` (bool or null), ``lag_bytes``
  (int or null), ``lag_s`` (number or null), ``peer_alive`` (bool or null: a standby still
  receives the primary's stream), ``detail`` (text, optional), ``sync_standbys`` (optional,
  on a primary: the list of servers, by their appliance names, that hold every commit it
  acknowledges; the appliance then judges each standby in sync by this list, not by the
  standby's own ``in_sync``). Anything else (non-zero exit,
  no JSON, a wrong type) is reported as role "unknown" with the reason in ``detail``.
* ``health`` (optional): a command that exits 0 while the service works (a query answered,
  a test transaction done) and non-zero when it does not; its first line of stderr (or
  stdout) is the reason shown to the operator. It must finish within the agent's
  ``agent.health_timeout``: a check that hangs counts as unhealthy, since a hung service is
  a failed one. Without it the adapter does not judge the service; ``agent.health_command``
  does (both may be set: the service is healthy when both pass).
* ``promote``, ``demote``, ``rejoin``: commands that exit 0 once the change is done. rejoin
  gets the new primary's name in ARBITER_PRIMARY. A non-zero exit fails the action with
  the command's stderr.
* ``sync_degrade`` (policy.sync_loss = degrade, run on the primary): the primary stops waiting
  for the synchronous standbys named in ARBITER_LOST (comma separated): it names another standby that holds every commit, or
  none (Data Guard: the protection mode drops from maximum protection or availability to
  maximum performance). ``sync_restore``: the standbys named in ARBITER_STANDBYS (comma
  separated) are synchronous again. Both exit 0 once the primary acts on the new setting;
  their stdout's last line is the detail the appliance logs.
* ``rebuild``: this server becomes a fresh copy of the primary named in ARBITER_PRIMARY and a
  standby of it (when ``rejoin`` cannot); ``self_fence``: an isolated primary stops accepting
  writes at once. Both optional; an action whose command is not configured fails, naming the
  key.

Every command runs without a shell (split like a shell would), with ``timeout`` seconds, in a
process group of its own that is killed whole on timeout; at most 64 KiB of its output is read
(more is a failure).
"""
from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from firmware.errors import ActionError, ConfigError
from firmware.subproc import run_checked
from host_tools.replication import Health, ReplicationStatus

_ROLES = ("primary", "standby", "unknown")
_ACTIONS = frozenset({"promote", "demote", "rejoin", "sync_degrade", "sync_restore", "rebuild", "self_fence"})


@dataclass(frozen=True)
class CommandAdapter:
    status_cmd: str
    timeout: float = 30.0
    promote_cmd: str = ""
    demote_cmd: str = ""
    rejoin_cmd: str = ""
    health_cmd: str = ""
    sync_degrade_cmd: str = ""
    sync_restore_cmd: str = ""
    rebuild_cmd: str = ""
    self_fence_cmd: str = ""

    @classmethod
    def from_table(cls, table: dict) -> CommandAdapter:
        known = {"adapter", "status", "health", "timeout", *_ACTIONS}
        problems = [f"replication.{k}: unknown key (known: {', '.join(sorted(known))})" for k in set(table) - known]
        if not isinstance(table.get("status"), str) or not table.get("status"):
            problems.append("replication.status: required for adapter = 'command' (a command printing JSON)")
        timeout = table.get("timeout", 30.0)
        if not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= 3600:
            problems.append(f"replication.timeout = {timeout!r}: must be a number from 0.1 to 3600")
        if not isinstance(table.get("health", ""), str):
            problems.append(f"replication.health = {table['health']!r}: must be a command (a string)")
        for key in sorted(_ACTIONS & set(table)):
            if not isinstance(table[key], str):
                problems.append(f"replication.{key} = {table[key]!r}: must be a command (a string)")
        if problems:
            raise ConfigError(problems)
        return cls(table["status"], float(timeout), health_cmd=table.get("health", ""),
                   **{f"{k}_cmd": table[k] for k in _ACTIONS & set(table)})

    def _run(self, cmd: str, what: str, env: dict[str, str] | None = None) -> str:
        return run_checked(shlex.split(cmd), f"replication.{what}", self.timeout, env)

    def status(self) -> ReplicationStatus:
        try:
            data = json.loads(self._run(self.status_cmd, "status"))
            role = data["role"]
            if role not in _ROLES:
                raise ValueError(f"role {role!r}")
            return ReplicationStatus(role, _opt(data.get("in_sync"), bool), _opt(data.get("lag_bytes"), int),
                                     _opt(data.get("lag_s"), float), _opt(data.get("peer_alive"), bool),
                                     str(data.get("detail", ""))[:200], _names(data.get("sync_standbys")))
        except ActionError as exc:
            return ReplicationStatus("unknown", detail=str(exc))
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # 1e400 digits: no float holds it
            return ReplicationStatus("unknown", detail=f"replication.status printed no valid JSON: {exc}")
        except (RecursionError, MemoryError) as exc:  # JSON nested past the parser's depth, or too big
            return ReplicationStatus("unknown", detail=f"replication.status printed unreadable JSON: {exc!r}"[:200])

    def health(self, timeout: float) -> Health | None:
        if not self.health_cmd:
            return None
        try:
            run_checked(shlex.split(self.health_cmd), "replication.health", timeout, bound="agent.health_timeout")
        except ActionError as exc:
            return Health(False, str(exc)[:200])
        return Health(True)

    def _act(self, cmd: str, what: str, env: dict[str, str] | None = None) -> str:
        if not cmd:
            raise ActionError(f"replication.{what} is not configured")
        out = self._run(cmd, what, env).strip().splitlines()
        return out[-1][:200] if out else f"{what} done"

    def promote(self) -> None:
        self._act(self.promote_cmd, "promote")

    def demote(self) -> None:
        self._act(self.demote_cmd, "demote")

    def rejoin(self, primary: str) -> None:
        self._act(self.rejoin_cmd, "rejoin", {"ARBITER_PRIMARY": primary})

    def sync_degrade(self, lost: list[str]) -> str:
        return self._act(self.sync_degrade_cmd, "sync_degrade", {"ARBITER_LOST": ",".join(lost)})

    def sync_restore(self, standbys: list[str]) -> str:
        return self._act(self.sync_restore_cmd, "sync_restore", {"ARBITER_STANDBYS": ",".join(standbys)})

    def rebuild(self, primary: str, progress: Callable[[str], None]) -> str:
        return self._act(self.rebuild_cmd, "rebuild", {"ARBITER_PRIMARY": primary})

    def self_fence(self, timeout: float) -> str:
        return self._act(self.self_fence_cmd, "self_fence")


def _opt(value: object, kind: type) -> object:
    if value is None:
        return None
    if kind is bool and not isinstance(value, bool):
        raise TypeError(f"expected true/false/null, not {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                 or not math.isfinite(value)):
        raise TypeError(f"expected a finite number or null, not {value!r}")
    return kind(value)


def _names(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise TypeError(f"sync_standbys: expected a list of server names or null, not {value!r}")
    return tuple(value)
