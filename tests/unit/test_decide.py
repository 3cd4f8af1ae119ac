"""The decision core against every safety rule: actions, their order and the reason."""
from __future__ import annotations

import dataclasses

import pytest

from firmware.decide import decide
from firmware.model import (ActionResult, Demote, Fence, HoldFence, LinkState, Notify, Promote, Rejoin,
                            ReleaseIp, Request, RequestKind, Role, SetStatus, TakeIp, VerifyIp)
from firmware.site_state import Phase, State
from tests.unit.sitekit import dead, failed, obs, ok, report, server, site_config

CFG = site_config()
NORMAL = State(phase=Phase.NORMAL, primary="master", seen_run=1, led="ok")


def kinds(actions) -> list[str]:
    return [type(a).__name__ if not isinstance(a, Notify) else f"Notify:{a.event}" for a in actions]


def step(state, o, now=100.0, cfg=CFG):
    d = decide(state, o, now, cfg)
    return d.state, list(d.actions), d.reason


def fail_over_to_fencing(state=NORMAL, cfg=CFG):
    return step(state, obs(dead("master"), server("standby")), cfg=cfg)


# ---------------------------------------------------------------- rule 1: dead = silent on every channel


@pytest.mark.parametrize("serial,lan", [(LinkState.DEAD, LinkState.UP), (LinkState.UP, LinkState.DEAD),
                                         (LinkState.LATE, LinkState.DEAD), (LinkState.DEAD, LinkState.UNKNOWN)])
def test_one_channel_lost_is_a_warning_never_a_failover(serial, lan):
    st, actions, reason = step(NORMAL, obs(server("master", serial, lan), server("standby")))
    assert st.phase is Phase.NORMAL
    assert not any(isinstance(a, (Fence, Promote, TakeIp)) for a in actions)
    if LinkState.DEAD in (serial, lan) and LinkState.UNKNOWN not in (serial, lan):
        assert "Notify:link-down" in kinds(actions)
        assert "link down" in reason


def test_link_down_is_raised_once_and_cleared_once():
    o = obs(server("master", LinkState.DEAD, LinkState.UP), server("standby"))
    st, actions, _ = step(NORMAL, o)
    assert kinds(actions).count("Notify:link-down") == 1
    st2, actions2, _ = step(st, o, now=101)
    assert "Notify:link-down" not in kinds(actions2)
    _, actions3, _ = step(st2, obs(server("master"), server("standby")), now=102)
    assert kinds(actions3).count("Notify:link-up") == 1


def test_unknown_links_at_start_up_raise_nothing():
    st = State(seen_run=1)
    o = obs(server("master", LinkState.UNKNOWN, LinkState.UNKNOWN, rep=None),
            server("standby", LinkState.UNKNOWN, LinkState.UNKNOWN))
    st2, actions, reason = step(st, o)
    assert st2.phase is Phase.STARTING
    assert [a for a in actions if isinstance(a, Notify)] == []
    assert "waiting for first replies" in reason


def test_start_up_learns_the_primary_from_reports():
    st2, _, reason = step(State(seen_run=1), obs(server("master"), server("standby")))
    assert st2.phase is Phase.NORMAL and st2.primary == "master"
    assert "master reports the primary role" in reason


# ---------------------------------------------------------------- rule 2: fence before promote


def test_dead_primary_is_fenced_first_and_nothing_else_runs():
    st, actions, reason = fail_over_to_fencing()
    assert st.phase is Phase.FENCING and st.old == "master" and st.target == "standby"
    acting = [a for a in actions if not isinstance(a, (Notify, SetStatus))]
    assert acting == [Fence("master", ref=acting[0].ref)] and st.awaiting == (acting[0].id,)
    assert kinds(actions).index("Notify:failover-started") < kinds(actions).index("Fence")
    assert "fencing it, then promoting standby" in reason


def test_fence_confirmed_then_promote_then_ip_then_verify():
    st, actions, _ = fail_over_to_fencing()
    fence = next(a for a in actions if isinstance(a, Fence))
    o = lambda *results: obs(dead("master"), server("standby"), results=results)  # noqa: E731
    st, actions, reason = step(st, o(ok(fence.id, "power off")), now=100.1)
    assert st.phase is Phase.PROMOTING and st.fenced == ("master",)
    assert kinds(actions)[:2] == ["Notify:fence-done", "Promote"]
    promote = actions[1]
    st, actions, _ = step(st, o(ok(promote.id)), now=100.2)
    assert st.phase is Phase.TAKING_IP and st.primary == "standby"
    take = next(a for a in actions if isinstance(a, TakeIp))
    st, actions, _ = step(st, o(ok(take.id)), now=100.3)
    verify = next(a for a in actions if isinstance(a, VerifyIp))
    assert st.phase is Phase.VERIFYING and verify.expect == "standby"
    st, actions, reason = step(st, o(ok(verify.id, "macs=02:00:00:00:00:02")), now=100.4)
    assert st.phase is Phase.NORMAL and st.primary == "standby" and st.failovers == 1
    assert "Notify:failover-completed" in kinds(actions)
    assert st.hold_down_until == pytest.approx(100.4 + CFG.timing.hold_down)
    assert "failover complete: standby is primary" in reason


