"""What the appliance did, in order: decisions, phase changes, orders and action results,
written to the bounded event journal beside the alerts (``arbiterctl history``).

Each record gets a millisecond wall-clock stamp for reading (the journal adds it) and its
durations from the monotonic clock, which NTP cannot step. The last failover's timings
(detection, fence, promote, IP moved, verified) are kept here for ``status``, and found
again in the journal after a restart.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from firmware.model import Action, ActionResult, Fence, Observations, Promote, TakeIp, VerifyIp
from firmware.site_state import Phase, State

# The steps of a failover whose time status shows, by the action that carries each out.
_STEPS = {Fence: "fence_s", Promote: "promote_s", TakeIp: "take_ip_s", VerifyIp: "verify_s"}
# The first phase of an operation: fencing (a failover), promoting (a failover under
# policy.fencing = none), demoting (a switchover); entered from one of the idle phases.
_FIRST = frozenset({Phase.FENCING, Phase.PROMOTING, Phase.DEMOTING})
_IDLE = frozenset({Phase.STARTING, Phase.NORMAL, Phase.HALTED})


class Journal(Protocol):
    def append(self, record: dict[str, Any]) -> None: ...

    def tail(self, n: int, since: float | None = None, kind: str | None = None) -> list[dict[str, Any]]: ...


@dataclass
class _Operation:
    kind: str
    old: str | None
    target: str | None
    started: float
    timings: dict[str, float | None] = field(default_factory=dict)


class History:
    """Fed by the daemon once per cycle, after the decision is saved."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._issued: dict[str, tuple[Action, float]] = {}
        self._operation: _Operation | None = None
        last = journal.tail(1, kind="failover")
        self.last_failover: dict[str, Any] | None = last[0] if last else None

    def cycle(self, before: State, after: State, obs: Observations, actions: Iterable[Action],
              reason_changed: bool, now: float) -> None:
        for result in obs.results:
            self._result(result, now)
        if after.phase is not before.phase:
            self._phase(before, after, obs, now)
        if reason_changed:
            self.journal.append({"kind": "decision", "phase": after.phase.value, "reason": after.reason})
        for action in actions:
            if action.id not in self._issued:
                self._issued[action.id] = (action, now)

    def _result(self, result: ActionResult, now: float) -> None:
        issued = self._issued.pop(result.action_id, None)
        took = None if issued is None else round(now - issued[1], 3)
        self.journal.append({"kind": "result", "action": result.action_id, "ok": result.ok,
                             "detail": result.detail, "took_s": took})
        step = _STEPS.get(type(issued[0])) if issued is not None else None
        if step and self._operation is not None and result.ok:
            self._operation.timings[step] = took

    def _phase(self, before: State, after: State, obs: Observations, now: float) -> None:
        op = after.op
        self.journal.append({"kind": "phase", "from": before.phase.value, "to": after.phase.value,
                             "after_s": round(now - before.since, 3), "primary": after.primary,
                             "target": op.target if op else None, "operation": op.kind.value if op else ""})
        if op and after.phase in _FIRST and before.phase in _IDLE:
            self._operation = _Operation(op.kind.value, op.old, op.target, now,
                                         {"detection_s": _detection(obs, op.old, now)})
        elif after.phase in (Phase.NORMAL, Phase.HALTED) and self._operation is not None:
            self._finish(after, now)

    def _finish(self, after: State, now: float) -> None:
        op, self._operation = self._operation, None
        assert op is not None
        record = {"kind": "failover", "operation": op.kind, "old": op.old, "target": op.target,
                  "completed": after.phase is Phase.NORMAL and after.primary == op.target,
                  **{name: op.timings.get(name) for name in ("detection_s", *_STEPS.values())},
                  "total_s": round(now - op.started, 3)}
        self.journal.append(record)
        self.last_failover = record


def _detection(obs: Observations, old: str | None, now: float) -> float | None:
    """From the old primary's last valid reply on any link to the decision: how long the
    appliance took to call it dead (None for an operator's order to a live primary)."""
    if old is None:
        return None
    try:
        server = obs.server(old)
    except KeyError:
        return None
    seen = [link.last_seen for link in server.links if link.last_seen is not None]
    if not seen or server.alive:
        return None
    return round(now - max(seen), 3)
