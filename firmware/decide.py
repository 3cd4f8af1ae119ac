"""The decision core: ``decide(state, obs, now, cfg) -> Decision``. Pure: no I/O, no clock.

Each cycle: take operator requests, raise events on real changes (links, servers, standbys,
UPSes, returning old primaries), then run the handler of the current phase (see the table
in firmware/site_state.py). Every branch leaves a one-line human reason.

The safety rules of the design, and where they live:
1. dead means silent on every channel ........ ServerObs.alive, _normal
2. fence before promote ....................... _start_failover, _fencing
3. only a healthy, in-sync standby ............ why_not_eligible
4. the standby's own view of the primary ...... _standby_objects
5. hold-down, no failback, old primary out .... _failover_blocked, _returning
6. bad safety settings stop start-up .......... firmware.config
7. frames authenticated ....................... firmware.protocol (bad frames never get here)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from firmware.config import Config
from firmware.model import (Action, AgentReport, Backup, Demote, Fence, HoldFence, LinkState, Notify,
                            Observations, PowerOn, Promote, Rejoin, ReleaseIp, Request, RequestKind,
                            Role, ServerObs, SetStatus, Shutdown, TakeIp, UpsObs, Verdict, VerifyIp)
from firmware.site_state import BUSY, Phase, State
from firmware.ups import ups_events
from firmware.ups_policy import ups_intent

VERIFY_TRIES = 3


@dataclass(frozen=True)
class Decision:
    state: State
    actions: tuple[Action, ...]
    reason: str
    warnings: tuple[str, ...] = ()  # for the log at warning level (late replies), not alerts
    verdicts: tuple[tuple[int, Verdict], ...] = ()  # (request id, verdict) of each operator request


@dataclass
class _Step:
    """Accumulates one cycle's outcome; local to one decide() call."""

    state: State
    obs: Observations
    now: float
    cfg: Config
    actions: list[Action] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verdicts: list[tuple[int, Verdict]] = field(default_factory=list)
    refused: str = ""  # set by refuse() while one request is handled

    def act(self, action: Action) -> Action:
        action = dataclasses.replace(action, ref=self.state.next_ref)
        self.update(next_ref=self.state.next_ref + 1)
        self.actions.append(action)
        return action

    def notify(self, event: str, server: str = "", channel: str = "", text: str = "") -> None:
        self.act(Notify(event, server, channel, text))
        self.update(alerts=self.state.alerts + ((event, server, channel, text),))

    def update(self, **changes: object) -> None:
        self.state = dataclasses.replace(self.state, **changes)

    def enter(self, phase: Phase, *waits: Action) -> None:
        issued = tuple(self.act(a).id for a in waits)
        self.update(phase=phase, since=self.now, awaiting=issued, results=(), issued_run=self.obs.run)

    def why(self, text: str) -> None:
        self.reasons.append(text)

    def refuse(self, text: str) -> None:
        """An operator request decided against: the reason, and the operator's answer."""
        self.why(text)
        self.refused = text

    @property
    def active(self) -> bool:
        return not self.state.maintenance and self.cfg.site.mode == "active"


def decide(state: State, obs: Observations, now: float, cfg: Config) -> Decision:
    unsent = state.alerts if state.seen_run != obs.run else ()  # saved, perhaps never sent
    step = _Step(dataclasses.replace(state, alerts=()), obs, now, cfg)
    _new_run(step, unsent)
    _requests(step)
    _watch(step)
    _PHASES[step.state.phase](step)
    _status(step)
    reason = "; ".join(step.reasons) or step.state.reason
    step.update(reason=reason)
    return Decision(step.state, tuple(step.actions), reason, tuple(step.warnings), tuple(step.verdicts))


# ------------------------------------------------------------------ start-up and requests


def _new_run(step: _Step, unsent: tuple[tuple[str, str, str, str], ...]) -> None:
    """After a restart: the last decision's alerts again, the status LED again, fenced
    servers held off again, and the phase's action re-issued."""
    if step.state.seen_run == step.obs.run:
        return
    for event, server, channel, text in unsent:
        step.notify(event, server, channel, f"{text} (again after an appliance restart)".lstrip())
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


