"""Safety rules 8 and 9: a primary that answers but does not serve, and the virtual IP in the
wrong hands.

* Health: the primary's agent answers, but its service check fails (the database is down or
  hung). Unbroken for policy.unhealthy_grace, the primary is failed over as a dead one is,
  fenced first. Any healthy report restarts the count, so a flapping check never adds up to
  a failover; service-restored waits until health has held policy.health_restore, so a flap
  raises one degraded/restored pair, not one per flap.
* Reachability (ping nodes): the primary reaches none of the ping targets while an eligible
  standby does; unbroken for policy.reachability_grace, failed over, fenced first, onto a
  standby that reaches them. Nobody reaching them is the network's failure: network-down,
  no failover.
* The virtual IP, every vip.audit_interval: the MACs answering ARP for it and the agents'
  vip flags against the primary. A standby holding it is told to release it; nobody
  holding it, the primary is told to take it again (and announce it); a holder that is no
  server, that claims the primary role, or that keeps the address past
  timing.action_timeout after being told: split brain suspected, halt.
"""
from __future__ import annotations

from dataclasses import dataclass

from firmware.decide.eligibility import candidates
from firmware.decide.step import Step, drop_condition, heard_since_fence
from firmware.model import AgentReport, ReleaseIp, Role, ServerObs, TakeIp
from firmware.site_state import CondKind, Condition, Phase

_PRIMARY_SPELLS = (CondKind.SERVICE_DEGRADED, CondKind.CLIENTS_UNREACHABLE)
_VIP = (CondKind.VIP_ROGUE, CondKind.VIP_LOST)


@dataclass(frozen=True)
class Failing:
    """Why the live primary must be failed over, and the standbys it may go to, best first."""

    why: str
    targets: tuple[str, ...]


def primary_failing(step: Step, primary: ServerObs) -> Failing | None:
    """The health and reachability rules for a primary that answers; None while it serves
    (or its grace is still running)."""
    _forget_old_primaries(step, primary.name)
    r = primary.report
    if r is None:
        return None
    reach = {x.name: x.report.reach for x in step.obs.servers if x.report is not None}
    standbys = candidates(step.obs, step.cfg, step.state)
    return _health(step, primary, r, tuple(n for n in standbys if reach[n] is not False)) \
        or _reachability(step, primary.name, r.reach, tuple(n for n in standbys if reach[n] is True))


def _forget_old_primaries(step: Step, primary: str) -> None:
    """After a failover the old primary's service spells mean nothing: dropped, not cleared
    (failover-completed already says the service is back)."""
    s = step.state
    step.update(conditions=tuple(c for c in s.conditions if c.kind not in _PRIMARY_SPELLS or c.server == primary),
                unhealthy=s.unhealthy if s.unhealthy and s.unhealthy[0] == primary else None,
                restoring=s.restoring if s.restoring and s.restoring[0] == primary else None,
                unreachable=s.unreachable if s.unreachable and s.unreachable[0] == primary else None)


