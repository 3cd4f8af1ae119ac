"""Rules 8 and 9 on decide: a primary that answers but does not serve (health, ping nodes),
the network rather than the primary failing, the virtual IP audit, and never-promote."""
from __future__ import annotations

import dataclasses

from firmware.decide import decide
from firmware.model import (Fence, Observations, Promote, ReleaseIp, Request, RequestKind, Role, ServerObs, TakeIp,
                            VipAudit)
from firmware.site_state import CondKind, Condition, Phase, State
from tests.unit.sitekit import MACS, acting, dead, events, obs, report, server, site_config

CFG = site_config()  # shipped defaults: unhealthy_grace 3 s, health_restore 1 s, reachability_grace 3 s
NORMAL = State(phase=Phase.NORMAL, primary="master", seen_run=1, led="ok")


def step(state: State, o: Observations, now: float, cfg=CFG):
    d = decide(state, o, now, cfg)
    return d.state, list(d.actions), d.reason


def srv(name: str, healthy: bool = True, reach: bool | None = None, vip: bool | None = None,
        role: Role | None = None) -> ServerObs:
    role = role or (Role.PRIMARY if name == "master" else Role.STANDBY)
    rep = dataclasses.replace(report(role), healthy=healthy, reach=reach,
                              detail="" if healthy else "postgres at /run/pg:5432: connection refused")
    if vip is not None:
        rep = dataclasses.replace(rep, vip=vip)
    return server(name, rep=rep)


def run(state: State, frames: list[tuple[float, Observations]], cfg=CFG):
    """Feed observations at the given times; all actions and the reasons, in order."""
    actions, reasons = [], []
    for now, o in frames:
        state, acts, reason = step(state, o, now, cfg)
        actions += acts
        reasons.append(reason)
    return state, actions, reasons


# ---------------------------------------------------------------- rule 8: service health


def test_unhealthy_primary_is_degraded_then_failed_over_fenced_first_after_the_grace():
    sick = obs(srv("master", healthy=False), srv("standby"))
    st, actions, reason = step(NORMAL, sick, 100.0)
    assert events(actions) == ["service-degraded"] and not acting(actions)
    assert reason == ("master: service health check fails (postgres at /run/pg:5432: connection refused); failover if"
                      " it lasts policy.unhealthy_grace = 3 s")
    st, actions, reason = step(st, sick, 102.9)
    assert st.phase is Phase.NORMAL and not acting(actions) and "service-degraded" not in events(actions)
    st, actions, reason = step(st, sick, 103.0)
    assert st.phase is Phase.FENCING and acting(actions) == [Fence("master", ref=acting(actions)[0].ref)]
    assert reason == ("failover: primary master answers but its service health check has failed for 3.0 s, past"
                      " policy.unhealthy_grace = 3 s (postgres at /run/pg:5432: connection refused); fencing it,"
                      " then promoting standby")
    assert "failover-started" in events(actions)


def test_health_back_inside_the_grace_is_degraded_then_restored_and_no_failover():
    sick, well = obs(srv("master", healthy=False), srv("standby")), obs(srv("master"), srv("standby"))
    st, actions, reasons = run(NORMAL, [(100.0, sick), (101.5, sick), (101.6, well), (102.0, well), (102.6, well)])
    assert st.phase is Phase.NORMAL and not acting(actions)
    assert events(actions) == ["service-degraded", "service-restored"]
    assert reasons[2] == ("master: service health check passes again; service-restored once it holds"
                          " policy.health_restore = 1 s")
    assert reasons[4] == "master: service restored (its health check has passed for 1.0 s)"
    assert Condition(CondKind.SERVICE_DEGRADED, "master") not in st.conditions


def test_a_flapping_check_never_adds_up_to_a_failover():
    """Unhealthy 90 % of the time for a long while, but never for the whole grace at once."""
    frames = []
    for i in range(20):
        t = 100.0 + i * 3.0
        frames += [(t, obs(srv("master", healthy=False), srv("standby"))), (t + 2.9, obs(srv("master", healthy=False),
                                                                                        srv("standby"))),
                   (t + 2.95, obs(srv("master"), srv("standby")))]
    st, actions, _ = run(NORMAL, frames)
    assert st.phase is Phase.NORMAL and not any(isinstance(a, (Fence, Promote)) for a in actions)
    # hysteresis on the alerts: health never held policy.health_restore, so one degraded, no restored
    assert events(actions) == ["service-degraded"]


def test_unhealthy_primary_with_no_fence_relay_waits_for_an_operator():
    cfg = site_config(policy={"fencing": "none"})
    sick = obs(srv("master", healthy=False), srv("standby"))
    st, _, _ = step(NORMAL, sick, 100.0, cfg)
    st, actions, reason = step(st, sick, 104.0, cfg)
    assert st.phase is Phase.NORMAL and not acting(actions) and "operator-needed" in events(actions)
    assert reason.endswith("would fail over to standby, but policy.fencing = 'none' cannot stop a primary that"
                           " is alive")