def _requests(step: _Step) -> None:
    """Each request is answered: refused with the reason, or accepted with what it started."""
    for req in step.obs.requests:
        before, step.refused = len(step.reasons), ""
        _request(step, req)
        said = "; ".join(step.reasons[before:])
        verdict = Verdict(False, step.refused) if step.refused else \
            Verdict(True, said or f"{req.kind.value}: nothing to change")
        step.verdicts.append((req.id, verdict))


def _request(step: _Step, req: Request) -> None:
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
    elif req.kind in (RequestKind.SWITCHOVER, RequestKind.FAILOVER):
        _operation_request(step, req.kind, req.server, req.force)


def _power_on(step: _Step, server: str) -> None:
    s = step.state
    if server not in s.fenced:
        step.refuse(f"power-on {server}: refused, it is not fenced")
        return
    if step.cfg.site.mode != "active":
        step.refuse(f"power-on {server}: refused, site.mode = observe acts on nothing")
        return
    step.act(PowerOn(server))
    step.update(fenced=_without(s.fenced, server), returned=_without(s.returned, server),
                rejoining=_with(s.rejoining, server))
    step.notify("power-restored-by-operator", server)
    step.why(f"{server}: power restored by an operator; it will rejoin as a standby")


def _operation_request(step: _Step, kind: RequestKind, server: str | None, force: bool) -> None:
    s = step.state
    if s.phase not in (Phase.NORMAL, Phase.HALTED) or s.primary is None:
        step.refuse(f"{kind.value}: refused in phase {s.phase.value} (primary {s.primary})")
        return
    if step.cfg.site.mode != "active":
        step.refuse(f"{kind.value}: refused, site.mode = observe")
        return
    if kind is RequestKind.FAILOVER:
        _manual_failover(step, server, force)
    else:
        _request_switchover(step, server)


def _manual_failover(step: _Step, server: str | None, force: bool) -> None:
    if not force or not server:
        step.refuse("failover: refused without --to SERVER and --force")
        return
    obs = step.obs.server(server)
    problem = why_not_eligible(obs, step.cfg, step.state.fenced, check_lag=False)
    if problem or server == step.state.primary:
        step.refuse(f"failover to {server}: refused, {problem or 'it is the primary'}")
        return
    _start_failover(step, server, "manual-failover")


def _request_switchover(step: _Step, server: str | None) -> None:
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
    _start_switchover(step, targets[0])


# ------------------------------------------------------------------------ watching


def _watch(step: _Step) -> None:
    conditions = set(_links_and_servers(step)) | set(_standbys(step))
    _ups(step)
    _returning(step)
    old = {c for c in step.state.conditions if _split(c)[0] in _RAISE}
    held = {c for c in old if _split(c)[1] in step.state.fenced}  # a fenced server's alerts stay as they were
    conditions |= held
    others = set(step.state.conditions) - old
    for cond in sorted(conditions - old):
        _raise(step, cond)
    for cond in sorted(old - conditions):
        _clear(step, cond)
    step.update(conditions=tuple(sorted(conditions | others)))
    _late_links(step)


def _late_links(step: _Step) -> None:
    """Heartbeat's warn time: a link silent past it but not yet dead is a warning in the log,
    once per late spell; no alert, no LED (a lost reply under packet loss is routine)."""
    late = {f"late:{srv.name}/{link.channel.value}" for srv in step.obs.servers if srv.name not in step.state.fenced
            for link in srv.links if link.state is LinkState.LATE}
    before = {c for c in step.state.conditions if c.startswith("late:")}
    for cond in sorted(late - before):
        _, server, channel = _split(cond)
        step.warnings.append(f"{server}: late reply on {channel} (silent past timing.warn_time ="
                             f" {step.cfg.timing.warn_time:g} s, dead at timing.dead_time = {step.cfg.timing.dead_time:g} s)")
    step.update(conditions=tuple(sorted((set(step.state.conditions) - before) | late)))


