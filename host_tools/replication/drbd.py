"""The DRBD adapter: block-level replication state from DRBD 9's status, role changes with
drbdadm.

Status comes from ``drbdsetup status RES --json`` (a list of resources, each with
``role``, ``devices[].disk-state`` and ``connections[]`` holding ``connection-state``,
``peer-role`` and ``peer_devices[]`` with ``replication-state``, ``peer-disk-state`` and
``out-of-sync`` in KiB). ``parse_text`` reads the plain ``drbdadm status`` form instead
(``RES role:Primary`` / ``disk:UpToDate`` / ``PEER role:Secondary`` or
``PEER connection:Connecting`` / ``replication:Established peer-disk:UpToDate``, with
``out-of-sync:KiB`` only under --statistics), for sites whose drbd-utils predate --json.

in_sync: every local volume is UpToDate, at least one peer is Connected, and every connected
peer's volumes are UpToDate with nothing out of sync. A Secondary that has lost every peer
(its Primary died) keeps its last disk state; that UpToDate proves it holds every write only
when the resource has DRBD's peer fencing (``fencing resource-and-stonith`` with a fence-peer
handler, or quorum), which freezes a Primary that loses its peer until the peer is outdated.
The site says so with ``replication.peer_fencing``: true, such a Secondary is in sync while
UpToDate; false, it is unknown and never promoted automatically. peer_alive: some peer is Connected
(for a Secondary, that is the stream from the Primary). lag_bytes: out-of-sync bytes summed
over peers; lag_s is not known to DRBD and stays None.

promote and demote are ``drbdadm primary RES`` and ``drbdadm secondary RES``. rejoin runs
``drbdadm connect RES`` (an outdated Secondary then resyncs from the Primary by itself);
after a split brain the operator decides which side's changes to discard.

Service health is not DRBD's to judge: the agent's ``health_command`` checks the service
that runs on the device.
"""
from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.errors import ActionError, ConfigError
from firmware.subproc import run_checked
from host_tools.replication import Health, ReplicationStatus


@dataclass(frozen=True)
class PeerState:
    name: str
    connection: str  # Connected, Connecting, StandAlone, ...
    role: str  # the peer's role, "Unknown" while not connected
    disk: str  # the peer's disk state, worst over volumes
    out_of_sync_kib: int


@dataclass(frozen=True)
class DrbdState:
    resource: str
    role: str  # Primary, Secondary
    disk: str  # local disk state, worst over volumes
    peers: tuple[PeerState, ...]

    def to_status(self, peer_fencing: bool = False) -> ReplicationStatus:
        connected = [p for p in self.peers if p.connection == "Connected"]
        oos = sum(p.out_of_sync_kib for p in self.peers) * 1024
        in_sync: bool | None = (self.disk == "UpToDate" and bool(connected)
                                and all(p.disk == "UpToDate" and p.out_of_sync_kib == 0 for p in connected))
        if self.role == "Secondary" and not connected and self.disk == "UpToDate":
            in_sync = True if peer_fencing else None
        role = {"Primary": "primary", "Secondary": "standby"}.get(self.role, "unknown")
        peers = ", ".join(f"{p.name} {p.connection}/{p.role}/{p.disk}" for p in self.peers) or "no peers"
        return ReplicationStatus(role, in_sync=in_sync, lag_bytes=oos, lag_s=None, peer_alive=bool(connected),
                                 detail=f"{self.resource} {self.role} disk {self.disk}; {peers}"[:200])


# Worst first: a volume set reports its weakest member.
_DISK_ORDER = ("Diskless", "Failed", "Inconsistent", "Outdated", "DUnknown", "Negotiating", "Attaching",
               "Detaching", "Consistent", "UpToDate")


def _worst(states: list[str]) -> str:
    if not states:
        return "DUnknown"
    return min(states, key=lambda s: _DISK_ORDER.index(s) if s in _DISK_ORDER else 0)


def parse_json(text: str, resource: str) -> DrbdState:
    """One resource out of ``drbdsetup status --json``."""
    data = json.loads(text)
    found = next((r for r in data if r.get("name") == resource), None)
    if found is None:
        raise ValueError(f"resource {resource!r} not in drbdsetup status (has: "
                         f"{', '.join(str(r.get('name')) for r in data) or 'none'})")
    disk = _worst([d.get("disk-state", "DUnknown") for d in found.get("devices", [])])
    peers = tuple(_json_peer(c) for c in found.get("connections", []))
    return DrbdState(resource, found.get("role", "Unknown"), disk, peers)


def _json_peer(conn: dict[str, Any]) -> PeerState:
    devices = conn.get("peer_devices", [])
    return PeerState(conn.get("name", "?"), conn.get("connection-state", "Unknown"), conn.get("peer-role", "Unknown"),
                     _worst([d.get("peer-disk-state", "DUnknown") for d in devices]),
                     sum(int(d.get("out-of-sync", 0)) for d in devices))


