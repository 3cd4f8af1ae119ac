"""The steady phases (starting, normal, halted), the UPS policy, the status LED, and the
table from each phase to its handler."""
from __future__ import annotations

from firmware.config import Fencing
from firmware.decide.continuity import degraded_blocks, self_fence_pending, sync_loss
from firmware.decide.eligibility import candidates, standby_objects, why_not_candidate
from firmware.decide.service import Failing, audit_vip, primary_failing, watch_network
from firmware.decide.operations import (demoting, fencing, promoting, start_failover,
                                        start_switchover, syncing, taking_ip, verifying)
from firmware.decide.step import Step, drop_condition
from firmware.model import Backup, Role, ServerObs, SetStatus, Shutdown
from firmware.site_state import CondKind, Condition, OpKind, Phase
from firmware.ups_policy import ups_intent


def _starting(step: Step) -> None:
    unknown = [s.name for s in step.obs.servers if s.alive is None]
    _adopt_primary(step)
    if unknown:
        step.why(f"starting: waiting for first replies from {', '.join(unknown)}")
        return
    step.update(phase=Phase.NORMAL, since=step.now)
    step.why(f"started: primary is {step.state.primary or 'unknown'}")


def _adopt_primary(step: Step) -> None:
    if step.state.primary is not None:
        return
    claim = [s.name for s in step.obs.servers
             if s.alive and s.report and s.report.role is Role.PRIMARY and s.name not in step.state.fenced]
    if len(claim) == 1:
        step.update(primary=claim[0])
        step.why(f"{claim[0]} reports the primary role")
    elif len(claim) > 1:
        step.why(f"{' and '.join(claim)} both claim the primary role: no automatic action")


def _normal(step: Step) -> None:
    _adopt_primary(step)
    s = step.state
    if s.primary is None:
        _wait_operator(step, "no server reports the primary role")
        return
    primary = step.obs.server(s.primary)
    _rogue_primaries(step)
    watch_network(step)
    if primary.alive is False:
        _primary_dead(step)
    elif primary.alive:
        failing = primary_failing(step, primary)
        if failing is not None:
            _primary_failed(step, failing)
        else:
            drop_condition(step, Condition(CondKind.OPERATOR_NEEDED))
            _ups_policy(step)
            sync_loss(step)
        if step.state.phase is Phase.NORMAL:
            audit_vip(step)


def _rogue_primaries(step: Step) -> None:
    others = [x.name for x in step.obs.servers if x.name != step.state.primary and x.alive
              and x.report and x.report.role is Role.PRIMARY and x.name not in step.state.fenced]
    cond = {Condition(CondKind.SPLIT, n) for n in others}
    for c in sorted(cond - set(step.state.conditions)):
        text = f"{c.server} claims the primary role; {step.state.primary} is the primary"
        step.notify("split-brain-suspected", c.server, text=text)
        step.why(f"split brain suspected: {text}")
    step.update(conditions=tuple(sorted({c for c in step.state.conditions if c.kind is not CondKind.SPLIT} | cond)))


def _primary_dead(step: Step) -> None:
    s = step.state
    targets = candidates(step.obs, step.cfg, s)
    blocked = _failover_blocked(step)
    if not targets:
        _wait_operator(step, f"primary {s.primary} is dead and no standby may take over ({_why_none(step)});"
                             " use arbiterctl failover --force")
        return
    objection = standby_objects(step.obs.server(targets[0]), step.cfg)
    if objection:
        step.why(f"primary {s.primary} silent on every link, but {objection}; no failover")
        if just_died(step.obs.server(s.primary), step.now, step.cfg.timing.dead_time):
            step.hurry.append(targets[0])
        return
    waiting = self_fence_pending(step)
    if waiting:
        step.why(waiting)
        return
    if blocked:
        _wait_operator(step, f"primary {s.primary} is dead; would fail over to {targets[0]}, but {blocked}")
        return
    start_failover(step, targets[0], OpKind.FAILOVER)


def just_died(srv: ServerObs, now: float, dead_time: float) -> bool:
    """Silent for less than two dead times. The standby's own lease on the primary (its peer
    heartbeat) began about when the appliance's did, so it ends about as the appliance's
    does, up to a peer poll later: the standby is then asked again sooner than the next
    tick (Decision.hurry), and a failover starts within a fraction of an interval of its
    report changing, not up to a whole interval after. Past that, it does hear the primary,
    the appliance is the one cut off, and the polls go on at their pace."""
    heard = [x.last_seen for x in srv.links if x.last_seen is not None]
    return bool(heard) and now - max(heard) < 2 * dead_time