def _links_and_servers(step: _Step) -> list[str]:
    conds = []
    for srv in step.obs.servers:
        if srv.name in step.state.fenced:
            continue
        if srv.alive is False:
            conds.append(f"server-down:{srv.name}")
            continue
        for link in srv.links:
            if link.state.value == "dead":
                conds.append(f"link-down:{srv.name}/{link.channel.value}")
    return conds


def _standbys(step: _Step) -> list[str]:
    conds = []
    for srv in step.obs.servers:
        r = srv.report
        if srv.alive and r and r.role is Role.STANDBY and srv.name not in step.state.fenced:
            if not _lag_ok(r, step.cfg):
                conds.append(f"standby-lagging:{srv.name}")
    primary = step.state.primary
    if primary and step.state.phase is Phase.NORMAL and not candidates(step.obs, step.cfg, step.state):
        conds.append("standby-down:")
    return conds


_RAISE = {"server-down": "server-down", "link-down": "link-down",
          "standby-lagging": "standby-lagging", "standby-down": "standby-down"}
_CLEAR = {"server-down": "server-up", "link-down": "link-up", "standby-lagging": "standby-in-sync"}


def _split(cond: str) -> tuple[str, str, str]:
    kind, _, where = cond.partition(":")
    server, _, channel = where.partition("/")
    return kind, server, channel


def _raise(step: _Step, cond: str) -> None:
    kind, server, channel = _split(cond)
    step.notify(_RAISE[kind], server, channel)
    step.why(f"{server or 'site'}: {kind.replace('-', ' ')}{' on ' + channel if channel else ''}")


def _clear(step: _Step, cond: str) -> None:
    kind, server, channel = _split(cond)
    if kind in _CLEAR:
        step.notify(_CLEAR[kind], server, channel)
        step.why(f"{server}: {_CLEAR[kind].replace('-', ' ')}{' on ' + channel if channel else ''}")


def _ups(step: _Step) -> None:
    """UPS events on real changes only (start-up is silent); the policy runs in _normal."""
    seen = {s[0]: s for s in step.state.ups_seen}
    now_seen = []
    for srv in step.obs.servers:
        if srv.ups is None:
            continue
        prev = seen.get(srv.name)
        prev_obs = None if prev is None else UpsObs(srv.ups.name, prev[1], frozenset(prev[2]), prev[3], prev[4])
        for event in ups_events(prev_obs, srv.ups, step.cfg.policy.ups_low_runtime_s):
            step.notify(event, srv.name, "ups", _ups_text(srv.ups))
            step.why(f"{srv.name}: {event}")
        u = srv.ups
        if not u.reachable and prev is not None:  # keep the last known power state across a gap
            now_seen.append((srv.name, u.reachable, prev[2], prev[3], prev[4]))
        else:
            now_seen.append((srv.name, u.reachable, tuple(sorted(u.flags)), u.charge, u.runtime_s))
    step.update(ups_seen=tuple(now_seen))


def _ups_text(u: UpsObs) -> str:
    if not u.reachable:
        return f"{u.name}: {u.error or 'not answering'}"
    return f"{u.name}: status {' '.join(sorted(u.flags))}, charge {u.charge}%, runtime {u.runtime_s} s"


def _returning(step: _Step) -> None:
    """An old primary that comes back stays out, or rejoins as a standby, by policy."""
    s = step.state
    for name in s.fenced:
        srv = step.obs.server(name)
        if srv.alive and name not in s.returned:
            step.update(returned=_with(step.state.returned, name))
            step.notify("old-primary-returned", name)
            if step.cfg.policy.old_primary == "rejoin-as-standby" and s.primary and step.active:
                step.act(Rejoin(name, s.primary))
                step.update(fenced=_without(step.state.fenced, name))
                step.why(f"{name}: old primary back; told to rejoin as a standby of {s.primary}")
            else:
                step.why(f"{name}: old primary answers again; it stays fenced (policy.old_primary)")
    for name in s.rejoining:
        srv = step.obs.server(name)
        if srv.alive and s.primary and srv.report is not None:
            step.act(Rejoin(name, s.primary))
            step.update(rejoining=_without(step.state.rejoining, name))
            step.why(f"{name}: back after power-on; rejoining as a standby of {s.primary}")