def test_unhealthy_primary_and_an_unhealthy_standby_wait_for_an_operator():
    sick = obs(srv("master", healthy=False), srv("standby", healthy=False))
    st, _, _ = step(NORMAL, sick, 100.0)
    st, actions, reason = step(st, sick, 103.5)
    assert st.phase is Phase.NORMAL and "operator-needed" in events(actions)
    assert "and no standby that reaches the clients may take over (standby: its health check fails" in reason


def test_service_spells_of_an_old_primary_are_dropped_after_the_failover():
    st = dataclasses.replace(NORMAL, primary="standby", unhealthy=("master", 90.0),
                             conditions=(Condition(CondKind.SERVICE_DEGRADED, "master"),))
    st, actions, _ = step(st, obs(srv("master", role=Role.STANDBY), srv("standby", role=Role.PRIMARY)), 100.0)
    assert st.unhealthy is None and st.conditions == () and not events(actions)


# ---------------------------------------------------------------- rule 8: ping nodes


def test_primary_cut_from_the_clients_is_failed_over_after_the_reachability_grace():
    cut = obs(srv("master", reach=False), srv("standby", reach=True))
    st, actions, reason = step(NORMAL, cut, 100.0)
    assert events(actions) == ["clients-unreachable"] and not acting(actions)
    assert reason == ("master: reaches none of the ping targets while standby reach them; failover if it lasts"
                      " policy.reachability_grace = 3 s")
    st, actions, reason = step(st, cut, 103.0)
    assert st.phase is Phase.FENCING and isinstance(acting(actions)[0], Fence)
    assert reason == ("failover: primary master has reached none of the ping targets for 3.0 s while standby reach"
                      " them, past policy.reachability_grace = 3 s; fencing it, then promoting standby")


def test_reach_back_inside_the_grace_clears_the_alert():
    st, actions, reasons = run(NORMAL, [(100.0, obs(srv("master", reach=False), srv("standby", reach=True))),
                                        (102.0, obs(srv("master", reach=True), srv("standby", reach=True))),
                                        (104.0, obs(srv("master", reach=False), srv("standby", reach=True)))])
    assert st.phase is Phase.NORMAL and not acting(actions)
    assert events(actions) == ["clients-unreachable", "clients-reachable", "clients-unreachable"]
    assert reasons[1] == "master: reaches the ping targets again"
    assert st.unreachable == ("master", 104.0)  # the count started again


def test_nobody_reaching_the_targets_is_the_network_no_failover():
    down = obs(srv("master", reach=False), srv("standby", reach=False))
    st, actions, reasons = run(NORMAL, [(100.0, down), (110.0, down)])
    assert st.phase is Phase.NORMAL and not acting(actions)
    assert events(actions) == ["network-down"]
    assert reasons[0] == ("no server reaches the ping targets (master, standby); the appliance does not probe them:"
                          " the clients' network failed, not the primary; no failover")
    st, actions, reason = step(st, obs(srv("master", reach=True), srv("standby", reach=True)), 111.0)
    assert events(actions) == ["network-up"] and reason == "the ping targets answer again"


def test_network_down_names_the_appliance_view():
    down = dataclasses.replace(obs(srv("master", reach=False), srv("standby", reach=False)), reach=True)
    _, _, reason = step(NORMAL, down, 100.0)
    assert "the appliance reaches them: the servers' side failed" in reason


def test_the_primary_losing_the_targets_after_the_standby_did_is_no_failover():
    st, actions, reasons = run(NORMAL, [(100.0, obs(srv("master", reach=False), srv("standby", reach=True))),
                                        (101.0, obs(srv("master", reach=False), srv("standby", reach=False))),
                                        (105.0, obs(srv("master", reach=False), srv("standby", reach=False)))])
    assert st.phase is Phase.NORMAL and not acting(actions)
    assert events(actions) == ["clients-unreachable", "network-down"]
    assert "master: no standby reaches the ping targets either; no failover" in reasons[1]


def test_a_standby_that_does_not_reach_the_clients_is_not_the_target():
    cfg = site_config(servers=("master", "standby", "standby2"))
    cut = obs(srv("master", reach=False), srv("standby", reach=False), srv("standby2", reach=True))
    st, _, _ = step(NORMAL, cut, 100.0, cfg)
    st, _, reason = step(st, cut, 103.0, cfg)
    assert st.phase is Phase.FENCING and st.op.target == "standby2" and "promoting standby2" in reason


