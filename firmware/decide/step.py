"""One decide() call's working state, and the small helpers every part of it shares."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TypeVar

from firmware.config import Config, SiteMode
from firmware.model import Action, LinkState, Notify, Observations, ServerObs, Verdict
from firmware.site_state import Condition, Phase, SavedAlert, State, check_transition

T = TypeVar("T")


@dataclass(frozen=True)
class Decision:
    state: State
    actions: tuple[Action, ...]
    reason: str
    warnings: tuple[str, ...] = ()  # for the log at warning level (late replies), not alerts
    verdicts: tuple[tuple[int, Verdict], ...] = ()  # (request id, verdict) of each operator request
    hurry: tuple[str, ...] = ()  # servers whose next report may start an operation: poll them sooner


@dataclass
class Step:
    """Accumulates one cycle's outcome; local to one decide() call."""

    state: State
    obs: Observations
    now: float
    cfg: Config
    actions: list[Action] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verdicts: list[tuple[int, Verdict]] = field(default_factory=list)
    refused: str = ""  # set by refuse() while one request is handled
    hurry: list[str] = field(default_factory=list)

    def act(self, action: Action) -> Action:
        action = dataclasses.replace(action, ref=self.state.next_ref)
        self.update(next_ref=self.state.next_ref + 1)
        self.actions.append(action)
        return action

    def notify(self, event: str, server: str = "", channel: str = "", text: str = "") -> None:
        self.act(Notify(event, server, channel, text))
        self.update(alerts=self.state.alerts + (SavedAlert(event, server, channel, text),))

    def update(self, **changes: object) -> None:
        """Every change of the state goes through here; a change of phase is checked against
        the transition table. Most parts restate what they found each cycle, mostly the values
        the state already has: then the state is kept as it is (same type and value, so the
        copy would be equal, and serialise the same)."""
        state = self.state
        if "phase" in changes:
            check_transition(state.phase, changes["phase"])  # type: ignore[arg-type]
        for name, value in changes.items():
            old = getattr(state, name)
            if value is not old and (type(value) is not type(old) or value != old):
                self.state = state.evolve(**changes)
                return

    def enter(self, phase: Phase, *waits: Action) -> None:
        issued = tuple(self.act(a).id for a in waits)
        self.update(phase=phase, since=self.now, awaiting=issued, results=(), issued_run=self.obs.run)

    def why(self, text: str) -> None:
        self.reasons.append(text)

    def refuse(self, text: str) -> None:
        """An operator request decided against: the reason, and the operator's answer."""
        self.why(text)
        self.refused = text

    def held(self, automatic: bool = True) -> str:
        """The one gate for acting: empty if the appliance may act, else why not. In observe
        mode nothing acts; in maintenance the operator's orders still do, automatics do not.
        A held appliance still decides and reports (Notify, SetStatus)."""
        if self.cfg.site.mode is SiteMode.OBSERVE:
            return "site.mode = observe"
        if automatic and self.state.maintenance:
            return "maintenance mode is on"
        return ""


def drop_condition(step: Step, cond: Condition) -> None:
    if cond in step.state.conditions:
        step.update(conditions=without(step.state.conditions, cond))


def with_(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return tuple(sorted(set(items) | {item}))


def without(items: tuple[T, ...], item: T) -> tuple[T, ...]:
    return tuple(x for x in items if x != item)


def heard_since_fence(state: State, srv: ServerObs) -> bool:
    """Whether a server counts as answering. A fenced one counts only with a reply newer than
    its fence: one fenced while it still answered (its service failed) keeps live-looking
    links for a dead time, and for another after each stall of the appliance's loop, with
    its last report (primary role, virtual IP held) from before the fence."""
    if not srv.alive:
        return False
    if srv.name not in state.fenced or state.fenced_at is None:
        return True
    return any(x.last_seen is None or x.last_seen > state.fenced_at for x in srv.links
               if x.state in (LinkState.UP, LinkState.LATE))
