"""policy.sync_loss, resync and rebuild on decide: the actions, the alerts, the reason, and
the rule that nothing is promoted automatically while durability is reduced."""
from __future__ import annotations

import dataclasses

from firmware.decide import decide
from firmware.model import (Channel, DegradeSync, Fence, LinkObs, LinkState, Rebuild, Rejoin, Request, RequestKind,
                            RestoreSync, ServerObs, Role)
from firmware.site_state import CondKind, Condition, OpKind, Operation, Phase, State
from tests.unit.sitekit import acting, dead, events, failed, obs, ok, report, server, site_config

DEGRADE = site_config(policy={"sync_loss": "degrade", "sync_loss_grace": 2.0})
BLOCK = site_config(policy={"sync_loss_grace": 2.0})
SYNCED = State(phase=Phase.NORMAL, primary="master", seen_run=1, led="ok", sync_seen="master")


def step(state, o, now, cfg=DEGRADE):
    d = decide(state, o, now, cfg)
    return d.state, list(d.actions), d.reason


def master(in_sync: bool | None, lag: int | None = 0):
    return server("master", rep=report(Role.PRIMARY, in_sync=in_sync, lag=lag, hears=None))


def standby_back(in_sync: bool = True, lag: int = 0):
    """The lost standby answering again: it still reads itself synchronous from its own setting."""
    return server("standby", rep=report(Role.STANDBY, in_sync=in_sync, lag=lag, peer=True))


def degraded(cfg=DEGRADE):
    """The standby lost, the grace run out: the state just after the appliance acted."""
    st, actions, reason = step(SYNCED, obs(master(False), dead("standby")), 100.0, cfg)
    assert st.sync_lost_since == 100.0 and acting(actions) == []
    assert "master: no synchronous standby; commits wait (policy.sync_loss_grace = 2 s)" in reason
    st, actions, _ = step(st, obs(master(False), dead("standby")), 101.0, cfg)
    assert acting(actions) == []  # inside the grace
    return step(st, obs(master(False), dead("standby")), 102.1, cfg)


def test_degrade_after_the_grace_orders_the_primary_and_says_durability_is_reduced():
    st, actions, reason = degraded()
    assert acting(actions) == [DegradeSync("master", ("standby",), ref=acting(actions)[0].ref)]
    assert events(actions) == ["durability-reduced"]
    assert st.degraded == ("standby",) and Condition(CondKind.DURABILITY_REDUCED) in st.conditions
    assert ("standby lost for 2.1 s; master stops waiting for it (policy.sync_loss = degrade); no automatic"
            " failover until it is synchronous again") in reason
    st, actions, _ = step(st, obs(master(False), dead("standby"), results=(ok(acting(actions)[0].id),)), 103.0)
    assert acting(actions) == [] and events(actions) == [] and st.pending == ()


def test_block_keeps_commits_waiting_and_raises_one_critical_alert():
    st, actions, reason = degraded(BLOCK)
    assert acting(actions) == [] and events(actions) == ["commits-blocked"]
    assert "commits on master wait (policy.sync_loss = block)" in reason and st.degraded == ()
    st, actions, _ = step(st, obs(master(False), dead("standby")), 110.0, BLOCK)
    assert "commits-blocked" not in events(actions)
    st, actions, reason = step(st, obs(master(True), standby_back()), 111.0, BLOCK)
    assert events(actions) == ["server-up", "standby-available", "durability-restored"]
    assert "master: synchronous standby back; commits no longer wait" in reason
    assert Condition(CondKind.COMMITS_BLOCKED) not in st.conditions


THREE = site_config(servers=("master", "standby", "standby2"), policy={"sync_loss": "degrade"})


def _promoted(*others, results=()):
    """After a failover to the standby: it runs as primary, its promotion emptied synchronous_standby_names."""
    return obs(*others, server("standby", rep=report(Role.PRIMARY, in_sync=False)), results=results)


def durability(actions) -> list[str]:
    return [e for e in events(actions) if e.startswith("durability-")]