# ---------------------------------------------------------------- rule 9: the virtual IP audit


def audited(o: Observations, at: float, *holders: str) -> Observations:
    return dataclasses.replace(o, vip_audit=VipAudit(at, frozenset(MACS.get(h, h) for h in holders)))


def test_a_standby_holding_the_address_is_told_to_release_it_then_restored():
    o = obs(srv("master", vip=True), srv("standby", vip=True))
    st, actions, reason = step(NORMAL, audited(o, 99.5, "master", "standby"), 100.0)
    assert st.phase is Phase.NORMAL and events(actions) == ["vip-rogue"]
    assert [type(a) for a in acting(actions)] == [ReleaseIp] and acting(actions)[0].server == "standby"
    assert reason == "standby holds the virtual IP but master is the primary: told to release it"
    st, actions, _ = step(st, audited(o, 99.5, "master", "standby"), 100.1)  # the same audit: judged once
    assert not acting(actions)
    st, actions, reason = step(st, audited(obs(srv("master", vip=True), srv("standby")), 100.5, "master"), 101.0)
    assert events(actions) == ["vip-restored"] and reason == "only master answers for the virtual IP again"
    assert st.conditions == () and st.vip_released == ()


def test_a_vip_flag_alone_counts_as_holding():
    _, actions, _ = step(NORMAL, audited(obs(srv("master"), srv("standby", vip=True)), 99.5, "master"), 100.0)
    assert events(actions) == ["vip-rogue"] and isinstance(acting(actions)[0], ReleaseIp)


def test_a_holder_that_does_not_let_go_is_split_brain_and_halts():
    o = obs(srv("master"), srv("standby"))
    st, _, _ = step(NORMAL, audited(o, 99.5, "master", "standby"), 100.0)
    st, actions, _ = step(st, audited(o, 110.0, "master", "standby"), 110.5)
    assert st.phase is Phase.NORMAL and isinstance(acting(actions)[0], ReleaseIp)  # told again
    st, actions, reason = step(st, audited(o, 116.0, "master", "standby"), 116.5)
    assert st.phase is Phase.HALTED and "split-brain-suspected" in events(actions) and not acting(actions)
    assert reason == ("split brain suspected: standby still holds the virtual IP 16.5 s after being told to release"
                      " it (timing.action_timeout = 15 s); halted, waiting for an operator")


def test_a_stranger_or_a_second_primary_answering_is_split_brain():
    st, actions, reason = step(NORMAL, audited(obs(srv("master"), srv("standby")), 99.5, "master",
                                               "02:aa:bb:cc:dd:ee"), 100.0)
    assert st.phase is Phase.HALTED and "split-brain-suspected" in events(actions)
    assert reason.startswith("split brain suspected: the virtual IP is answered by 02:aa:bb:cc:dd:ee (no server of"
                             " this site) besides master, the primary")
    st, _, reason = step(NORMAL, audited(obs(srv("master"), srv("standby", role=Role.PRIMARY)), 99.5, "master",
                                         "standby"), 100.0)
    assert st.phase is Phase.HALTED and "standby (claims the primary role)" in reason


def test_nobody_answering_has_the_primary_take_the_address_again():
    o = obs(srv("master"), srv("standby"))
    st, actions, reason = step(NORMAL, audited(o, 99.5), 100.0)
    assert events(actions) == ["vip-lost"] and [type(a) for a in acting(actions)] == [TakeIp]
    assert acting(actions)[0].server == "master"
    assert reason == ("nobody answers ARP for the virtual IP while master is the primary: told to take it again and"
                      " announce it")
    st, actions, _ = step(st, audited(o, 100.5), 101.0)
    assert events(actions) == [] and [type(a) for a in acting(actions)] == [TakeIp]  # again, one alert
    st, actions, _ = step(st, audited(o, 101.5, "master"), 102.0)
    assert events(actions) == ["vip-restored"]


def test_audit_in_observe_mode_alerts_and_acts_on_nothing():
    cfg = site_config(site={"mode": "observe"})
    st, actions, reason = step(NORMAL, audited(obs(srv("master"), srv("standby")), 99.5), 100.0, cfg)
    assert events(actions) == ["vip-lost"] and not acting(actions)
    assert reason.endswith("not taken again (site.mode = observe)")


def test_an_audit_older_than_the_phase_is_not_judged():
    st = dataclasses.replace(NORMAL, since=100.0)
    _, actions, _ = step(st, audited(obs(srv("master"), srv("standby")), 99.9), 100.2)
    assert not actions


# ---------------------------------------------------------------- never-promote