def test_fence_not_confirmed_means_no_promotion_and_an_alarm():
    st, actions, _ = fail_over_to_fencing()
    fence = next(a for a in actions if isinstance(a, Fence))
    st, actions, reason = step(st, obs(dead("master"), server("standby"),
                                       results=(failed(fence.id, "power still on after 2.0 s"),)), now=100.1)
    assert st.phase is Phase.HALTED
    assert not any(isinstance(a, Promote) for a in actions)
    assert {"Notify:fence-failed", "Notify:failover-failed", "Notify:operator-needed"} <= set(kinds(actions))
    assert "not confirmed" in reason and "no promotion" in reason


def test_fence_without_any_result_times_out_into_halt():
    st, _, _ = fail_over_to_fencing()
    st2, actions, _ = step(st, obs(dead("master"), server("standby")), now=100.5)
    assert st2.phase is Phase.FENCING and actions == []
    st3, actions, reason = step(st, obs(dead("master"), server("standby")),
                                now=100 + CFG.timing.fence_timeout + 1.5)
    assert st3.phase is Phase.HALTED and "no result within" in reason
    assert not any(isinstance(a, Promote) for a in actions)


def test_without_fence_relay_the_standby_must_confirm_the_loss():
    cfg = site_config(policy={"fencing": "none"})
    unsure = report(hears=None)
    st, actions, reason = step(NORMAL, obs(dead("master"), server("standby", rep=unsure)), cfg=cfg)
    assert st.phase is Phase.NORMAL and "policy.fencing = 'none'" in reason
    st, actions, _ = step(NORMAL, obs(dead("master"), server("standby", rep=report(hears=False))), cfg=cfg)
    assert st.phase is Phase.PROMOTING
    assert [type(a) for a in actions if not isinstance(a, (Notify, SetStatus))] == [Promote]


# ---------------------------------------------------------------- rule 3: healthy and in sync only


@pytest.mark.parametrize("rep,words", [
    (report(in_sync=False, lag=5_000_000), "not in sync"),
    (report(healthy=False), "health check fails"),
    (report(role=Role.UNKNOWN), "role is unknown"),
])
def test_no_failover_onto_a_bad_standby(rep, words):
    st, actions, reason = step(NORMAL, obs(dead("master"), server("standby", rep=rep)))
    assert st.phase is Phase.NORMAL
    assert not any(isinstance(a, (Fence, Promote)) for a in actions)
    assert "Notify:operator-needed" in kinds(actions)
    assert "failover --force" in reason


def test_lagging_standby_raises_the_alarm_while_all_is_well():
    st, actions, _ = step(NORMAL, obs(server("master"), server("standby", rep=report(in_sync=False, lag=10))))
    assert "Notify:standby-lagging" in kinds(actions)


def test_lag_limit_admits_a_standby_within_it():
    cfg = site_config(policy={"lag_limit_bytes": 1000})
    st, _, _ = step(NORMAL, obs(dead("master"), server("standby", rep=report(in_sync=False, lag=999))), cfg=cfg)
    assert st.phase is Phase.FENCING
    st, _, _ = step(NORMAL, obs(dead("master"), server("standby", rep=report(in_sync=False, lag=1001))), cfg=cfg)
    assert st.phase is Phase.NORMAL


def test_target_is_in_sync_least_lag_then_priority():
    cfg = site_config(("master", "standby", "standby2"), policy={"lag_limit_bytes": 100})
    st, _, _ = step(NORMAL, obs(dead("master"), server("standby", rep=report(in_sync=False, lag=50)),
                                server("standby2", rep=report(lag=0))), cfg=cfg)
    assert st.target == "standby2"
    st, _, _ = step(NORMAL, obs(dead("master"), server("standby"), server("standby2")), cfg=cfg)
    assert st.target == "standby"  # equal lag: higher priority


# ---------------------------------------------------------------- rule 4: the standby's own view