def _streaming(name: str, lag: int = 0):
    return server(name, rep=report(Role.STANDBY, in_sync=False, lag=lag, peer=True))


def test_a_primary_promoted_alone_is_durability_reduced_at_once_and_nothing_is_degraded():
    fresh = State(phase=Phase.NORMAL, primary="standby", seen_run=1, led="ok", sync_seen="master", fenced=("master",))
    st, actions, reason = step(fresh, _promoted(dead("master")), 100.0)
    assert acting(actions) == [] and durability(actions) == ["durability-reduced"]
    assert ("standby runs without a synchronous standby since its promotion: acknowledged commits are on one machine"
            " until a standby is named synchronous once caught up (no standby streams from it yet)") in reason
    assert st.sync_lost_since is None and st.degraded == () and st.resync == ()
    st, actions, _ = step(st, _promoted(dead("master")), 200.0)
    assert acting(actions) == [] and durability(actions) == []  # said once


def test_the_standbys_of_a_primary_promoted_alone_are_named_synchronous_once_caught_up():
    fresh = State(phase=Phase.NORMAL, primary="standby", seen_run=1, led="ok", sync_seen="master", fenced=("master",))
    st, actions, _ = step(fresh, _promoted(dead("master"), _streaming("standby2", lag=4096)), 100.0, THREE)
    assert durability(actions) == ["durability-reduced"] and st.resync == ("standby2",) and acting(actions) == []
    st, actions, reason = step(st, _promoted(dead("master"), _streaming("standby2")), 100.1, THREE)
    (restore,) = acting(actions)
    assert isinstance(restore, RestoreSync) and (restore.server, restore.standbys) == ("standby", ("standby2",))
    assert "standby2 caught up with standby: naming it synchronous again" in reason
    st, actions, reason = step(st, _promoted(dead("master"), _streaming("standby2"),
                                             results=(ok(restore.id, "'' -> '\"standby2\"'"),)), 100.2, THREE)
    assert durability(actions) == ["durability-restored"] and st.resync == () and st.sync_seen == "standby"
    assert Condition(CondKind.DURABILITY_REDUCED) not in st.conditions
    # the primary now reports its synchronous standby: nothing more to do
    synced = server("standby", rep=report(Role.PRIMARY, in_sync=True))
    st, actions, _ = step(st, obs(dead("master"), _streaming("standby2"), synced), 100.3, THREE)
    assert acting(actions) == [] and durability(actions) == [] and st.sync_lost_since is None


def test_a_rejoined_old_primary_is_named_synchronous_once_caught_up():
    cfg = site_config(policy={"old_primary": "rejoin-as-standby"})
    st, rejoin = _returned(cfg)
    st = dataclasses.replace(st, sync_seen="master")
    primary = server("standby", rep=report(Role.PRIMARY, in_sync=False))
    st, actions, reason = step(st, obs(_streaming("master", lag=8192), primary, results=(ok(rejoin.id),)), 101.0, cfg)
    assert st.resync == ("master",) and "master: rejoined as a standby of standby" in reason
    st, actions, _ = step(st, obs(_streaming("master"), primary), 102.0, cfg)
    (restore,) = acting(actions)
    assert isinstance(restore, RestoreSync) and (restore.server, restore.standbys) == ("standby", ("master",))


def test_a_site_never_seen_synchronous_is_left_asynchronous():
    alone = State(phase=Phase.NORMAL, primary="master", seen_run=1, led="ok")
    st, actions, _ = step(alone, obs(master(False), _streaming("standby")), 100.0)
    st, actions, _ = step(st, obs(master(False), _streaming("standby")), 200.0)
    assert acting(actions) == [] and events(actions) == [] and st.resync == () and st.sync_lost_since is None


def test_unknown_sync_state_is_neither_a_loss_nor_a_recovery():
    st, actions, _ = step(SYNCED, obs(master(None), dead("standby")), 100.0)
    assert st.sync_lost_since is None and acting(actions) == []