def _why_none(step: Step) -> str:
    """Why no standby may take over automatically, each named."""
    s = step.state
    return "; ".join(f"{x.name}: {why_not_candidate(x, step.cfg, s.fenced)}" for x in step.obs.servers
                     if x.name != s.primary) or "no standby configured"


def _primary_failed(step: Step, failing: Failing) -> None:
    """A primary that answers but does not serve: failed over as a dead one, fenced first.
    Its host is alive, so without a fence relay there is no safe way to take its place."""
    s = step.state
    if not failing.targets:
        _wait_operator(step, f"{failing.why}, and no standby that reaches the clients may take over"
                             f" ({_why_none(step)}); use arbiterctl failover --force")
        return
    if step.cfg.policy.fencing is Fencing.NONE:
        _wait_operator(step, f"{failing.why}; would fail over to {failing.targets[0]}, but policy.fencing ="
                             " 'none' cannot stop a primary that is alive")
        return
    blocked = _failover_blocked(step)
    if blocked:
        _wait_operator(step, f"{failing.why}; would fail over to {failing.targets[0]}, but {blocked}")
        return
    start_failover(step, failing.targets[0], OpKind.FAILOVER, cause=failing.why)


def _failover_blocked(step: Step) -> str:
    s = step.state
    if step.held():
        return step.held()
    if not step.cfg.policy.auto_failover:
        return "policy.auto_failover = false"
    if degraded_blocks(step):
        return degraded_blocks(step)
    if s.hold_down_until is not None and step.now < s.hold_down_until:
        return f"hold-down for {s.hold_down_until - step.now:.0f} s more (timing.hold_down)"
    return ""


def _wait_operator(step: Step, why: str) -> None:
    step.why(why)
    cond = Condition(CondKind.OPERATOR_NEEDED)
    if cond not in step.state.conditions:
        step.notify("operator-needed", text=why)
        step.update(conditions=tuple(sorted(step.state.conditions + (cond,))))


def _ups_policy(step: Step) -> None:
    s = step.state
    ups = {x.name: x.ups for x in step.obs.servers}
    lag = {x.name: (x.report.repl.lag_bytes or 0) if x.report else 0 for x in step.obs.servers}
    intent = ups_intent(s.primary, ups, candidates(step.obs, step.cfg, s), lag,
                        step.cfg.policy.ups_low_runtime_s, step.cfg.policy.ups_switchover)
    if intent.kind == "none":
        if s.ups_handled:
            step.update(ups_handled="")
        return
    if intent.kind == s.ups_handled:
        return
    step.why(intent.reason)
    if step.held():
        step.why("observe only: UPS policy not carried out")
        return
    step.update(ups_handled=intent.kind)
    if intent.kind == "switchover" and intent.target:
        start_switchover(step, intent.target)
        return
    if intent.backup:
        step.notify("backup-requested", intent.backup, text=intent.reason)
        step.act(Backup(intent.backup))
    if intent.kind == "backup-shutdown":
        step.notify("shutdown-requested", text=f"order: {', '.join(intent.shutdown_order)}")
        for name in intent.shutdown_order:
            step.act(Shutdown(name))


def _halted(step: Step) -> None:
    step.why("halted after a failed operation: waiting for an operator "
             "(arbiterctl failover/switchover, or maintenance off to resume)")


PHASES = {
    Phase.STARTING: _starting, Phase.NORMAL: _normal, Phase.FENCING: fencing,
    Phase.PROMOTING: promoting, Phase.TAKING_IP: taking_ip, Phase.VERIFYING: verifying,
    Phase.DEMOTING: demoting, Phase.SYNCING: syncing, Phase.HALTED: _halted,
}


def status_led(step: Step) -> None:
    s = step.state
    if s.phase is Phase.HALTED:
        led = "fault"
    elif any(c.kind is not CondKind.LATE for c in s.conditions) or s.maintenance:
        led = "degraded"
    elif s.failovers:
        led = "failed-over"
    else:
        led = "ok"
    if led != s.led:
        step.act(SetStatus(led))
        step.update(led=led)