def test_standby_that_still_hears_the_primary_blocks_failover():
    st, actions, reason = step(NORMAL, obs(dead("master"), server("standby", rep=report(hears=True))))
    assert st.phase is Phase.NORMAL
    assert not any(isinstance(a, (Fence, Promote)) for a in actions)
    assert "the appliance is the one cut off" in reason


def test_replication_stream_counts_when_no_peer_heartbeat():
    st, _, reason = step(NORMAL, obs(dead("master"), server("standby", rep=report(hears=None, peer=True))))
    assert st.phase is Phase.NORMAL and "cut off" in reason


# ---------------------------------------------------------------- rule 5: no flapping


def test_hold_down_blocks_a_second_automatic_failover():
    st = dataclasses.replace(NORMAL, primary="standby", fenced=("master",), hold_down_until=200.0)
    cfg = site_config(("master", "standby", "standby2"))
    o = obs(dead("master"), dead("standby"), server("standby2"))
    st2, actions, reason = step(st, o, now=150.0, cfg=cfg)
    assert st2.phase is Phase.NORMAL and "hold-down" in reason
    assert not any(isinstance(a, Fence) for a in actions)
    st3, _, _ = step(st, o, now=201.0, cfg=cfg)
    assert st3.phase is Phase.FENCING and st3.old == "standby"


def test_returning_old_primary_stays_fenced_and_no_failback():
    st = dataclasses.replace(NORMAL, primary="standby", fenced=("master",), hold_down_until=200.0)
    back = server("master", rep=report(role=Role.PRIMARY))
    st2, actions, reason = step(st, obs(back, server("standby", rep=report(role=Role.PRIMARY))), now=300)
    assert st2.primary == "standby" and st2.fenced == ("master",)
    assert "Notify:old-primary-returned" in kinds(actions)
    assert not any(isinstance(a, (Promote, TakeIp, Fence)) for a in actions)
    assert "stays fenced" in reason
    _, actions, _ = step(st2, obs(back, server("standby", rep=report(role=Role.PRIMARY))), now=301)
    assert "Notify:old-primary-returned" not in kinds(actions)


def test_returning_old_primary_rejoins_by_policy():
    cfg = site_config(policy={"old_primary": "rejoin-as-standby"})
    st = dataclasses.replace(NORMAL, primary="standby", fenced=("master",))
    st2, actions, _ = step(st, obs(server("master", rep=report(role=Role.PRIMARY)),
                                   server("standby", rep=report(role=Role.PRIMARY))), cfg=cfg)
    rejoin = next(a for a in actions if isinstance(a, Rejoin))
    assert (rejoin.server, rejoin.primary) == ("master", "standby")
    assert st2.fenced == ()


# ---------------------------------------------------------------- restarts: resume, never repeat


def test_restart_in_fencing_reissues_the_fence_and_holds_nothing_else():
    st, _, _ = fail_over_to_fencing()
    st2, actions, reason = step(st, obs(dead("master"), server("standby"), run=2), now=105)
    assert st2.phase is Phase.FENCING
    assert [type(a) for a in actions if not isinstance(a, (Notify, SetStatus))] == [Fence]
    assert "resumed fencing" in reason


def test_restart_after_fence_holds_the_fence_and_never_fences_again():
    st = dataclasses.replace(NORMAL, phase=Phase.PROMOTING, old="master", target="standby",
                             fenced=("master",), awaiting=("Promote#9",), issued_run=1, operation="failover")
    st2, actions, _ = step(st, obs(dead("master"), server("standby"), run=2), now=105)
    assert [type(a) for a in actions if not isinstance(a, (Notify, SetStatus))] == [HoldFence, Promote]
    assert not any(isinstance(a, Fence) for a in actions)
    assert st2.phase is Phase.PROMOTING


def test_completed_failover_never_flips_back_after_restart():
    st = dataclasses.replace(NORMAL, primary="standby", fenced=("master",), hold_down_until=500.0, failovers=1)
    st2, actions, _ = step(st, obs(dead("master"), server("standby", rep=report(role=Role.PRIMARY)), run=2))
    assert st2.primary == "standby" and st2.phase is Phase.NORMAL
    assert [type(a) for a in actions if not isinstance(a, (Notify, SetStatus))] == [HoldFence]


def test_state_round_trips_through_its_dict():
    st, _, _ = fail_over_to_fencing()
    assert State.from_dict(st.to_dict()) == st


# ---------------------------------------------------------------- operators and observe-only