def test_no_automatic_failover_while_degraded_even_onto_a_standby_that_says_it_is_in_sync():
    st, _, _ = degraded()
    st, actions, reason = step(st, obs(dead("master"), standby_back(in_sync=True, lag=4096)), 104.0)
    assert not any(isinstance(a, Fence) for a in actions) and st.phase is Phase.NORMAL
    assert "operator-needed" in events(actions)
    assert ("would fail over to standby, but durability reduced (standby not synchronous since"
            " policy.sync_loss = degrade acted): a standby may miss acknowledged commits") in reason


def test_the_lost_standby_caught_up_is_named_again_then_durability_is_restored_and_failover_allowed():
    st, _, _ = degraded()
    st, actions, _ = step(st, obs(master(False), standby_back(lag=8192)), 104.0)
    assert acting(actions) == []  # streaming, but still replaying
    st, actions, reason = step(st, obs(master(False), standby_back()), 105.0)
    (restore,) = acting(actions)
    assert isinstance(restore, RestoreSync) and restore.server == "master" and restore.standbys == ("standby",)
    assert "standby caught up with master: naming it synchronous again" in reason
    st, actions, _ = step(st, obs(master(False), standby_back()), 105.1)
    assert acting(actions) == []  # one at a time
    st, actions, reason = step(st, obs(master(True), standby_back(), results=(ok(restore.id, "'' -> '\"standby\"'"),)),
                               106.0)
    assert events(actions) == ["durability-restored"] and st.degraded == () and st.resync == ()
    assert "master: standby synchronous again" in reason
    st, actions, _ = step(st, obs(dead("master"), server("standby")), 107.0)
    assert st.phase is Phase.FENCING and any(isinstance(a, Fence) for a in actions)


def test_a_failed_degrade_is_a_critical_alert_and_is_tried_again_after_a_grace():
    st, actions, _ = degraded()
    (order,) = acting(actions)
    st, actions, reason = step(st, obs(master(False), dead("standby"), results=(failed(order.id, "no connection"),)),
                               103.0)
    assert events(actions) == ["commits-blocked"] and st.degraded == ()
    assert "sync_degrade on master failed (no connection); trying again" in reason
    st, actions, _ = step(st, obs(master(False), dead("standby")), 105.5)
    assert [type(a) for a in acting(actions)] == [DegradeSync]


def _returned(cfg):
    """After a failover to the standby: the old master powered on again and told to rejoin."""
    st = State(phase=Phase.NORMAL, primary="standby", seen_run=1, led="ok", fenced=("master",))
    st, actions, _ = step(st, obs(server("master", rep=report(Role.PRIMARY, in_sync=False, hears=None)),
                                  server("standby", rep=report(Role.PRIMARY, in_sync=False))), 100.0, cfg)
    (rejoin,) = [a for a in acting(actions) if isinstance(a, Rejoin)]
    return st, rejoin


def test_a_failed_rejoin_is_rebuilt_when_the_policy_allows_and_then_resynced():
    cfg = site_config(policy={"old_primary": "rejoin-as-standby", "auto_rebuild": True})
    st, rejoin = _returned(cfg)
    new_primary = server("standby", rep=report(Role.PRIMARY, in_sync=False))
    st, actions, reason = step(st, obs(server("master", rep=report(Role.UNKNOWN, hears=None)), new_primary,
                                       results=(failed(rejoin.id, "pg_rewind exit 1: could not find WAL"),)), 101.0, cfg)
    (rebuild,) = acting(actions)
    assert isinstance(rebuild, Rebuild) and (rebuild.server, rebuild.primary) == ("master", "standby")
    assert events(actions) == ["rebuild-started"]
    assert "master: rebuilding from standby (rejoin failed: pg_rewind exit 1: could not find WAL;" in reason
    back = server("master", rep=report(Role.STANDBY, in_sync=False, lag=0, peer=True))
    st, actions, _ = step(st, obs(back, new_primary, results=(ok(rebuild.id, "rebuilt from standby in 4.2 s"),)),
                          130.0, cfg)
    assert "rebuild-done" in events(actions) and st.resync == ("master",)
    restore = next(a for a in acting(actions) if isinstance(a, RestoreSync))
    assert (restore.server, restore.standbys) == ("standby", ("master",))


