"""Continuity rules: losing the synchronous standby (policy.sync_loss) and bringing a standby
back into sync, rebuilding a standby that cannot rejoin, and the results of those actions.

Anchors: Patroni's ``synchronous_mode`` (degrade) against ``synchronous_mode_strict``
(block), pg_auto_failover's ``number_sync_standbys``.

* A loss counts only once the primary has been seen with a synchronous standby
  (``sync_seen``).
* A primary promoted since the site was last seen synchronous (a failover or a switchover:
  the promotion leaves ``synchronous_standby_names`` empty unless the agent's
  ``sync_after_promote`` names standbys) runs on one copy: ``durability-reduced`` at once,
  and every standby of the site that streams from it (the others, a rejoined or rebuilt old
  primary, as soon as they do) goes to ``resync``. A site never seen synchronous is left as
  it runs: the appliance does not make an asynchronous site synchronous.
* block: commits keep waiting; after ``policy.sync_loss_grace`` one critical
  ``commits-blocked``. degrade: after the grace the primary's agent is told to stop waiting
  (DegradeSync), ``durability-reduced`` goes out, and the lost standbys are ``degraded``:
  while any is, no standby is promoted automatically, because the lost one still believes
  itself synchronous and may miss acknowledged commits, and another one may have been
  named synchronous only now (rule 3).
* A standby in ``resync`` (a lost one, a rejoined or rebuilt one, one streaming from a primary
  promoted alone) that streams with nothing left to replay is named synchronous (RestoreSync);
  once the primary confirms, ``durability-restored`` and the block on failover ends.
* Rejoin, rebuild and the sync actions are not a phase's actions: their results are matched
  here through ``pending`` (action id, what, server, issued at).
"""
from __future__ import annotations

from firmware.config import Fencing, SyncLoss
from firmware.decide.step import Step, drop_condition, with_
from firmware.model import Action, DegradeSync, Rebuild, Rejoin, RestoreSync, Role, ServerObs
from firmware.site_state import CondKind, Condition, Phase, State

_BLOCKED = Condition(CondKind.COMMITS_BLOCKED)
_REDUCED = Condition(CondKind.DURABILITY_REDUCED)


def sync_loss(step: Step) -> None:
    """The primary answers: watch whether it still has a synchronous standby, and act by policy."""
    s = step.state
    if s.degraded and s.sync_seen != s.primary:  # a forced failover since: the new primary starts afresh
        step.update(degraded=(), resync=())
        drop_condition(step, _REDUCED)
    report = step.obs.server(s.primary or "").report
    if report is None or report.role is not Role.PRIMARY or report.repl.in_sync is None:
        return  # unknown is no news (rule 10): neither a loss nor a recovery
    if report.repl.in_sync and not _dead_sync_standbys(step):
        _in_sync(step)
    elif s.sync_seen == s.primary and not s.degraded:
        _out_of_sync(step)
    elif s.sync_seen:
        _promoted_alone(step)
    _resync(step)


def _in_sync(step: Step) -> None:
    s = step.state
    step.update(sync_seen=s.primary, sync_lost_since=None)
    if _BLOCKED in s.conditions and not s.degraded:
        drop_condition(step, _BLOCKED)
        step.notify("durability-restored", s.primary or "", text="the synchronous standby confirms commits again")
        step.why(f"{s.primary}: synchronous standby back; commits no longer wait")


def _out_of_sync(step: Step) -> None:
    s = step.state
    p = step.cfg.policy
    if s.sync_lost_since is None:
        step.update(sync_lost_since=step.now)
        step.why(f"{s.primary}: no synchronous standby; commits wait (policy.sync_loss_grace = {p.sync_loss_grace:g} s)")
        return
    if step.now - s.sync_lost_since < p.sync_loss_grace or _BLOCKED in s.conditions:
        return
    lost = _lost_standbys(step)
    if p.sync_loss is SyncLoss.BLOCK:
        text = f"lost: {', '.join(lost) or 'unknown'}; commits on {s.primary} wait (policy.sync_loss = block)"
        step.notify("commits-blocked", s.primary or "", text=text)
        step.update(conditions=tuple(sorted(s.conditions + (_BLOCKED,))))
        step.why(f"{s.primary}: synchronous standby lost for {step.now - s.sync_lost_since:.1f} s; {text}")
        return
    if step.held():
        step.why(f"{s.primary}: synchronous standby lost, policy.sync_loss = degrade not carried out ({step.held()})")
        return
    text = (f"{', '.join(lost)} lost for {step.now - s.sync_lost_since:.1f} s; {s.primary} stops waiting for it"
            " (policy.sync_loss = degrade); no automatic failover until it is synchronous again")
    step.update(degraded=tuple(lost), resync=tuple(sorted(set(s.resync) | set(lost))),
                conditions=tuple(sorted(set(s.conditions) | {_REDUCED})))
    track(step, DegradeSync(s.primary or "", tuple(lost)), s.primary or "")
    step.notify("durability-reduced", s.primary or "", text=text)
    step.why(f"{s.primary}: {text}")


