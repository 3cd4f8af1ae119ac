"""The steps of a failover or switchover, each waiting for its actions' results, and
resuming them after an appliance restart (fence, promote, take IP, verify; demote, sync)."""
from __future__ import annotations

import dataclasses

from firmware.config import Config, Fencing, VipVerify
from firmware.decide.step import Step, drop_condition, with_
from firmware.errors import TransitionError
from firmware.model import Demote, Fence, HoldFence, Promote, ReleaseIp, SetStatus, TakeIp, VerifyIp
from firmware.site_state import BUSY, CondKind, Condition, OpKind, Operation, Phase, SavedAlert

VERIFY_TRIES = 3


def resume(step: Step, unsent: tuple[SavedAlert, ...]) -> None:
    """After a restart: the last decision's alerts again, the status LED again, fenced
    servers held off again, and the phase's action re-issued."""
    if step.state.seen_run == step.obs.run:
        return
    for a in unsent:
        step.notify(a.event, a.server, a.channel, f"{a.text} (again after an appliance restart)".lstrip())
    if step.state.led:
        step.act(SetStatus(step.state.led))  # the board starts with every LED off
    if step.state.fenced:
        step.act(HoldFence(step.state.fenced))
        step.why(f"after a restart: {', '.join(step.state.fenced)} kept fenced")
    step.update(seen_run=step.obs.run)
    if step.state.phase in BUSY and step.state.issued_run != step.obs.run:
        s = step.state  # its alerts came back above (unsent): here only its action again
        _REENTER[s.phase](step)
        step.why(f"resumed {s.phase.value} after a restart")


def start_failover(step: Step, target: str, kind: OpKind, cause: str = "") -> None:
    """``cause``: why a primary that still answers is failed over (its service fails)."""
    old = step.state.primary or ""
    step.update(op=Operation(kind, old, target))
    operation = kind.value
    step.notify("failover-started", old, text=f"{operation}: {old} -> {target}" + (f" ({cause})" if cause else ""))
    if kind is not OpKind.FAILOVER:
        step.why(f"{operation} to {target} ordered by an operator")
    elif cause:
        step.why(f"{operation}: {cause}; fencing it, then promoting {target}")
    elif step.cfg.policy.fencing is Fencing.NONE:
        step.why(f"{operation}: {old} silent on every link and {target} confirms losing it;"
                 f" promoting {target} (policy.fencing = 'none': no fence)")
    else:
        step.why(f"{operation}: {old} silent on every link; fencing it, then promoting {target}")
    if step.cfg.policy.fencing is Fencing.NONE:
        step.enter(Phase.PROMOTING, Promote(target))
    else:
        step.enter(Phase.FENCING, Fence(old))


def start_switchover(step: Step, target: str) -> None:
    old = step.state.primary or ""
    step.update(op=Operation(OpKind.SWITCHOVER, old, target))
    step.notify("switchover-started", old, text=f"{old} -> {target}")
    step.why(f"switchover: demoting {old}, then promoting {target}")
    step.enter(Phase.DEMOTING, Demote(old), ReleaseIp(old))


def _outcome(step: Step) -> tuple[bool, str] | None:
    """(all ok, details) once every awaited action reported; a timeout counts as failure.

    Each result comes in one cycle only, and the actions of a phase may finish in different
    cycles, so what came is kept in the state until the phase has everything."""
    got = {i: (ok, d) for i, ok, d in step.state.results}
    for r in step.obs.results:
        if r.action_id in step.state.awaiting:
            got[r.action_id] = (r.ok, r.detail)
    step.update(results=tuple((i, ok, d) for i, (ok, d) in got.items()))
    if all(i in got for i in step.state.awaiting):
        bad = [f"{i}: {got[i][1]}" for i in step.state.awaiting if not got[i][0]]
        return (not bad, "; ".join(bad) or "; ".join(got[i][1] for i in step.state.awaiting if got[i][1]))
    limit = _phase_timeout(step.state.phase, step.cfg)
    if step.now - step.state.since > limit:
        return False, f"no result within {limit:.1f} s"
    return None


def _op(step: Step) -> Operation:
    """The operation of a busy phase. There always is one (State.from_dict refuses a saved
    busy phase without it): none is a bug, handled by the daemon as an internal error."""
    if step.state.op is None:
        raise TransitionError(f"phase {step.state.phase.value} without an operation")
    return step.state.op


def _phase_timeout(phase: Phase, cfg: Config) -> float:
    t = cfg.timing
    margin = 1.0  # the executor times out first; this guards against a lost result
    levels = 2 if any(s.fence_ups_command for s in cfg.servers) else 1  # level 2 has its own fence_timeout
    return {Phase.FENCING: levels * t.fence_timeout, Phase.VERIFYING: t.verify_timeout}.get(
        phase, t.action_timeout) + margin


def _fail(step: Step, event: str, why: str) -> None:
    op = _op(step)
    failed = "failover-failed" if op.failover else "switchover-failed"
    if event != failed:
        step.notify(event, op.old, text=why)
    step.notify(failed, op.target, text=why)
    step.notify("operator-needed", text=why)
    step.enter(Phase.HALTED)
    step.why(f"{op.kind} {op.old} -> {op.target} stopped: {why}; waiting for an operator")


def _awaited(step: Step, waiting: str, event: str, failure: str) -> str | None:
    """The phase's outcome detail once its actions succeeded; None while waiting or after a
    failure, which is handled here (``failure`` gets the detail in ``{}``)."""
    out = _outcome(step)
    if out is None:
        step.why(waiting)
        return None
    ok, detail = out
    if not ok:
        _fail(step, event, failure.format(detail))
        return None
    return detail