def test_a_failed_rejoin_waits_for_the_operator_without_the_policy():
    cfg = site_config(policy={"old_primary": "rejoin-as-standby"})
    st, rejoin = _returned(cfg)
    st, actions, reason = step(st, obs(server("master", rep=report(Role.UNKNOWN, hears=None)),
                                       server("standby", rep=report(Role.PRIMARY, in_sync=False)),
                                       results=(failed(rejoin.id, "pg_rewind exit 1"),)), 101.0, cfg)
    assert acting(actions) == [] and events(actions) == ["operator-needed"]
    assert "arbiterctl rebuild master copies it afresh (policy.auto_rebuild = false)" in reason


def test_the_operator_orders_a_rebuild_of_a_standby_never_of_the_primary():
    o = obs(master(True), server("standby"))
    d = decide(SYNCED, obs(*o.servers, requests=(Request(RequestKind.REBUILD, "master", id=1),)), 100.0, DEGRADE)
    assert acting(d.actions) == [] and d.verdicts[0][1].accepted is False
    assert "rebuild master: refused, it is the primary" in d.reason
    d = decide(SYNCED, obs(*o.servers, requests=(Request(RequestKind.REBUILD, "standby", id=2),)), 100.0, DEGRADE)
    (rebuild,) = acting(d.actions)
    assert isinstance(rebuild, Rebuild) and rebuild.primary == "master" and d.verdicts[0][1].accepted
    d = decide(d.state, obs(*o.servers, requests=(Request(RequestKind.REBUILD, "standby", id=3),)), 101.0, DEGRADE)
    assert "rebuild standby: refused, a rebuild is already running" in d.reason


def test_a_rebuild_without_a_result_in_time_has_failed():
    d = decide(SYNCED, obs(master(True), server("standby"), requests=(Request(RequestKind.REBUILD, "standby", id=1),)),
               100.0, DEGRADE)
    st, actions, reason = step(d.state, obs(master(True), server("standby")), 100.0 + 3601.5)
    assert events(actions) == ["rebuild-failed"] and st.pending == ()
    assert "standby: rebuild failed (no result within 3601 s)" in reason


def test_a_level_2_fence_gets_two_fence_timeouts_before_the_phase_gives_up():
    cfg = site_config(fence={"ups_username": "f", "ups_password_file": "/pw"}, timing={"fence_timeout": 2.0})
    cfg = dataclasses.replace(cfg, servers=tuple(
        dataclasses.replace(s, ups="u@h", fence_ups_command="load.off") for s in cfg.servers))
    st, actions, _ = step(State(phase=Phase.NORMAL, primary="master", seen_run=1, led="ok"),
                          obs(dead("master"), server("standby")), 100.0, cfg)
    assert st.phase is Phase.FENCING
    st, _, _ = step(st, obs(dead("master"), server("standby")), 104.5, cfg)
    assert st.phase is Phase.FENCING  # one level's 2 s + 1 s margin would have given up
    st, _, reason = step(st, obs(dead("master"), server("standby")), 105.5, cfg)
    assert st.phase is Phase.HALTED and "no result within 5.0 s" in reason


def test_a_silent_standby_that_was_synchronous_is_a_loss_before_the_primary_notices():
    """The primary's sender keeps listing a dead standby until wal_sender_timeout; its commits wait already."""
    gone = dead("standby", report(Role.STANDBY, in_sync=True, peer=True))
    st, _, _ = step(SYNCED, obs(master(True), gone), 100.0)
    assert st.sync_lost_since == 100.0
    st, actions, _ = step(st, obs(master(True), gone), 102.5)
    assert acting(actions) == [DegradeSync("master", ("standby",), ref=acting(actions)[0].ref)]


