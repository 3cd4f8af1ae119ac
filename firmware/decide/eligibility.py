"""Which standby may take over, and which is best (safety rules 3 and 4)."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from firmware.config import Config, Fencing
from firmware.model import AgentReport, Observations, Role, ServerObs
from firmware.site_state import State


def as_primary_sees(obs: Observations, primary: str | None) -> Observations:
    """Each standby's ``in_sync`` as the primary's latest report judges it, when that report
    lists the standbys holding every commit it acknowledges (``repl.sync_standbys``); the last
    report of a primary that died counts too, since it names who held its acknowledged commits
    when it stopped. A standby's own view is a copy of the primary's setting that the
    appliance's sync orders do not reach (it would keep a rejoined standby "not in sync"
    for ever, and a standby dropped by the primary "in sync"); it counts only when no primary
    report has such a list."""
    holders = None
    if primary is not None:
        report = next((s.report for s in obs.servers if s.name == primary), None)
        if report is not None and report.role is Role.PRIMARY:
            holders = report.repl.sync_standbys
    if holders is None:
        return obs
    servers = tuple(_judged(s, s.name in holders) if s.name != primary else s for s in obs.servers)
    if all(a is b for a, b in zip(servers, obs.servers)):
        return obs
    return dataclasses.replace(obs, servers=servers)


def _judged(srv: ServerObs, in_sync: bool) -> ServerObs:
    r = srv.report
    if r is None or r.role is not Role.STANDBY or r.repl.in_sync is in_sync:
        return srv
    report = dataclasses.replace(r, repl=dataclasses.replace(r.repl, in_sync=in_sync))
    return dataclasses.replace(srv, report=report)


def lag_ok(r: AgentReport, cfg: Config) -> bool:
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
    if check_lag and not lag_ok(r, cfg):
        return (f"not in sync (in_sync={r.repl.in_sync}, lag {r.repl.lag_bytes} bytes,"
                f" limit policy.lag_limit_bytes = {cfg.policy.lag_limit_bytes})")
    return ""


def why_not_candidate(srv: ServerObs, cfg: Config, fenced: Sequence[str]) -> str:
    """Empty if the server may be chosen automatically; priority 0 never is (an operator's
    failover --force still can choose it)."""
    return why_not_eligible(srv, cfg, fenced) or (
        "its priority is 0: never promoted automatically (servers[].priority)"
        if cfg.server(srv.name).priority == 0 else "")


def candidates(obs: Observations, cfg: Config, state: State) -> list[str]:
    """Standbys an automatic failover or switchover may choose, best first: in sync (or within
    the lag limit), then least lag, then higher priority, then name; priority 0 never."""
    prio = {s.name: s.priority for s in cfg.servers}
    ok = [s for s in obs.servers
          if s.name != state.primary and not why_not_candidate(s, cfg, state.fenced)]
    ok.sort(key=lambda s: (s.report.repl.lag_bytes or 0, -prio[s.name], s.name))  # type: ignore[union-attr]
    return [s.name for s in ok]


def standby_objects(srv: ServerObs, cfg: Config) -> str:
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
    if cfg.policy.fencing is Fencing.NONE and not (hears is False and stream is not True):
        return (f"{srv.name} has not confirmed losing the primary, and policy.fencing = 'none'"
                " leaves no fence to make it safe")
    return ""