def parse_text(text: str, resource: str) -> DrbdState:
    """One resource out of ``drbdadm status`` (plain text, one block per resource)."""
    block = _text_block(text, resource)
    head = _fields(block[0])
    local_disks: list[str] = []
    peers: list[dict[str, Any]] = []
    for line in block[1:]:
        indent = len(line) - len(line.lstrip())
        words = line.split()
        fields = _fields(line)
        if indent <= 2 and words and ":" not in words[0]:  # a peer: "PEER role:.. | connection:.."
            peers.append({"name": words[0], "connection": fields.get("connection", "Connected"),
                          "role": fields.get("role", "Unknown"), "disks": [], "oos": 0})
        elif peers and indent > 2:
            if "peer-disk" in fields:
                peers[-1]["disks"].append(fields["peer-disk"])
            peers[-1]["oos"] += int(fields.get("out-of-sync", 0))
        elif "disk" in fields:
            local_disks.append(fields["disk"])
    return DrbdState(resource, head.get("role", "Unknown"), _worst(local_disks), tuple(
        PeerState(p["name"], p["connection"], p["role"],
                  _worst(p["disks"]) if p["connection"] == "Connected" else "DUnknown", p["oos"]) for p in peers))


def _text_block(text: str, resource: str) -> list[str]:
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.split()[:1] == [resource]), None)
    if start is None:
        raise ValueError(f"resource {resource!r} not in drbdadm status")
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()), len(lines))
    return [ln for ln in lines[start:end] if ln.strip()]


def _fields(line: str) -> dict[str, str]:
    return dict(m.groups() for m in re.finditer(r"([\w-]+):(\S+)", line))


@dataclass(frozen=True)
class DrbdAdapter:
    resource: str
    peer_fencing: bool
    status_cmd: str = "drbdsetup status {resource} --json"
    drbdadm: str = "drbdadm"
    timeout: float = 30.0

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> DrbdAdapter:
        known = {"adapter", "resource", "peer_fencing", "status", "drbdadm", "timeout"}
        problems = [f"replication.{k}: unknown key (known: {', '.join(sorted(known))})"
                    for k in sorted(set(table) - known)]
        resource = table.get("resource")
        if not isinstance(resource, str) or not re.fullmatch(r"[\w.-]+", resource or ""):
            problems.append(f"replication.resource = {resource!r}: required for adapter = 'drbd', "
                            "a DRBD resource name (letters, digits, . _ -)")
        fencing = table.get("peer_fencing")
        if not isinstance(fencing, bool):
            problems.append(f"replication.peer_fencing = {fencing!r}: required for adapter = 'drbd', true or false:"
                            " true only if the resource has 'fencing resource-and-stonith' (or quorum), so that"
                            " a Secondary's UpToDate after losing its Primary can be trusted")
        timeout = table.get("timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 600:
            problems.append(f"replication.timeout = {timeout!r}: must be a number from 1 to 600")
        for key in ("status", "drbdadm"):
            if key in table and (not isinstance(table[key], str) or not table[key]):
                problems.append(f"replication.{key} = {table[key]!r}: must be a non-empty command")
        if problems:
            raise ConfigError(problems)
        return cls(resource, fencing, table.get("status", cls.status_cmd), table.get("drbdadm", cls.drbdadm),
                   float(timeout))

    def _run(self, argv: list[str], what: str) -> str:
        return run_checked(argv, what, self.timeout)

    def status(self) -> ReplicationStatus:
        cmd = self.status_cmd.format(resource=self.resource)
        try:
            out = self._run(shlex.split(cmd), "drbd status")
            state = parse_json(out, self.resource) if out.lstrip().startswith("[") else parse_text(out, self.resource)
        except ActionError as exc:
            return ReplicationStatus("unknown", detail=str(exc)[:200])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, MemoryError) as exc:
            return ReplicationStatus("unknown", detail=f"drbd status unreadable: {exc!r}"[:200])
        return state.to_status(self.peer_fencing)

    def health(self, timeout: float) -> Health | None:
        """DRBD replicates blocks: it cannot tell whether the service on top of them works;
        the site's agent.health_command does."""
        return None

    def promote(self) -> None:
        self._run([*shlex.split(self.drbdadm), "primary", self.resource], "drbdadm primary")

    def demote(self) -> None:
        self._run([*shlex.split(self.drbdadm), "secondary", self.resource], "drbdadm secondary")

    def rejoin(self, primary: str) -> None:
        self._run([*shlex.split(self.drbdadm), "connect", self.resource], "drbdadm connect")

    def sync_degrade(self, lost: list[str]) -> str:
        raise ActionError("sync_degrade: not with DRBD (protocol C waits for the peer by design; a lost peer"
                          " is DRBD's own fencing policy, not the appliance's)")

    def sync_restore(self, standbys: list[str]) -> str:
        raise ActionError("sync_restore: not with DRBD (DRBD resynchronises a returning peer itself)")

    def rebuild(self, primary: str, progress: Callable[[str], None]) -> str:
        self._run([*shlex.split(self.drbdadm), "invalidate", self.resource], "drbdadm invalidate")
        return "local copy invalidated: DRBD resynchronises it from the peer in full"

    def self_fence(self, timeout: float) -> str:
        self.demote()
        return "resource made secondary (drbdadm secondary)"