# ------------------------------------------------------------------------ eligibility


def _lag_ok(r: AgentReport, cfg: Config) -> bool:
    if r.repl.in_sync is True:
        return True
    p = cfg.policy
    if p.lag_limit_bytes == 0 or r.repl.lag_bytes is None:
        return False
    if r.repl.lag_bytes > p.lag_limit_bytes:
        return False
    return p.lag_limit_s == 0 or (r.repl.lag_s is not None and r.repl.lag_s <= p.lag_limit_s)


def why_not_eligible(srv: ServerObs, cfg: Config, fenced: Sequence[str], check_lag: bool = True) -> str:
    """Empty if the server may take over; else why not, in words for the log."""
    r = srv.report
    if srv.name in fenced:
        return "it is fenced"
    if srv.alive is not True:
        return "it is not answering"
    if r is None:
        return "no report from its agent"
    if r.role is not Role.STANDBY:
        return f"its role is {r.role.value}"
    if not r.healthy:
        return f"its health check fails ({r.detail or 'no detail'})"
    if check_lag and not _lag_ok(r, cfg):
        return (f"not in sync (in_sync={r.repl.in_sync}, lag {r.repl.lag_bytes} bytes,"
                f" limit policy.lag_limit_bytes = {cfg.policy.lag_limit_bytes})")
    return ""


def candidates(obs: Observations, cfg: Config, state: State) -> list[str]:
    """Eligible standbys, best first: least lag, then higher priority, then name."""
    prio = {s.name: s.priority for s in cfg.servers}
    ok = [s for s in obs.servers
          if s.name != state.primary and not why_not_eligible(s, cfg, state.fenced)]
    ok.sort(key=lambda s: (s.report.repl.lag_bytes or 0, -prio[s.name], s.name))  # type: ignore[union-attr]
    return [s.name for s in ok]


def _standby_objects(srv: ServerObs, cfg: Config) -> str:
    """Rule 4: if the target still hears the primary, the appliance is the one cut off.

    The peer heartbeat is the fast view; the replication stream counts when the agent has
    no peer heartbeat (it can lag behind by the database's receiver timeout). Without a
    fence relay the standby must positively confirm the loss.
    """
    r = srv.report
    hears = None if r is None else r.hears_primary
    stream = None if r is None else r.repl.peer_alive
    if hears is True or (hears is None and stream is True):
        return f"{srv.name} still hears the primary: the appliance is the one cut off"
    if cfg.policy.fencing == "none" and not (hears is False and stream is not True):
        return (f"{srv.name} has not confirmed losing the primary, and policy.fencing = 'none'"
                " leaves no fence to make it safe")
    return ""


# ------------------------------------------------------------------------ phases


def _starting(step: _Step) -> None:
    unknown = [s.name for s in step.obs.servers if s.alive is None]
    _adopt_primary(step)
    if unknown:
        step.why(f"starting: waiting for first replies from {', '.join(unknown)}")
        return
    step.update(phase=Phase.NORMAL, since=step.now)
    step.why(f"started: primary is {step.state.primary or 'unknown'}")


def _adopt_primary(step: _Step) -> None:
    if step.state.primary is not None:
        return
    claim = [s.name for s in step.obs.servers
             if s.alive and s.report and s.report.role is Role.PRIMARY and s.name not in step.state.fenced]
    if len(claim) == 1:
        step.update(primary=claim[0])
        step.why(f"{claim[0]} reports the primary role")
    elif len(claim) > 1:
        step.why(f"{' and '.join(claim)} both claim the primary role: no automatic action")


def _normal(step: _Step) -> None:
    _adopt_primary(step)
    s = step.state
    if s.primary is None:
        _wait_operator(step, "no server reports the primary role")
        return
    primary = step.obs.server(s.primary)
    _rogue_primaries(step)
    if primary.alive is False:
        _primary_dead(step)
    elif primary.alive:
        _drop_condition(step, "operator-needed:")
        _ups_policy(step)