def fencing(step: Step) -> None:
    s, op = step.state, _op(step)
    detail = _awaited(step, f"fencing {op.old}: waiting for power-off confirmation", "fence-failed",
                      f"fence of {op.old} not confirmed ({{}}); no promotion")
    if detail is None:
        return
    step.update(fenced=with_(s.fenced, op.old), fenced_at=step.now)
    step.notify("fence-done", op.old, text=detail)
    step.why(f"{op.old} fenced; promoting {op.target}")
    step.enter(Phase.PROMOTING, Promote(op.target))


def promoting(step: Step) -> None:
    op = _op(step)
    if _awaited(step, f"promoting {op.target}", "failover-failed", f"promote of {op.target} failed ({{}})") is None:
        return
    step.update(primary=op.target)
    step.why(f"{op.target} is primary; moving the virtual IP")
    step.enter(Phase.TAKING_IP, TakeIp(op.target))


def taking_ip(step: Step) -> None:
    op = _op(step)
    if _awaited(step, f"{op.target} taking the virtual IP", "failover-failed",
                f"{op.target} could not take the virtual IP ({{}})") is None:
        return
    if step.cfg.vip.verify is VipVerify.NONE:
        _complete(step, "takeover not verified (vip.verify = none)")
        return
    step.update(op=dataclasses.replace(op, tries=1))
    step.enter(Phase.VERIFYING, VerifyIp(op.target))
    step.why(f"{op.target} holds the virtual IP; checking that only its MAC answers ARP")


def verifying(step: Step) -> None:
    out = _outcome(step)
    s, op = step.state, _op(step)
    if out is None:
        step.why(f"verifying that only {op.target} answers ARP for the virtual IP")
        return
    ok, detail = out
    result = step.obs.result(s.awaiting[0]) if s.awaiting else None
    if ok:
        _complete(step, detail)
    elif result is not None and result.code == "split-brain":
        _split_brain(step, detail)
    elif op.tries < VERIFY_TRIES:
        step.update(op=dataclasses.replace(op, tries=op.tries + 1))
        step.enter(Phase.VERIFYING, VerifyIp(op.target))
        step.why(f"ARP check {op.tries} of {VERIFY_TRIES} failed ({detail}); trying again")
    else:
        _fail(step, "failover-failed", f"takeover not verified after {VERIFY_TRIES} ARP checks ({detail})")


def _split_brain(step: Step, detail: str) -> None:
    """The target is primary, but another host answers for the virtual IP too: alarm, and
    nothing more automatic until an operator has looked (maintenance off resumes)."""
    s, op = step.state, _op(step)
    step.notify("split-brain-suspected", op.target, text=detail)
    step.notify("operator-needed", text=f"split brain suspected after {op.kind} to {op.target}: {detail}")
    if op.failover:
        step.update(hold_down_until=step.now + step.cfg.timing.hold_down, failovers=s.failovers + 1)
    step.enter(Phase.HALTED)
    step.why(f"{op.kind} {op.old} -> {op.target}: {op.target} is primary but the virtual IP is answered"
             f" by more than one host ({detail}); split brain suspected, waiting for an operator")


def _complete(step: Step, detail: str) -> None:
    s, op = step.state, _op(step)
    if not op.failover:
        step.notify("switchover-completed", op.target, text=detail)
        step.update(phase=Phase.NORMAL, since=step.now, awaiting=(), primary=op.target)
    else:
        step.notify("failover-completed", op.target, text=detail)
        step.update(phase=Phase.NORMAL, since=step.now, awaiting=(), primary=op.target,
                    hold_down_until=step.now + step.cfg.timing.hold_down, failovers=s.failovers + 1)
    drop_condition(step, Condition(CondKind.OPERATOR_NEEDED))
    step.why(f"{op.kind} complete: {op.target} is primary and holds the virtual IP ({detail})")


def demoting(step: Step) -> None:
    op = _op(step)
    if _awaited(step, f"switchover: demoting {op.old} and releasing its virtual IP", "switchover-failed",
                f"demote of {op.old} failed ({{}})") is None:
        return
    step.update(phase=Phase.SYNCING, since=step.now, awaiting=())
    step.why(f"{op.old} demoted; waiting until {op.target} has every transaction")


def syncing(step: Step) -> None:
    s, op = step.state, _op(step)
    srv = step.obs.server(op.target)
    r = srv.report
    caught_up = r is not None and srv.alive and (r.repl.lag_bytes == 0 or
                                                  (r.repl.lag_bytes is None and r.repl.in_sync is True))
    if caught_up:
        step.why(f"{op.target} has everything; promoting it")
        step.enter(Phase.PROMOTING, Promote(op.target))
        return
    if step.now - s.since > step.cfg.timing.action_timeout:
        _fail(step, "switchover-failed", f"{op.target} did not catch up within timing.action_timeout"
                                         f" = {step.cfg.timing.action_timeout} s")
        return
    step.why(f"waiting for {op.target} to catch up (lag {r.repl.lag_bytes if r else '?'} bytes)")


# What a phase waits for, issued again when the appliance restarts in that phase.
_REENTER = {
    Phase.FENCING: lambda st: st.enter(Phase.FENCING, Fence(_op(st).old)),
    Phase.PROMOTING: lambda st: st.enter(Phase.PROMOTING, Promote(_op(st).target)),
    Phase.TAKING_IP: lambda st: st.enter(Phase.TAKING_IP, TakeIp(_op(st).target)),
    Phase.VERIFYING: lambda st: st.enter(Phase.VERIFYING, VerifyIp(_op(st).target)),
    Phase.DEMOTING: lambda st: st.enter(Phase.DEMOTING, Demote(_op(st).old), ReleaseIp(_op(st).old)),
    Phase.SYNCING: lambda st: st.update(since=st.now),
}
