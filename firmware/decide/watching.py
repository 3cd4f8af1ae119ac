"""Events on real changes: links, servers, standbys, UPSes and returning old primaries.

Conditions persist in the state so each is raised once and cleared once."""
from __future__ import annotations

import dataclasses

from firmware.config import OldPrimary
from firmware.decide.continuity import track
from firmware.decide.eligibility import candidates, lag_ok, why_not_candidate
from firmware.decide.step import Step, heard_since_fence, with_, without
from firmware.model import LinkState, Rejoin, Role, UpsObs
from firmware.site_state import BUSY, CondKind, Condition, Phase, UpsSeen
from firmware.ups_policy import ups_events


def watch(step: Step) -> None:
    conditions = set(_links_and_servers(step)) | set(_standbys(step))
    _ups(step)
    _returning(step)
    old = {c for c in step.state.conditions if c.kind in _RAISE}
    held = {c for c in old if c.server in step.state.fenced}  # a fenced server's alerts stay as they were
    conditions |= held
    others = set(step.state.conditions) - old
    for cond in sorted(conditions - old):
        _raise(step, cond)
    for cond in sorted(old - conditions):
        _clear(step, cond)
    step.update(conditions=tuple(sorted(conditions | others)))
    _late_links(step)


def _late_links(step: Step) -> None:
    """Heartbeat's warn time: a link silent past it but not yet dead is a warning in the log,
    once per late spell; no alert, no LED (a lost reply under packet loss is routine)."""
    late = {Condition(CondKind.LATE, srv.name, link.channel.value) for srv in step.obs.servers
            if srv.name not in step.state.fenced for link in srv.links if link.state is LinkState.LATE}
    before = {c for c in step.state.conditions if c.kind is CondKind.LATE}
    for cond in sorted(late - before):
        step.warnings.append(f"{cond.server}: late reply on {cond.channel} (silent past timing.warn_time ="
                             f" {step.cfg.timing.warn_time:g} s, dead at timing.dead_time = {step.cfg.timing.dead_time:g} s)")
    step.update(conditions=tuple(sorted((set(step.state.conditions) - before) | late)))


def _links_and_servers(step: Step) -> list[Condition]:
    conds = []
    for srv in step.obs.servers:
        if srv.name in step.state.fenced:
            continue
        if srv.alive is False:  # its links' alerts stay as they were: its last link died, none came back
            conds.append(Condition(CondKind.SERVER_DOWN, srv.name))
            conds.extend(c for c in step.state.conditions if c.kind is CondKind.LINK_DOWN and c.server == srv.name)
            continue
        for link in srv.links:
            if link.state is LinkState.DEAD:
                conds.append(Condition(CondKind.LINK_DOWN, srv.name, link.channel.value))
    return conds


def _standbys(step: Step) -> list[Condition]:
    """Lagging standbys, and no standby at all. The target of a running operation is not judged
    for lag: its stream ends when the old primary is fenced or demoted, which is the operation."""
    s = step.state
    promoting = s.op.target if s.op is not None and s.phase in BUSY else None
    conds = []
    for srv in step.obs.servers:
        r = srv.report
        if srv.alive and r and r.role is Role.STANDBY and srv.name not in s.fenced and srv.name != promoting:
            if not lag_ok(r, step.cfg):
                conds.append(Condition(CondKind.STANDBY_LAGGING, srv.name))
    down = Condition(CondKind.STANDBY_DOWN)
    if not s.primary or s.phase is not Phase.NORMAL:  # judged in normal only, held as it was meanwhile
        return conds + ([down] if down in s.conditions else [])
    if not candidates(step.obs, step.cfg, s):
        conds.append(down)
    return conds


def _no_standby(step: Step) -> str:
    """Why no server may take over, server by server (after a failover: the old primary is fenced)."""
    return "; ".join(f"{srv.name}: {why_not_candidate(srv, step.cfg, step.state.fenced)}"
                     for srv in step.obs.servers if srv.name != step.state.primary)