def test_observe_only_decides_but_acts_on_nothing():
    st = dataclasses.replace(NORMAL, maintenance=True)
    st2, actions, reason = step(st, obs(dead("master"), server("standby")))
    assert st2.phase is Phase.NORMAL
    assert all(isinstance(a, (Notify, SetStatus)) for a in actions)
    assert "would fail over to standby" in reason and "maintenance" in reason


def test_maintenance_on_and_off_are_requests():
    st, actions, _ = step(NORMAL, obs(server("master"), server("standby"),
                                      requests=(Request(RequestKind.MAINTENANCE_ON),)))
    assert st.maintenance and "Notify:maintenance-on" in kinds(actions)
    st, actions, _ = step(st, obs(server("master"), server("standby"),
                                  requests=(Request(RequestKind.MAINTENANCE_OFF),)))
    assert not st.maintenance and "Notify:maintenance-off" in kinds(actions)


def test_manual_switchover_demotes_then_waits_for_sync_then_promotes():
    o = obs(server("master"), server("standby"), requests=(Request(RequestKind.SWITCHOVER),))
    st, actions, _ = step(NORMAL, o)
    assert st.phase is Phase.DEMOTING
    waits = [a for a in actions if not isinstance(a, (Notify, SetStatus))]
    assert [type(a) for a in waits] == [Demote, ReleaseIp]
    demoted = server("master", rep=report(role=Role.STANDBY))
    st, actions, _ = step(st, obs(demoted, server("standby", rep=report(lag=4096, in_sync=False)),
                                  results=tuple(ok(a.id) for a in waits)), now=101)
    assert st.phase is Phase.SYNCING
    st, actions, _ = step(st, obs(demoted, server("standby", rep=report(lag=4096, in_sync=False))), now=101.1)
    assert st.phase is Phase.SYNCING and "catch up" in st.reason
    st, actions, _ = step(st, obs(demoted, server("standby")), now=101.2)
    assert st.phase is Phase.PROMOTING and any(isinstance(a, Promote) for a in actions)


def test_manual_failover_needs_force_and_still_fences():
    refused, _, reason = step(NORMAL, obs(server("master"), server("standby"),
                                          requests=(Request(RequestKind.FAILOVER, "standby"),)))
    assert refused.phase is Phase.NORMAL and "--force" in reason
    st, actions, _ = step(NORMAL, obs(server("master"), server("standby", rep=report(in_sync=False, lag=9)),
                                      requests=(Request(RequestKind.FAILOVER, "standby", force=True),)))
    assert st.phase is Phase.FENCING and any(isinstance(a, Fence) for a in actions)


def test_halt_is_left_only_by_an_operator():
    st = dataclasses.replace(NORMAL, phase=Phase.HALTED)
    st2, actions, _ = step(st, obs(dead("master"), server("standby")))
    assert st2.phase is Phase.HALTED and not any(isinstance(a, Fence) for a in actions)
    st3, _, _ = step(st, obs(server("master"), server("standby"),
                             requests=(Request(RequestKind.MAINTENANCE_OFF),)))
    assert st3.phase is Phase.NORMAL


VERIFYING = dataclasses.replace(NORMAL, phase=Phase.VERIFYING, old="master", target="standby", primary="standby",
                                awaiting=("VerifyIp#5",), issued_run=1, operation="failover", fenced=("master",),
                                verify_tries=1)


def test_split_brain_suspected_when_two_macs_answer():
    split = ActionResult("VerifyIp#5", False, "2 MACs answer: 02:..:01, 02:..:02", "split-brain")
    st2, actions, reason = step(VERIFYING, obs(dead("master"), server("standby"), results=(split,)))
    assert kinds(actions)[:2] == ["Notify:split-brain-suspected", "Notify:operator-needed"]
    assert "02:..:01, 02:..:02" in next(a for a in actions if isinstance(a, Notify)).text
    assert st2.phase is Phase.HALTED and st2.primary == "standby" and st2.hold_down_until is not None
    assert "split brain suspected, waiting for an operator" in reason
    assert "Notify:failover-completed" not in kinds(actions)


def test_a_wrong_mac_is_retried_whatever_the_words_of_the_detail():
    # the kind of failure comes from its code, not from words such as "two" in a server's name
    wrong = failed("VerifyIp#5", "02:00:00:00:00:01 answers, expected node-two (02:00:00:00:00:02): split?")
    st2, actions, reason = step(VERIFYING, obs(dead("master"), server("standby"), results=(wrong,)))
    assert st2.phase is Phase.VERIFYING and st2.verify_tries == 2
    assert "Notify:split-brain-suspected" not in kinds(actions)
    assert "ARP check 1 of 3 failed" in reason


# ---------------------------------------------------------------- UPS policies through decide


