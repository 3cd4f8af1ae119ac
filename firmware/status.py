"""The `arbiterctl status` report: one dict built from the daemon's latest view."""
from __future__ import annotations

from typing import Any

from firmware.model import Observations, ServerObs


def _server(srv: ServerObs, fenced: tuple[str, ...], now: float) -> dict[str, Any]:
    r = srv.report
    links = {
        link.channel.value: {
            "state": link.state.value,
            "age_s": None if link.last_seen is None else round(now - link.last_seen, 3),
            "rtt_ms": None if link.rtt_s is None else round(link.rtt_s * 1000, 2),
        }
        for link in srv.links
    }
    ups = None
    if srv.ups is not None:
        u = srv.ups
        ups = {"status": " ".join(sorted(u.flags)) if u.reachable else f"unreachable: {u.error}",
               "charge": u.charge, "runtime_s": u.runtime_s}
    return {
        "name": srv.name,
        "role": r.role.value if r else "unknown",
        "alive": srv.alive,
        "fenced": srv.name in fenced,
        "power_on": srv.power_on,
        "healthy": r.healthy if r else None,
        "links": links,
        "repl": {"in_sync": r.repl.in_sync if r else None, "lag_bytes": r.repl.lag_bytes if r else None,
                 "lag_s": r.repl.lag_s if r else None, "peer_alive": r.repl.peer_alive if r else None},
        "ups": ups,
    }


def status_report(daemon: Any) -> dict[str, Any]:
    """``daemon`` is a firmware.daemon.Daemon; typed loosely to avoid an import cycle."""
    state = daemon.state
    now = daemon.clock()
    obs: Observations | None = daemon.last_obs
    severity, acked = daemon.app.notifier.alarm_state()
    hold = None if state.hold_down_until is None else max(0.0, round(state.hold_down_until - now, 1))
    return {
        "site": daemon.cfg.site.name,
        "phase": state.phase.value,
        "primary": state.primary,
        "target": state.target,
        "maintenance": state.maintenance,
        "mode": daemon.cfg.site.mode,
        "hold_down_remaining_s": hold or None,
        "alarm": {"severity": severity, "acked": acked},
        "last_reason": state.reason,
        "frames_dropped": daemon.app.poller.dropped(),
        "running": [{"action": a.id, "elapsed_s": round(t, 2)} for a, t in daemon.app.executor.running()],
        "servers": [_server(s, state.fenced, now) for s in (obs.servers if obs else ())],
    }
