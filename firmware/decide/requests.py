"""Operator requests: maintenance, power-on, switchover and manual failover."""
from __future__ import annotations

from firmware.config import Fencing
from firmware.decide.continuity import request_rebuild
from firmware.decide.eligibility import candidates, standby_objects, why_not_eligible
from firmware.decide.operations import start_failover, start_switchover
from firmware.decide.step import Step, with_, without
from firmware.model import PowerOn, Request, RequestKind, Verdict
from firmware.site_state import OpKind, Phase


def take_requests(step: Step) -> None:
    """Each request is answered: refused with the reason, or accepted with what it started."""
    for req in step.obs.requests:
        before, step.refused = len(step.reasons), ""
        _request(step, req)
        said = "; ".join(step.reasons[before:])
        verdict = Verdict(False, step.refused) if step.refused else \
            Verdict(True, said or f"{req.kind.value}: nothing to change")
        step.verdicts.append((req.id, verdict))


def _request(step: Step, req: Request) -> None:
    s = step.state
    if req.kind is RequestKind.MAINTENANCE_ON and not s.maintenance:
        step.update(maintenance=True)
        step.notify("maintenance-on")
        step.why("maintenance on: observe only")
    elif req.kind is RequestKind.MAINTENANCE_OFF:
        if s.maintenance:
            step.update(maintenance=False)
            step.notify("maintenance-off")
            step.why("maintenance off: automatic operation resumes")
        if s.phase is Phase.HALTED:  # one command hands control back, whatever was on
            step.update(phase=Phase.NORMAL, since=step.now, awaiting=())
            step.why("operator resumed automatic operation after a halt")
    elif req.kind is RequestKind.POWER_ON:
        _power_on(step, req.server or "")
    elif req.kind is RequestKind.REBUILD:
        request_rebuild(step, req.server or "")
    elif req.kind in (RequestKind.SWITCHOVER, RequestKind.FAILOVER):
        _operation_request(step, req.kind, req.server, req.force)


def _power_on(step: Step, server: str) -> None:
    s = step.state
    if server not in s.fenced:
        step.refuse(f"power-on {server}: refused, it is not fenced")
        return
    if step.held(automatic=False):
        step.refuse(f"power-on {server}: refused, {step.held(automatic=False)} acts on nothing")
        return
    step.act(PowerOn(server))
    step.update(fenced=without(s.fenced, server), returned=without(s.returned, server),
                rejoining=with_(s.rejoining, server))
    step.notify("power-restored-by-operator", server)
    step.why(f"{server}: power restored by an operator; it will rejoin as a standby")


def _operation_request(step: Step, kind: RequestKind, server: str | None, force: bool) -> None:
    s = step.state
    if s.phase not in (Phase.NORMAL, Phase.HALTED) or s.primary is None:
        step.refuse(f"{kind.value}: refused in phase {s.phase.value} (primary {s.primary})")
        return
    if step.held(automatic=False):
        step.refuse(f"{kind.value}: refused, {step.held(automatic=False)}")
        return
    if kind is RequestKind.FAILOVER:
        _manual_failover(step, server, force)
    else:
        _request_switchover(step, server)


def _manual_failover(step: Step, server: str | None, force: bool) -> None:
    if not force or not server:
        step.refuse("failover: refused without --to SERVER and --force")
        return
    obs = step.obs.server(server)
    problem = why_not_eligible(obs, step.cfg, step.state.fenced, check_lag=False)
    if problem or server == step.state.primary:
        step.refuse(f"failover to {server}: refused, {problem or 'it is the primary'}")
        return
    if step.cfg.policy.fencing is Fencing.NONE:  # rule 2: --force cannot stand in for the standby's word
        objection = standby_objects(obs, step.cfg)
        if objection:
            step.refuse(f"failover to {server}: refused, {objection}")
            return
    start_failover(step, server, OpKind.MANUAL_FAILOVER)


def _request_switchover(step: Step, server: str | None) -> None:
    primary = step.obs.server(step.state.primary or "")
    if primary.alive is not True:
        step.refuse("switchover: refused, the primary is not answering (use failover)")
        return
    targets = candidates(step.obs, step.cfg, step.state)
    if server:
        problem = why_not_eligible(step.obs.server(server), step.cfg, step.state.fenced)
        if problem:
            step.refuse(f"switchover to {server}: refused, {problem}")
            return
        targets = [server]
    if not targets:
        step.refuse("switchover: refused, no standby is healthy and in sync")
        return
    start_switchover(step, targets[0])