def _rogue_primaries(step: _Step) -> None:
    others = [x.name for x in step.obs.servers if x.name != step.state.primary and x.alive
              and x.report and x.report.role is Role.PRIMARY and x.name not in step.state.fenced]
    cond = {f"split:{n}" for n in others}
    for name in sorted(cond - set(step.state.conditions)):
        text = f"{name.split(':')[1]} claims the primary role; {step.state.primary} is the primary"
        step.notify("split-brain-suspected", name.split(":")[1], text=text)
        step.why(f"split brain suspected: {text}")
    step.update(conditions=tuple(sorted(set(c for c in step.state.conditions if not c.startswith("split:")) | cond)))


def _primary_dead(step: _Step) -> None:
    s = step.state
    targets = candidates(step.obs, step.cfg, s)
    blocked = _failover_blocked(step)
    if not targets:
        why = "; ".join(f"{x.name}: {why_not_eligible(x, step.cfg, s.fenced)}" for x in step.obs.servers
                        if x.name != s.primary) or "no standby configured"
        _wait_operator(step, f"primary {s.primary} is dead and no standby may take over ({why});"
                             " use arbiterctl failover --force")
        return
    objection = _standby_objects(step.obs.server(targets[0]), step.cfg)
    if objection:
        step.why(f"primary {s.primary} silent on every link, but {objection}; no failover")
        return
    if blocked:
        _wait_operator(step, f"primary {s.primary} is dead; would fail over to {targets[0]}, but {blocked}")
        return
    _start_failover(step, targets[0], "failover")


def _failover_blocked(step: _Step) -> str:
    s = step.state
    if step.cfg.site.mode == "observe":
        return "site.mode = observe"
    if s.maintenance:
        return "maintenance mode is on"
    if not step.cfg.policy.auto_failover:
        return "policy.auto_failover = false"
    if s.hold_down_until is not None and step.now < s.hold_down_until:
        return f"hold-down for {s.hold_down_until - step.now:.0f} s more (timing.hold_down)"
    return ""


def _wait_operator(step: _Step, why: str) -> None:
    step.why(why)
    cond = "operator-needed:"
    if cond not in step.state.conditions:
        step.notify("operator-needed", text=why)
        step.update(conditions=step.state.conditions + (cond,))


def _drop_condition(step: _Step, cond: str) -> None:
    if cond in step.state.conditions:
        step.update(conditions=_without(step.state.conditions, cond))


def _start_failover(step: _Step, target: str, operation: str) -> None:
    old = step.state.primary or ""
    step.update(old=old, target=target, operation=operation, verify_tries=0)
    step.notify("failover-started", old, text=f"{operation}: {old} -> {target}")
    if operation != "failover":
        step.why(f"{operation} to {target} ordered by an operator")
    elif step.cfg.policy.fencing == "none":
        step.why(f"{operation}: {old} silent on every link and {target} confirms losing it;"
                 f" promoting {target} (policy.fencing = 'none': no fence)")
    else:
        step.why(f"{operation}: {old} silent on every link; fencing it, then promoting {target}")
    if step.cfg.policy.fencing == "none":
        step.enter(Phase.PROMOTING, Promote(target))
    else:
        step.enter(Phase.FENCING, Fence(old))


def _start_switchover(step: _Step, target: str) -> None:
    old = step.state.primary or ""
    step.update(old=old, target=target, operation="switchover", verify_tries=0)
    step.notify("switchover-started", old, text=f"{old} -> {target}")
    step.why(f"switchover: demoting {old}, then promoting {target}")
    step.enter(Phase.DEMOTING, Demote(old), ReleaseIp(old))