def _promoted_alone(step: Step) -> None:
    """A new primary without a synchronous standby: say so once, and have every standby that
    streams from it named synchronous once it has caught up (``_resync``)."""
    s = step.state
    if not _restoring(s):  # resync is what the pending order names, until its result
        streaming = [x.name for x in step.obs.servers if x.name != s.primary and x.name not in s.fenced
                     and _streams(x)]
        step.update(resync=tuple(sorted(set(s.resync) | set(streaming))))
    if _REDUCED in s.conditions:
        return
    waiting = ", ".join(step.state.resync) or "no standby streams from it yet"
    text = (f"{s.primary} runs without a synchronous standby since its promotion: acknowledged commits are on"
            f" one machine until a standby is named synchronous once caught up ({waiting})")
    step.update(conditions=tuple(sorted(set(s.conditions) | {_REDUCED})))
    step.notify("durability-reduced", s.primary or "", text=text)
    step.why(text)


def _dead_sync_standbys(step: Step) -> list[str]:
    """Standbys silent on every link whose last report said they were synchronous: the primary's
    commits wait for them already, though its sender notices only after wal_sender_timeout."""
    return [x.name for x in step.obs.servers if x.name != step.state.primary and x.alive is False
            and x.name not in step.state.fenced and x.report is not None and x.report.repl.in_sync]


def _lost_standbys(step: Step) -> list[str]:
    """The standbys that do not stream from the primary, or if all seem to, those not in sync."""
    others = [x for x in step.obs.servers if x.name != step.state.primary and x.name not in step.state.fenced]
    gone = [x.name for x in others if not _streams(x)]
    return gone or [x.name for x in others if not (x.report and x.report.repl.in_sync)]


def _streams(srv: ServerObs) -> bool:
    r = srv.report
    return bool(srv.alive and r and r.role is Role.STANDBY and r.repl.peer_alive)


def _resync(step: Step) -> None:
    """Standbys waiting to be synchronous again: named once they stream with nothing to replay."""
    s = step.state
    if not s.resync or _restoring(s) or step.held():
        return
    ready = [n for n in s.resync if _streams(step.obs.server(n))
             and step.obs.server(n).report.repl.lag_bytes == 0]  # type: ignore[union-attr]
    if ready and len(ready) == len(s.resync):
        track(step, RestoreSync(s.primary or "", tuple(ready)), s.primary or "")
        step.why(f"{', '.join(ready)} caught up with {s.primary}: naming it synchronous again")


def _restoring(s: State) -> bool:
    return any(what == "sync_restore" for _, what, _, _ in s.pending)


def degraded_blocks(step: Step) -> str:
    """Why no automatic failover while durability is reduced; empty if none."""
    if not step.state.degraded:
        return ""
    return (f"durability reduced ({', '.join(step.state.degraded)} not synchronous since policy.sync_loss ="
            " degrade acted): a standby may miss acknowledged commits")


def self_fence_pending(step: Step) -> str:
    """policy.fencing = none: the dead primary is replaced only once it has been silent for
    timing.self_fence_wait, by when its agent has stopped its database (arbiter-agent
    check-config --site holds the agents to that); empty once it has."""
    if step.cfg.policy.fencing is not Fencing.NONE:
        return ""
    primary = step.obs.server(step.state.primary or "")
    seen = [link.last_seen for link in primary.links if link.last_seen is not None]
    silent = step.now - max(seen) if seen else None
    wait = step.cfg.timing.self_fence_wait
    if silent is not None and silent < wait:
        return (f"primary {primary.name} silent on every link for {silent:.1f} s; waiting until"
                f" timing.self_fence_wait = {wait:g} s, by when an isolated primary has stopped its database")
    return ""


