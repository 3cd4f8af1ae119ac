"""decide against its safety invariants, on random walks: observations, action results,
operator requests, time and appliance restarts, under several site configs.

The invariants (issue: property tests of decide):
- every change of phase is in site_state.TRANSITIONS (decide raises TransitionError otherwise);
- a Promote follows, in the same operation, a confirmed fence of the old primary, or under
  policy.fencing = none the target's own confirmation that it lost the primary (an automatic
  failover or an operator's forced one alike), or for a switchover the old primary's
  confirmed demotion;
- no automatic failover starts inside the hold-down after a failover;
- in observe mode only reporting actions; in maintenance no new operation starts by itself;
- one promote target per operation.

HYPOTHESIS_PROFILE=ci draws the same walks every run (tests/conftest.py).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from firmware.decide import decide
from firmware.model import (REPORTING, Action, ActionResult, Demote, Fence, HoldFence, LinkState, Notify,
                            Promote, Request, RequestKind, Role)
from firmware.site_state import BUSY, OpKind, Operation, Phase, State
from tests.unit.sitekit import obs, report, server, site_config

NAMES = ("master", "standby", "standby2")
HOLD_DOWN = 60.0
CONFIGS = {
    "relay": site_config(NAMES, timing={"hold_down": HOLD_DOWN}),
    "no-fence": site_config(NAMES, timing={"hold_down": HOLD_DOWN}, policy={"fencing": "none"}),
    "no-verify-rejoin": site_config(NAMES, timing={"hold_down": HOLD_DOWN}, vip={"verify": "none"},
                                    policy={"old_primary": "rejoin-as-standby"}),
    "observe": site_config(NAMES, timing={"hold_down": HOLD_DOWN}, site={"mode": "observe"}),
}
_LINKS = (LinkState.UP, LinkState.LATE, LinkState.DEAD, LinkState.UNKNOWN)
_REPORTS = (None, *(report(role, healthy, in_sync, lag, hears, peer)
                    for role in Role for healthy in (True, False) for in_sync, lag in ((True, 0), (False, 10), (None, None))
                    for hears, peer in ((False, None), (True, None), (None, True), (None, None), (False, True))))
_CHOICES = {n: [server(n, a, b, rep) for a in _LINKS for b in _LINKS for rep in _REPORTS] for n in NAMES}
_PER = len(_CHOICES[NAMES[0]])


def _servers(i: int) -> tuple:
    """The i-th combination of the three servers' links and reports (one draw per cycle is
    far cheaper than one per server or per field, and 0 is the all-well site)."""
    out = []
    for name in NAMES:
        i, k = divmod(i, _PER)
        out.append(_CHOICES[name][k])
    return tuple(out)


SERVERS = st.integers(0, _PER ** len(NAMES) - 1).map(_servers)
REQUESTS = st.lists(st.builds(Request, st.sampled_from(list(RequestKind)), st.sampled_from([None, *NAMES]),
                              st.booleans()), max_size=2)
RESULTS = st.sampled_from(["ok", "ok", "ok", "fail", "split-brain", "none"])


class DecideMachine(RuleBasedStateMachine):
    @initialize(name=st.sampled_from(sorted(CONFIGS)))
    def start(self, name: str) -> None:
        self.cfg = CONFIGS[name]
        self.state = State(since=0.0)
        self.now, self.run = 0.0, 1
        self.confirmed: set[tuple[str, str]] = set()  # (kind, server) confirmed in this operation
        self.promoted: set[str] = set()  # promote targets in this operation
        self.fenced_at: dict[str, str] = {}  # fence/demote action id -> server, this operation
        self.last_failover_at: float | None = None

    @rule(servers=SERVERS, requests=REQUESTS, outcome=RESULTS, dt=st.sampled_from([0.05, 0.5, 3.0, 20.0, 70.0]))
    def cycle(self, servers, requests, outcome: str, dt: float) -> None:
        self.now += dt
        results = tuple(_result(i, outcome) for i in self.state.awaiting if outcome != "none")
        self._decide(obs(*servers, results=results, requests=tuple(requests), run=self.run), results)

    @rule()
    def restart(self) -> None:
        self.run += 1

    def _decide(self, o, results: tuple[ActionResult, ...]) -> None:
        before = self.state
        d = decide(before, o, self.now, self.cfg)  # a phase move outside the table raises here
        for r in results:  # confirmations the step above could act on
            if r.ok and r.action_id in self.fenced_at:
                self.confirmed.add((r.action_id.split("#")[0], self.fenced_at[r.action_id]))
        started = [a for a in d.actions if _new(a) and a.event.endswith("-started")]
        if started:  # a new operation: what the standbys said when it started counts for it
            self.confirmed, self.promoted, self.fenced_at = set(), set(), {}
            self.confirmed |= {("Lost", s.name) for s in o.servers if s.report is not None
                               and s.report.hears_primary is False and s.report.repl.peer_alive is not True}
        self._check_actions(before, d.state, d.actions, o)
        if d.state.failovers > before.failovers:
            self.last_failover_at = self.now
        self.state = d.state

    def _check_actions(self, before: State, after: State, actions: tuple[Action, ...], o) -> None:
        if self.cfg.site.mode == "observe":
            assert all(isinstance(a, REPORTING) for a in actions), actions
        if before.maintenance and after.maintenance and not o.requests and before.phase not in BUSY:
            assert all(isinstance(a, (*REPORTING, HoldFence)) for a in actions), actions
        assert sum(isinstance(a, Promote) for a in actions) <= 1
        for a in actions:
            if isinstance(a, (Fence, Demote)):
                self.fenced_at[a.id] = a.server
            elif _new(a) and a.event == "failover-started" and a.text.startswith("failover:"):
                assert self.last_failover_at is None or self.now - self.last_failover_at >= HOLD_DOWN, \
                    f"automatic failover {self.now - self.last_failover_at:.1f} s after the last one"
            elif isinstance(a, Promote):
                self._check_promote(after, a.server)

    def _check_promote(self, after: State, target: str) -> None:
        self.promoted.add(target)
        assert len(self.promoted) == 1, f"two promote targets in one operation: {self.promoted}"
        assert after.op is not None, f"promote {target} outside an operation"
        old = after.op.old
        if after.op.kind is OpKind.SWITCHOVER:
            assert ("Demote", old) in self.confirmed, f"promote {target} before {old}'s demotion was confirmed"
        elif self.cfg.policy.fencing == "relay":
            assert ("Fence", old) in self.confirmed, f"promote {target} before {old}'s fence was confirmed"
        else:  # policy.fencing = none, automatic or forced failover: the target's own word
            assert ("Lost", target) in self.confirmed, f"promote {target} under fencing = none without its confirmation"

    @invariant()
    def phase_is_known(self) -> None:
        assert isinstance(self.state.phase, Phase)


def _new(a: Action) -> bool:
    """A Notify raised now, not one of the last decision's alerts sent again after a restart."""
    return isinstance(a, Notify) and not a.text.endswith("(again after an appliance restart)")