def _ups_policy(step: _Step) -> None:
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
    if not step.active:
        step.why("observe only: UPS policy not carried out")
        return
    step.update(ups_handled=intent.kind)
    if intent.kind == "switchover" and intent.target:
        _start_switchover(step, intent.target)
        return
    if intent.backup:
        step.notify("backup-requested", intent.backup, text=intent.reason)
        step.act(Backup(intent.backup))
    if intent.kind == "backup-shutdown":
        step.notify("shutdown-requested", text=f"order: {', '.join(intent.shutdown_order)}")
        for name in intent.shutdown_order:
            step.act(Shutdown(name))


def _outcome(step: _Step) -> tuple[bool, str] | None:
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


def _phase_timeout(phase: Phase, cfg: Config) -> float:
    t = cfg.timing
    margin = 1.0  # the executor times out first; this guards against a lost result
    return {Phase.FENCING: t.fence_timeout, Phase.VERIFYING: t.verify_timeout}.get(
        phase, t.action_timeout) + margin


def _fail(step: _Step, event: str, why: str) -> None:
    s = step.state
    failed = "switchover-failed" if s.operation == "switchover" else "failover-failed"
    if event != failed:
        step.notify(event, s.old or "", text=why)
    step.notify(failed, s.target or "", text=why)
    step.notify("operator-needed", text=why)
    step.enter(Phase.HALTED)
    step.why(f"{s.operation} {s.old} -> {s.target} stopped: {why}; waiting for an operator")


def _awaited(step: _Step, waiting: str, event: str, failure: str) -> str | None:
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


def _fencing(step: _Step) -> None:
    s = step.state
    detail = _awaited(step, f"fencing {s.old}: waiting for power-off confirmation", "fence-failed",
                      f"fence of {s.old} not confirmed ({{}}); no promotion")
    if detail is None:
        return
    step.update(fenced=_with(s.fenced, s.old or ""))
    step.notify("fence-done", s.old or "", text=detail)
    step.why(f"{s.old} fenced; promoting {s.target}")
    step.enter(Phase.PROMOTING, Promote(s.target or ""))


def _promoting(step: _Step) -> None:
    s = step.state
    if _awaited(step, f"promoting {s.target}", "failover-failed", f"promote of {s.target} failed ({{}})") is None:
        return
    step.update(primary=s.target)
    step.why(f"{s.target} is primary; moving the virtual IP")
    step.enter(Phase.TAKING_IP, TakeIp(s.target or ""))


def _taking_ip(step: _Step) -> None:
    s = step.state
    if _awaited(step, f"{s.target} taking the virtual IP", "failover-failed",
                f"{s.target} could not take the virtual IP ({{}})") is None:
        return
    if step.cfg.vip.verify == "none":
        _complete(step, "takeover not verified (vip.verify = none)")
        return
    step.update(verify_tries=1)
    step.enter(Phase.VERIFYING, VerifyIp(s.target or ""))
    step.why(f"{s.target} holds the virtual IP; checking that only its MAC answers ARP")


def _verifying(step: _Step) -> None:
    out = _outcome(step)
    s = step.state
    if out is None:
        step.why(f"verifying that only {s.target} answers ARP for the virtual IP")
        return
    ok, detail = out
    result = step.obs.result(s.awaiting[0]) if s.awaiting else None
    if ok:
        _complete(step, detail)
    elif result is not None and result.code == "split-brain":
        _split_brain(step, detail)
    elif s.verify_tries < VERIFY_TRIES:
        step.update(verify_tries=s.verify_tries + 1)
        step.enter(Phase.VERIFYING, VerifyIp(s.target or ""))
        step.why(f"ARP check {s.verify_tries} of {VERIFY_TRIES} failed ({detail}); trying again")
    else:
        _fail(step, "failover-failed", f"takeover not verified after {VERIFY_TRIES} ARP checks ({detail})")


def _split_brain(step: _Step, detail: str) -> None:
    """The target is primary, but another host answers for the virtual IP too: alarm, and
    nothing more automatic until an operator has looked (maintenance off resumes)."""
    s = step.state
    step.notify("split-brain-suspected", s.target or "", text=detail)
    step.notify("operator-needed", text=f"split brain suspected after {s.operation} to {s.target}: {detail}")
    if s.operation != "switchover":
        step.update(hold_down_until=step.now + step.cfg.timing.hold_down, failovers=s.failovers + 1)
    step.enter(Phase.HALTED)
    step.why(f"{s.operation} {s.old} -> {s.target}: {s.target} is primary but the virtual IP is answered"
             f" by more than one host ({detail}); split brain suspected, waiting for an operator")