def _health(step: Step, srv: ServerObs, r: AgentReport, targets: tuple[str, ...]) -> Failing | None:
    """The spell starts when the agent saw the service start failing: ``unhealthy_s`` before
    its reply arrived (a hang is seen only once a check times out, but it began when that
    check did). Counted from the arrival, not from this cycle, so a late cycle (a loaded
    appliance) does not lengthen the grace; the reply's own transit only errs on the safe side."""
    s, p, primary, detail = step.state, step.cfg.policy, srv.name, r.detail
    cond = Condition(CondKind.SERVICE_DEGRADED, primary)
    if r.healthy:
        step.update(unhealthy=None)  # any healthy report restarts the count: a flap never adds up
        if cond in s.conditions:
            since = s.restoring[1] if s.restoring else step.now
            if step.now - since >= p.health_restore:
                step.notify("service-restored", primary, text=f"healthy for {step.now - since:.1f} s")
                drop_condition(step, cond)
                step.update(restoring=None)
                step.why(f"{primary}: service restored (its health check has passed for"
                         f" {step.now - since:.1f} s)")
            else:
                step.update(restoring=(primary, since))
                step.why(f"{primary}: service health check passes again; service-restored once it holds"
                         f" policy.health_restore = {p.health_restore:g} s")
        return None
    arrived = max((x.last_seen for x in srv.links if x.last_seen is not None and x.last_seen <= step.now),
                  default=step.now)
    since = s.unhealthy[1] if s.unhealthy else arrived - (r.unhealthy_s or 0.0)
    step.update(unhealthy=(primary, since), restoring=None)
    if cond not in s.conditions:
        step.notify("service-degraded", primary, text=detail)
        step.update(conditions=tuple(sorted(step.state.conditions + (cond,))))
    if step.now - since >= p.unhealthy_grace:
        return Failing(f"primary {primary} answers but its service health check has failed for"
                       f" {step.now - since:.1f} s, past policy.unhealthy_grace = {p.unhealthy_grace:g} s"
                       f" ({detail or 'no detail'})", targets)
    step.why(f"{primary}: service health check fails ({detail or 'no detail'}); failover if it lasts"
             f" policy.unhealthy_grace = {p.unhealthy_grace:g} s")
    return None


def _reachability(step: Step, primary: str, reach: bool | None, reaching: tuple[str, ...]) -> Failing | None:
    s, grace = step.state, step.cfg.policy.reachability_grace
    cond = Condition(CondKind.CLIENTS_UNREACHABLE, primary)
    if reach is not False or not reaching:
        step.update(unreachable=None)
        if cond in s.conditions:
            drop_condition(step, cond)
            if reach is True:
                step.notify("clients-reachable", primary)
                step.why(f"{primary}: reaches the ping targets again")
            else:  # the standbys lost them too: network-down says it, not this
                step.why(f"{primary}: no standby reaches the ping targets either; no failover")
        return None
    since = s.unreachable[1] if s.unreachable else step.now
    step.update(unreachable=(primary, since))
    if cond not in s.conditions:
        step.notify("clients-unreachable", primary, text=f"{', '.join(reaching)} reach the ping targets")
        step.update(conditions=tuple(sorted(step.state.conditions + (cond,))))
    if step.now - since >= grace:
        return Failing(f"primary {primary} has reached none of the ping targets for {step.now - since:.1f} s"
                       f" while {', '.join(reaching)} reach them, past policy.reachability_grace = {grace:g} s",
                       reaching)
    step.why(f"{primary}: reaches none of the ping targets while {', '.join(reaching)} reach them; failover"
             f" if it lasts policy.reachability_grace = {grace:g} s")
    return None


def watch_network(step: Step) -> None:
    """Nobody reaching the ping targets is the clients' network failing, not the primary:
    an alert and no failover (the reachability rule needs a standby that reaches them)."""
    views = {x.name: x.report.reach for x in step.obs.servers
             if x.alive and x.report is not None and x.name not in step.state.fenced}
    known = [v for v in views.values() if v is not None]
    down = bool(known) and not any(known)
    cond = Condition(CondKind.NETWORK_DOWN)
    raised = cond in step.state.conditions
    if down and not raised:
        mine = {True: "the appliance reaches them: the servers' side failed", False:
                "the appliance does not reach them either", None: "the appliance does not probe them"}[step.obs.reach]
        text = f"no server reaches the ping targets ({', '.join(sorted(views))}); {mine}"
        step.notify("network-down", text=text)
        step.update(conditions=tuple(sorted(step.state.conditions + (cond,))))
        step.why(f"{text}: the clients' network failed, not the primary; no failover")
    elif raised and not down:
        drop_condition(step, cond)
        step.notify("network-up")
        step.why("the ping targets answer again")


# ------------------------------------------------------------------------ the virtual IP


