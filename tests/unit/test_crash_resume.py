"""Kill the appliance at random points of a failover, many times: it always resumes to one
consistent outcome. Never two primaries, never a second fence after one was confirmed,
never a promote before the fence was confirmed, never a flip back.

The appliance here is the real decide(), the daemon's rule of when a state is saved and the
real atomic StateStore; the site is a small
model that carries out actions the way the executor would. A crash can strike before the
state is saved, after it is saved but before the actions run, or after they ran but before
their results were seen; a crash also drops the GPIO lines to their fail-safe level (relays
closed), as a real process exit does.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from firmware.daemon import worth_saving
from firmware.decide import decide
from firmware.model import (ActionResult, Fence, HoldFence, LinkState, Observations, Promote,
                            Role, TakeIp, VerifyIp, VipAudit)
from firmware.site_state import Phase, State
from firmware.state import StateStore
from tests.unit.sitekit import MACS, report, server, site_config

CFG = site_config()
DT = CFG.timing.interval


@dataclass
class World:
    """The servers as they really are."""

    relay_cut: dict[str, bool] = field(default_factory=lambda: {"master": False, "standby": False})
    role: dict[str, Role] = field(default_factory=lambda: {"master": Role.PRIMARY, "standby": Role.STANDBY})
    vip: set[str] = field(default_factory=lambda: {"master"})
    fence_confirmed: bool = False
    log: list[tuple[str, str]] = field(default_factory=list)  # (action type, server)

    def run(self, action) -> ActionResult:
        self.log.append((type(action).__name__, getattr(action, "server", getattr(action, "expect", ""))))
        if isinstance(action, Fence):
            self.relay_cut[action.server] = True
            self.fence_confirmed = True
        elif isinstance(action, HoldFence):
            for s in action.servers:
                self.relay_cut[s] = True
        elif isinstance(action, Promote):
            assert self.fence_confirmed, "promote before the fence was confirmed"
            self.role[action.server] = Role.PRIMARY
        elif isinstance(action, TakeIp):
            self.vip.discard("master")
            self.vip.add(action.server)
        detail = f"macs={','.join(sorted(self.vip))}" if isinstance(action, VerifyIp) else ""
        return ActionResult(action.id, True, detail)

    def observe(self, run: int, results: tuple[ActionResult, ...], now: float) -> Observations:
        """An ARP audit every cycle too: its stamp alone is not saved (daemon.worth_saving)."""
        standby = server("standby", rep=report(role=self.role["standby"]))
        master = server("master", LinkState.DEAD, LinkState.DEAD, rep=report(role=Role.PRIMARY))
        audit = VipAudit(now - DT / 2, frozenset(MACS[s] for s in self.vip))
        return Observations(servers=(master, standby), results=results, run=run, vip_audit=audit)


def simulate(seed: int, tmp_path) -> tuple[World, State]:
    rnd = random.Random(seed)
    store = StateStore(tmp_path / f"state-{seed}.json")
    world = World()
    state = State(phase=Phase.NORMAL, primary="master", seen_run=1, led="ok")
    store.save(state.to_dict())
    run, now, pending, settled = 1, 100.0, (), 0
    for _ in range(400):
        now += DT
        d = decide(state, world.observe(run, pending, now), now, CFG)
        crash = rnd.random() < 0.15 and settled == 0
        point = rnd.choice(("before-save", "after-save", "after-actions"))
        if crash and point == "before-save":
            state, pending, run = _restart(store, world, run)
            continue
        if worth_saving(state, d.state, d.actions):  # as the daemon does: always before acting
            store.save(d.state.to_dict())
        if crash and point == "after-save":
            state, pending, run = _restart(store, world, run)
            continue
        pending = tuple(world.run(a) for a in d.actions if type(a).__name__ not in ("Notify", "SetStatus"))
        state = d.state
        if crash:
            state, pending, run = _restart(store, world, run)
        if state.phase is Phase.NORMAL and state.primary == "standby":
            settled += 1  # a few calm cycles after the end, as a real appliance runs on
            if settled > 3:
                break
    return world, state


def _restart(store: StateStore, world: World, run: int):
    for s in world.relay_cut:  # fail-safe GPIO: a dying process leaves every relay closed
        world.relay_cut[s] = False
    return State.from_dict(store.load()), (), run + 1


@pytest.mark.parametrize("seed", range(300))
def test_random_crashes_always_end_in_one_consistent_failover(seed, tmp_path):
    world, state = simulate(seed, tmp_path)
    assert state.phase is Phase.NORMAL and state.primary == "standby", world.log
    assert state.fenced == ("master",)
    assert world.role["standby"] is Role.PRIMARY
    assert world.vip == {"standby"}
    assert world.relay_cut["master"], "the old primary must be held off after the last restart"
    promotes = [i for i, (kind, _) in enumerate(world.log) if kind == "Promote"]
    fences = [i for i, (kind, _) in enumerate(world.log) if kind == "Fence"]
    assert fences and promotes, world.log
    assert max(fences) < min(promotes), "a fence after a promote is a repeated fence"
    assert all(srv == "standby" for kind, srv in world.log if kind in ("Promote", "TakeIp")), "flip back"