def _complete(step: _Step, detail: str) -> None:
    s = step.state
    if s.operation == "switchover":
        step.notify("switchover-completed", s.target or "", text=detail)
        step.update(phase=Phase.NORMAL, since=step.now, awaiting=(), primary=s.target)
    else:
        step.notify("failover-completed", s.target or "", text=detail)
        step.update(phase=Phase.NORMAL, since=step.now, awaiting=(), primary=s.target,
                    hold_down_until=step.now + step.cfg.timing.hold_down, failovers=s.failovers + 1)
    _drop_condition(step, "operator-needed:")
    step.why(f"{s.operation} complete: {s.target} is primary and holds the virtual IP ({detail})")


def _demoting(step: _Step) -> None:
    s = step.state
    if _awaited(step, f"switchover: demoting {s.old} and releasing its virtual IP", "switchover-failed",
                f"demote of {s.old} failed ({{}})") is None:
        return
    step.update(phase=Phase.SYNCING, since=step.now, awaiting=())
    step.why(f"{s.old} demoted; waiting until {s.target} has every transaction")


def _syncing(step: _Step) -> None:
    s = step.state
    srv = step.obs.server(s.target or "")
    r = srv.report
    caught_up = r is not None and srv.alive and (r.repl.lag_bytes == 0 or
                                                  (r.repl.lag_bytes is None and r.repl.in_sync is True))
    if caught_up:
        step.why(f"{s.target} has everything; promoting it")
        step.enter(Phase.PROMOTING, Promote(s.target or ""))
        return
    if step.now - s.since > step.cfg.timing.action_timeout:
        _fail(step, "switchover-failed", f"{s.target} did not catch up within timing.action_timeout"
                                         f" = {step.cfg.timing.action_timeout} s")
        return
    step.why(f"waiting for {s.target} to catch up (lag {r.repl.lag_bytes if r else '?'} bytes)")


def _halted(step: _Step) -> None:
    step.why("halted after a failed operation: waiting for an operator "
             "(arbiterctl failover/switchover, or maintenance off to resume)")


_PHASES = {
    Phase.STARTING: _starting, Phase.NORMAL: _normal, Phase.FENCING: _fencing,
    Phase.PROMOTING: _promoting, Phase.TAKING_IP: _taking_ip, Phase.VERIFYING: _verifying,
    Phase.DEMOTING: _demoting, Phase.SYNCING: _syncing, Phase.HALTED: _halted,
}

# What a phase waits for, issued again when the appliance restarts in that phase.
_REENTER = {
    Phase.FENCING: lambda st: st.enter(Phase.FENCING, Fence(st.state.old or "")),
    Phase.PROMOTING: lambda st: st.enter(Phase.PROMOTING, Promote(st.state.target or "")),
    Phase.TAKING_IP: lambda st: st.enter(Phase.TAKING_IP, TakeIp(st.state.target or "")),
    Phase.VERIFYING: lambda st: st.enter(Phase.VERIFYING, VerifyIp(st.state.target or "")),
    Phase.DEMOTING: lambda st: st.enter(Phase.DEMOTING, Demote(st.state.old or ""),
                                        ReleaseIp(st.state.old or "")),
    Phase.SYNCING: lambda st: st.update(since=st.now),
}


def _status(step: _Step) -> None:
    s = step.state
    if s.phase is Phase.HALTED:
        led = "fault"
    elif any(not c.startswith("late:") for c in s.conditions) or s.maintenance:
        led = "degraded"
    elif s.failovers:
        led = "failed-over"
    else:
        led = "ok"
    if led != s.led:
        step.act(SetStatus(led))
        step.update(led=led)


def _with(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return tuple(sorted(set(items) | {item}))


def _without(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return tuple(x for x in items if x != item)