def audit_vip(step: Step) -> None:
    """Judge the newest ARP audit that began after the phase did, once (rule 9)."""
    a, s = step.obs.vip_audit, step.state
    if a is None or s.primary is None or a.at <= max(s.vip_audit_at, s.since):
        return
    step.update(vip_audit_at=a.at)
    server_of = {srv.mac: srv.name for srv in step.cfg.servers if srv.mac}
    strangers = sorted(m for m in a.macs if m not in server_of)
    flagged = {x.name for x in step.obs.servers if heard_since_fence(s, x) and x.report is not None and x.report.vip}
    rogues = sorted(({server_of[m] for m in a.macs if m in server_of} | flagged) - {s.primary})
    claims = [n for n in rogues if (r := step.obs.server(n).report) is not None and r.role is Role.PRIMARY]
    if strangers or claims:
        who = ", ".join([f"{m} (no server of this site)" for m in strangers] + [f"{n} (claims the primary role)"
                                                                                for n in claims])
        _vip_split_brain(step, f"the virtual IP is answered by {who} besides {s.primary}, the primary")
    elif rogues:
        _vip_rogues(step, rogues)
    elif step.cfg.server(s.primary).mac not in a.macs:
        _vip_lost(step)
    else:
        _vip_restored(step)


def _vip_rogues(step: Step, rogues: list[str]) -> None:
    s, limit = step.state, step.cfg.timing.action_timeout
    told = dict(s.vip_released)
    for name in rogues:
        cond = Condition(CondKind.VIP_ROGUE, name)
        if cond not in step.state.conditions:
            step.notify("vip-rogue", name, text=f"{s.primary} is the primary")
            step.update(conditions=tuple(sorted(step.state.conditions + (cond,))))
        if name in told and step.now - told[name] > limit:
            _vip_split_brain(step, f"{name} still holds the virtual IP {step.now - told[name]:.1f} s after being"
                                   f" told to release it (timing.action_timeout = {limit:g} s)")
            return
        held = step.held()
        if held:
            step.why(f"{name} holds the virtual IP but {s.primary} is the primary; not told to release it ({held})")
            continue
        step.act(ReleaseIp(name))  # again at every audit until it is gone: idempotent on the agent
        told.setdefault(name, step.now)
        step.why(f"{name} holds the virtual IP but {s.primary} is the primary: told to release it")
    step.update(vip_released=tuple(sorted((n, t) for n, t in told.items() if n in rogues)))


def _vip_lost(step: Step) -> None:
    s = step.state
    cond = Condition(CondKind.VIP_LOST)
    if cond not in s.conditions:
        step.notify("vip-lost", s.primary or "", text="no ARP answer for the virtual IP")
        step.update(conditions=tuple(sorted(s.conditions + (cond,))))
    held = step.held()
    if held:
        step.why(f"nobody answers ARP for the virtual IP while {s.primary} is the primary; not taken again ({held})")
        return
    step.act(TakeIp(s.primary or ""))  # adds the address (idempotent) and announces it
    step.why(f"nobody answers ARP for the virtual IP while {s.primary} is the primary: told to take it again"
             " and announce it")


def _vip_restored(step: Step) -> None:
    s = step.state
    if any(c.kind in _VIP for c in s.conditions):
        step.update(conditions=tuple(c for c in s.conditions if c.kind not in _VIP), vip_released=())
        step.notify("vip-restored", s.primary or "")
        step.why(f"only {s.primary} answers for the virtual IP again")


def _vip_split_brain(step: Step, why: str) -> None:
    """As after a takeover: alarm, and nothing more automatic until an operator has looked."""
    step.notify("split-brain-suspected", step.state.primary or "", text=why)
    step.notify("operator-needed", text=f"split brain suspected: {why}")
    step.update(vip_released=())
    step.enter(Phase.HALTED)
    step.why(f"split brain suspected: {why}; halted, waiting for an operator")