# The kinds watched here, with the events that raise and clear them.
_RAISE = {CondKind.SERVER_DOWN: "server-down", CondKind.LINK_DOWN: "link-down",
          CondKind.STANDBY_LAGGING: "standby-lagging", CondKind.STANDBY_DOWN: "standby-down"}
_CLEAR = {CondKind.SERVER_DOWN: "server-up", CondKind.LINK_DOWN: "link-up",
          CondKind.STANDBY_LAGGING: "standby-in-sync", CondKind.STANDBY_DOWN: "standby-available"}


def _raise(step: Step, c: Condition) -> None:
    text = _no_standby(step) if c.kind is CondKind.STANDBY_DOWN else ""
    step.notify(_RAISE[c.kind], c.server, c.channel, text)
    step.why(f"{c.server or 'site'}: {c.kind.value.replace('-', ' ')}{' on ' + c.channel if c.channel else ''}"
             f"{' (' + text + ')' if text else ''}")


def _clear(step: Step, c: Condition) -> None:
    if c.kind in _CLEAR:
        text = (f"{', '.join(candidates(step.obs, step.cfg, step.state))} may take over"
                if c.kind is CondKind.STANDBY_DOWN else "")
        step.notify(_CLEAR[c.kind], c.server, c.channel, text)
        step.why(f"{c.server or 'site'}: {_CLEAR[c.kind].replace('-', ' ')}{' on ' + c.channel if c.channel else ''}"
                 f"{' (' + text + ')' if text else ''}")


def _ups(step: Step) -> None:
    """UPS events on real changes only (start-up is silent); the policy runs in _normal."""
    seen = {s.server: s for s in step.state.ups_seen}
    now_seen = []
    for srv in step.obs.servers:
        if srv.ups is None:
            continue
        prev = seen.get(srv.name)
        prev_obs = None if prev is None else UpsObs(srv.ups.name, prev.reachable, frozenset(prev.flags), prev.charge,
                                                    prev.runtime_s)
        for event in ups_events(prev_obs, srv.ups, step.cfg.policy.ups_low_runtime_s):
            step.notify(event, srv.name, "ups", _ups_text(srv.ups))
            step.why(f"{srv.name}: {event}")
        u = srv.ups
        if not u.reachable and prev is not None:  # keep the last known power state across a gap
            now_seen.append(dataclasses.replace(prev, reachable=u.reachable))
        else:
            now_seen.append(UpsSeen(srv.name, u.reachable, tuple(sorted(u.flags)), u.charge, u.runtime_s))
    step.update(ups_seen=tuple(now_seen))


def _ups_text(u: UpsObs) -> str:
    if not u.reachable:
        return f"{u.name}: {u.error or 'not answering'}"
    return f"{u.name}: status {' '.join(sorted(u.flags))}, charge {u.charge}%, runtime {u.runtime_s} s"


def _returning(step: Step) -> None:
    """An old primary that comes back stays out, or rejoins as a standby, by policy. Only a
    reply newer than the last fence counts: a primary fenced while it still answered (its
    service failed) has links that look alive for another dead time."""
    s = step.state
    for name in s.fenced:
        srv = step.obs.server(name)
        if heard_since_fence(s, srv) and name not in s.returned:
            step.update(returned=with_(step.state.returned, name))
            step.notify("old-primary-returned", name)
            if step.cfg.policy.old_primary is OldPrimary.REJOIN_AS_STANDBY and s.primary and not step.held():
                track(step, Rejoin(name, s.primary), name)
                step.update(fenced=without(step.state.fenced, name))
                step.why(f"{name}: old primary back; told to rejoin as a standby of {s.primary}")
            else:
                step.why(f"{name}: old primary answers again; it stays fenced (policy.old_primary)")
    for name in s.rejoining:
        srv = step.obs.server(name)
        if srv.alive and s.primary and srv.report is not None:
            if step.held():  # maintenance came on after the power-on: the rejoin waits for it to end
                step.why(f"{name}: back after power-on; the rejoin waits ({step.held()})")
                continue
            track(step, Rejoin(name, s.primary), name)
            step.update(rejoining=without(step.state.rejoining, name))
            step.why(f"{name}: back after power-on; rejoining as a standby of {s.primary}")