def test_priority_zero_is_never_chosen_automatically_but_an_operator_can():
    cfg = site_config(servers=("master", "standby"))
    cfg = dataclasses.replace(cfg, servers=(cfg.servers[0], dataclasses.replace(cfg.servers[1], priority=0)))
    st, actions, reason = step(NORMAL, obs(dead("master"), server("standby")), 100.0, cfg)
    assert st.phase is Phase.NORMAL and "operator-needed" in events(actions) and not acting(actions)
    assert reason.endswith("primary master is dead and no standby may take over (standby: its priority is 0: never"
                           " promoted automatically (servers[].priority)); use arbiterctl failover --force")
    forced = obs(dead("master"), server("standby"), requests=(Request(RequestKind.FAILOVER, "standby", True),))
    st, actions, _ = step(st, forced, 101.0, cfg)
    assert st.phase is Phase.FENCING and isinstance(acting(actions)[0], Fence)


def test_priority_orders_standbys_equally_in_sync():
    cfg = site_config(servers=("master", "standby", "standby2"))  # priorities 100, 99, 98
    low_first = dataclasses.replace(cfg, servers=(cfg.servers[0], dataclasses.replace(cfg.servers[1], priority=1),
                                                  cfg.servers[2]))
    st, _, _ = step(NORMAL, obs(dead("master"), server("standby"), server("standby2")), 100.0, low_first)
    assert st.op.target == "standby2"


def test_a_primary_fenced_while_it_answered_has_not_returned_until_it_answers_after_the_fence():
    from firmware.model import Channel, LinkObs, LinkState

    def master(last_seen: float) -> ServerObs:
        return ServerObs("master", (LinkObs(Channel.SERIAL, LinkState.UP, last_seen),
                                    LinkObs(Channel.LAN, LinkState.UP, last_seen)), report(Role.PRIMARY))
    st = dataclasses.replace(NORMAL, primary="standby", fenced=("master",), fenced_at=100.0)
    st, actions, _ = step(st, obs(master(99.9), srv("standby", role=Role.PRIMARY)), 100.05)
    assert "old-primary-returned" not in events(actions)
    st, actions, _ = step(st, obs(master(100.5), srv("standby", role=Role.PRIMARY)), 100.6)
    assert "old-primary-returned" in events(actions)


def test_the_audit_takes_no_flag_from_a_fenced_old_primary_before_it_answers_after_the_fence():
    """Its links look alive for a dead time after the fence (and after each stall of the
    appliance's loop), with its last report from before: primary role, address held."""
    from firmware.model import Channel, LinkObs, LinkState

    def master(last_seen: float) -> ServerObs:
        rep = dataclasses.replace(report(Role.PRIMARY), vip=True)
        return ServerObs("master", (LinkObs(Channel.SERIAL, LinkState.UP, last_seen),
                                    LinkObs(Channel.LAN, LinkState.UP, last_seen)), rep)
    st = dataclasses.replace(NORMAL, primary="standby", fenced=("master",), fenced_at=100.0, returned=("master",))
    o = obs(master(99.9), srv("standby", role=Role.PRIMARY, vip=True))
    st2, actions, _ = step(st, audited(o, 100.5, "standby"), 101.0)
    assert st2.phase is Phase.NORMAL and "split-brain-suspected" not in events(actions) and not acting(actions)
    o = obs(master(100.8), srv("standby", role=Role.PRIMARY, vip=True))  # it really answers again, claiming the address
    st2, actions, reason = step(st, audited(o, 100.5, "standby"), 101.0)
    assert st2.phase is Phase.HALTED and "master (claims the primary role)" in reason


def test_the_spell_starts_when_the_agent_saw_the_service_fail():
    """A hang is seen when a check times out, but began when that check started."""
    rep = dataclasses.replace(report(Role.PRIMARY), healthy=False, unhealthy_s=0.3, detail="no answer within 0.3 s")
    st, _, _ = step(NORMAL, obs(server("master", rep=rep), srv("standby")), 100.0)
    assert st.unhealthy == ("master", 99.7)
    st, _, _ = step(st, obs(server("master", rep=dataclasses.replace(rep, unhealthy_s=3.0)), srv("standby")), 102.7)
    assert st.phase is Phase.FENCING


def test_the_spell_counts_from_the_reply_not_from_a_late_cycle():
    """A loaded appliance that decides 0.4 s after the reply came does not add 0.4 s to the grace."""
    from firmware.model import Channel, LinkObs, LinkState
    rep = dataclasses.replace(report(Role.PRIMARY), healthy=False, unhealthy_s=0.3, detail="connection refused")
    master = ServerObs("master", (LinkObs(Channel.SERIAL, LinkState.UP, 99.6),
                                  LinkObs(Channel.LAN, LinkState.UP, 99.5)), rep)
    st, _, _ = step(NORMAL, obs(master, srv("standby")), 100.0)
    assert st.unhealthy == ("master", 99.3)