def _result(action_id: str, outcome: str) -> ActionResult:
    if outcome == "ok":
        return ActionResult(action_id, True, "done")
    return ActionResult(action_id, False, "boom", "split-brain" if outcome == "split-brain" else "")


TestDecideMachine = DecideMachine.TestCase
TestDecideMachine.settings = settings(max_examples=2000, stateful_step_count=20, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])


def test_the_checks_catch_a_promote_without_its_confirmation():
    """The invariants above can fail: a promote with no confirmed fence, one under fencing =
    none without the standby's word, and a second target in one operation are all caught."""
    for name, confirmed, kind in (("relay", set(), OpKind.FAILOVER), ("no-fence", {("Fence", "master")}, OpKind.FAILOVER),
                                  ("no-fence", set(), OpKind.MANUAL_FAILOVER)):
        machine = DecideMachine()
        machine.start(name)
        machine.confirmed = confirmed
        after = State(phase=Phase.PROMOTING, op=Operation(kind, "master", "standby"))
        with pytest.raises(AssertionError, match="promote standby"):
            machine._check_promote(after, "standby")
    after = State(phase=Phase.PROMOTING, op=Operation(OpKind.FAILOVER, "master", "standby"))
    machine = DecideMachine()
    machine.start("relay")
    machine.confirmed = {("Fence", "master")}
    machine._check_promote(after, "standby")
    with pytest.raises(AssertionError, match="two promote targets"):
        machine._check_promote(after, "standby2")
