"""When the daemon writes its state to the SD card (daemon.worth_saving): before every action,
and otherwise only when something worth resuming from changed. Every test here is a real
decision of decide(), so a rule that skipped a save before an action would fail it."""
from __future__ import annotations

from firmware.daemon import worth_saving
from firmware.decide import decide
from firmware.model import Observations, ReleaseIp, VipAudit
from firmware.site_state import Phase, State
from tests.unit.sitekit import MACS, acting, dead, obs, server, site_config

CFG = site_config()
NORMAL = State(phase=Phase.NORMAL, primary="master", seen_run=1, led="ok")


def audited(o: Observations, at: float, *holders: str) -> Observations:
    return Observations(servers=o.servers, run=o.run, vip_audit=VipAudit(at, frozenset(MACS[h] for h in holders)))


def calm() -> State:
    """A pair after its first calm decision (which records the primary seen in sync)."""
    return decide(NORMAL, obs(server("master"), server("standby")), 99.0, CFG).state


def test_a_calm_audit_changes_only_its_stamp_and_is_not_written():
    """An audit is judged every vip.audit_interval: on a calm site that was a write a second."""
    before = calm()
    d = decide(before, audited(obs(server("master"), server("standby")), 99.5, "master"), 100.0, CFG)
    assert d.state.vip_audit_at == 99.5 and not d.actions
    assert not worth_saving(before, d.state, d.actions)


def test_a_release_told_again_is_written_first():
    o = obs(server("master"), server("standby"))
    first = decide(calm(), audited(o, 99.5, "master", "standby"), 100.0, CFG)
    again = decide(first.state, audited(o, 101.5, "master", "standby"), 102.0, CFG)
    assert [type(a) for a in acting(again.actions)] == [ReleaseIp]
    assert worth_saving(first.state, again.state, again.actions)


def test_a_decision_that_acts_is_written_even_with_the_same_substance():
    """Persist before acting, whatever changed: a restart then resumes, never repeats."""
    state = calm()
    assert worth_saving(state, state.evolve(vip_audit_at=101.5), (ReleaseIp("standby"),))


def test_a_phase_change_is_written():
    d = decide(NORMAL, obs(dead("master"), server("standby")), 100.0, CFG)
    assert d.state.phase is not Phase.NORMAL
    assert worth_saving(NORMAL, d.state, d.actions)


def test_a_new_reason_alone_is_not_written():
    state = calm()
    assert not worth_saving(state, state.evolve(reason="all servers answer"), ())