def test_without_a_relay_the_dead_primary_is_replaced_only_after_the_self_fence_wait():
    cfg = site_config(policy={"fencing": "none"}, timing={"self_fence_wait": 5.0})
    st = State(phase=Phase.NORMAL, primary="master", seen_run=1, led="ok")
    gone = ServerObs("master", (LinkObs(Channel.SERIAL, LinkState.DEAD, 100.0),
                                LinkObs(Channel.LAN, LinkState.DEAD, 100.5)), report(Role.PRIMARY))
    lost = server("standby", rep=report(Role.STANDBY, hears=False, peer=False))
    st, actions, reason = step(st, obs(gone, lost), 104.0, cfg)
    assert st.phase is Phase.NORMAL and acting(actions) == [] and "operator-needed" not in events(actions)
    assert ("primary master silent on every link for 3.5 s; waiting until timing.self_fence_wait = 5 s, by when an"
            " isolated primary has stopped its database") in reason
    st, actions, _ = step(st, obs(gone, lost), 105.6, cfg)
    assert st.phase is Phase.PROMOTING


def test_a_rebuild_names_a_server_of_the_site_and_waits_for_the_normal_phase():
    servers = (master(True), server("standby"))
    d = decide(SYNCED, obs(*servers, requests=(Request(RequestKind.REBUILD, None, id=1),)), 100.0, DEGRADE)
    assert "rebuild (no server named): refused, not a server of this site" in d.reason and acting(d.actions) == []
    busy = State(phase=Phase.DEMOTING, primary="master", seen_run=1, led="ok", since=100.0,
                 op=Operation(OpKind.SWITCHOVER, "master", "standby"))
    d = decide(busy, obs(*servers, requests=(Request(RequestKind.REBUILD, "standby", id=2),)), 100.1, DEGRADE)
    assert "rebuild standby: refused in phase demoting" in d.reason and not any(isinstance(a, Rebuild) for a in d.actions)


def _primary_listing(*holders: str, alive: bool = True):
    rep = dataclasses.replace(report(Role.PRIMARY, in_sync=True, hears=None),
                              repl=dataclasses.replace(report(Role.PRIMARY).repl, sync_standbys=holders))
    return server("master", rep=rep) if alive else dead("master", rep)


def test_a_standby_the_primary_names_as_holding_every_commit_is_promoted_whatever_its_own_copy_says():
    """A rejoined or rebuilt standby reads itself "not named" from its copy of the setting,
    which the appliance's RestoreSync changed on the primary alone."""
    rejoined = server("standby", rep=report(Role.STANDBY, in_sync=False, peer=True))
    st, actions, _ = step(SYNCED, obs(_primary_listing("standby"), rejoined), 100.0)
    assert acting(actions) == []
    gone = server("standby", rep=report(Role.STANDBY, in_sync=False, peer=False))
    st, actions, reason = step(st, obs(_primary_listing("standby", alive=False), gone), 101.0)
    assert st.phase is Phase.FENCING and any(isinstance(a, Fence) for a in actions), reason


def test_a_standby_the_primary_does_not_name_is_not_promoted_though_its_own_copy_says_in_sync():
    """The primary's setting changed (DegradeSync, a person), the standby's copy did not."""
    stale = server("standby", rep=report(Role.STANDBY, in_sync=True, peer=False))
    st, actions, reason = step(SYNCED, obs(_primary_listing(alive=False), stale), 100.0)
    assert not any(isinstance(a, Fence) for a in actions) and st.phase is Phase.NORMAL
    assert "operator-needed" in events(actions)
    assert "not in sync (in_sync=False" in reason
    without_list = server("master", rep=report(Role.PRIMARY, in_sync=True, hears=None))
    st, actions, _ = step(SYNCED, obs(dead("master", without_list.report), stale), 100.0)
    assert st.phase is Phase.FENCING  # no list from the primary: the standby's own view counts