def request_rebuild(step: Step, server: str) -> None:
    """arbiterctl rebuild SERVER: a standby (or a returned old primary) copied afresh."""
    s = step.state
    if server not in {x.name for x in step.obs.servers}:
        step.refuse(f"rebuild {server or '(no server named)'}: refused, not a server of this site")
        return
    srv = step.obs.server(server)
    if step.held(automatic=False):
        step.refuse(f"rebuild {server}: refused, {step.held(automatic=False)}")
    elif s.phase is not Phase.NORMAL:
        step.refuse(f"rebuild {server}: refused in phase {s.phase.value}")
    elif server == s.primary or not s.primary:
        step.refuse(f"rebuild {server}: refused, it is the primary" if s.primary else
                    f"rebuild {server}: refused, no primary to copy from")
    elif server in s.fenced:
        step.refuse(f"rebuild {server}: refused, it is fenced (arbiterctl power-on {server} first)")
    elif not srv.alive:
        step.refuse(f"rebuild {server}: refused, its agent does not answer")
    elif any(who == server for _, what, who, _ in s.pending if what == "rebuild"):
        step.refuse(f"rebuild {server}: refused, a rebuild is already running")
    else:
        _rebuild(step, server, "ordered by an operator")


def _rebuild(step: Step, server: str, why: str) -> None:
    track(step, Rebuild(server, step.state.primary or ""), server)
    step.notify("rebuild-started", server, text=f"from {step.state.primary}: {why}")
    step.why(f"{server}: rebuilding from {step.state.primary} ({why})")


def track(step: Step, action: Action, server: str) -> None:
    """Issue an action whose result is matched by ``results`` rather than by a phase."""
    issued = step.act(action)
    step.update(pending=step.state.pending + ((issued.id, _WHAT[type(action)], server, step.now),))


def results(step: Step) -> None:
    """What became of the tracked actions: each result once; no result in time is a failure."""
    keep, before = [], step.state.pending
    for entry in before:
        action_id, what, server, since = entry
        got = step.obs.result(action_id)
        limit = (step.cfg.timing.rebuild_timeout if what == "rebuild" else step.cfg.timing.action_timeout) + 1.0
        if got is not None:
            _done(step, what, server, got.ok, got.detail)
        elif step.now - since > limit:
            _done(step, what, server, False, f"no result within {limit:g} s")
        else:
            keep.append(entry)
    step.update(pending=tuple(keep) + step.state.pending[len(before):])  # a result may have issued the next


def _done(step: Step, what: str, server: str, ok: bool, detail: str) -> None:
    s = step.state
    if what == "rejoin" and not ok:
        _rejoin_failed(step, server, detail)
    elif what == "rejoin" and s.sync_seen:
        step.update(resync=with_(s.resync, server))
        step.why(f"{server}: rejoined as a standby of {s.primary}; it becomes synchronous once caught up")
    elif what == "rebuild":
        if ok:
            step.update(resync=with_(s.resync, server))
            step.notify("rebuild-done", server, text=detail)
            step.why(f"{server}: rebuilt ({detail}); it becomes synchronous once caught up")
        else:
            step.notify("rebuild-failed", server, text=detail)
            step.why(f"{server}: rebuild failed ({detail}); waiting for an operator")
    elif what == "sync_restore" and ok:
        named = set(s.resync)  # the primary confirmed it waits for them: synchronous from now on
        step.update(resync=(), degraded=tuple(n for n in s.degraded if n not in named), sync_seen=s.primary or "")
        if not step.state.degraded and _REDUCED in s.conditions:
            drop_condition(step, _REDUCED)
            step.notify("durability-restored", s.primary or "", text=detail)
        step.why(f"{s.primary}: {', '.join(sorted(named))} synchronous again ({detail})")
    elif not ok:  # sync_degrade or sync_restore: commits may still wait; tried again after a grace
        step.update(sync_lost_since=step.now if what == "sync_degrade" else s.sync_lost_since,
                    degraded=() if what == "sync_degrade" else s.degraded)
        step.notify("commits-blocked" if what == "sync_degrade" else "operator-needed", server,
                    text=f"{what} on {server} failed: {detail}")
        step.why(f"{what} on {server} failed ({detail}); trying again")


def _rejoin_failed(step: Step, server: str, detail: str) -> None:
    """pg_rewind could not bring the old primary back: a full copy, if the policy allows."""
    if step.cfg.policy.auto_rebuild and step.state.primary and not step.held():
        _rebuild(step, server, f"rejoin failed: {detail}; policy.auto_rebuild = true")
        return
    text = f"rejoin of {server} failed ({detail}); arbiterctl rebuild {server} copies it afresh"
    step.notify("operator-needed", server, text=text)
    step.why(f"{server}: {text} (policy.auto_rebuild = false)")


_WHAT = {DegradeSync: "sync_degrade", RestoreSync: "sync_restore", Rebuild: "rebuild", Rejoin: "rejoin"}