def _ups(flags: str, runtime: float = 1800):
    from firmware.model import UpsObs
    return UpsObs("u", True, frozenset(flags.split()), 50.0, runtime)


def test_low_battery_on_the_primary_starts_a_planned_switchover():
    st = dataclasses.replace(NORMAL, ups_seen=(("master", True, ("OB",), 50.0, 900.0),))
    st2, actions, reason = step(st, obs(server("master", ups=_ups("OB LB", 100)), server("standby", ups=_ups("OL"))))
    assert st2.phase is Phase.DEMOTING and st2.target == "standby" and st2.operation == "switchover"
    assert "Notify:ups-low-battery" in kinds(actions) and "switching over to standby" in reason
    _, again, _ = step(st2, obs(server("master", ups=_ups("OB LB", 90)), server("standby", ups=_ups("OL"))), now=100.1)
    assert not any(isinstance(a, Demote) for a in again)  # once, not every cycle


def test_low_battery_with_no_standby_on_line_backs_up_then_shuts_down_in_order():
    from firmware.model import Backup, Shutdown
    o = obs(server("master", ups=_ups("OB LB", 100)), server("standby", ups=_ups("OB", 900)))
    st2, actions, reason = step(NORMAL, o)
    acting = [a for a in actions if isinstance(a, (Backup, Shutdown))]
    assert [(type(a).__name__, a.server) for a in acting] == [("Backup", "master"), ("Shutdown", "standby"),
                                                               ("Shutdown", "master")]
    assert st2.phase is Phase.NORMAL and "then shutdown standby, master" in reason
    _, again, _ = step(st2, o, now=100.1)
    assert not any(isinstance(a, (Backup, Shutdown)) for a in again)


def test_ups_already_on_battery_at_start_up_raises_nothing():
    st2, actions, _ = step(NORMAL, obs(server("master", ups=_ups("OB")), server("standby", ups=_ups("OL"))))
    assert "Notify:ups-on-battery" not in kinds(actions)
    _, actions, _ = step(st2, obs(server("master", ups=_ups("OL")), server("standby", ups=_ups("OB"))), now=101)
    assert "Notify:ups-on-battery" in kinds(actions) and "Notify:ups-power-restored" in kinds(actions)


def test_a_phase_waiting_on_two_actions_gets_their_results_in_different_cycles():
    o = obs(server("master"), server("standby"), requests=(Request(RequestKind.SWITCHOVER),))
    st, actions, _ = step(NORMAL, o)
    demote, release = [a for a in actions if isinstance(a, (Demote, ReleaseIp))]
    st, _, _ = step(st, obs(server("master"), server("standby"), results=(ok(demote.id),)), now=100.05)
    assert st.phase is Phase.DEMOTING
    st, _, _ = step(st, obs(server("master"), server("standby"), results=(ok(release.id),)), now=100.1)
    assert st.phase is Phase.SYNCING


def test_a_ups_that_went_on_battery_during_a_monitoring_gap_is_reported_when_seen_again():
    from firmware.model import UpsObs
    lost = UpsObs("u", False, error="driver not connected")
    st, _, _ = step(NORMAL, obs(server("master", ups=_ups("OL")), server("standby", ups=_ups("OL"))))
    st, actions, _ = step(st, obs(server("master", ups=lost), server("standby", ups=_ups("OL"))), now=101)
    assert kinds(actions).count("Notify:ups-monitoring-lost") == 1
    _, actions, reason = step(st, obs(server("master", ups=_ups("OB")), server("standby", ups=_ups("OL"))), now=102)
    assert [k for k in kinds(actions) if k.startswith("Notify:ups")] == ["Notify:ups-monitoring-restored",
                                                                          "Notify:ups-on-battery"]
    assert "master: ups-on-battery" in reason


def test_a_late_reply_is_a_warning_once_per_spell_and_nothing_more():
    late = obs(server("master", LinkState.LATE, LinkState.UP), server("standby"))
    st, actions, _ = step(NORMAL, late)
    d = decide(NORMAL, late, 100.0, CFG)
    assert d.warnings == ("master: late reply on serial (silent past timing.warn_time = 0.12 s,"
                          " dead at timing.dead_time = 0.2 s)",)
    assert [a for a in actions if not isinstance(a, SetStatus)] == [] and st.led == "ok"
    assert decide(st, late, 100.04, CFG).warnings == ()  # still the same spell
    back = decide(st, obs(server("master"), server("standby")), 100.08, CFG)
    assert decide(back.state, late, 100.2, CFG).warnings != ()  # a new spell
