"""The status report (``arbiterctl status --json``, HTTP ``/status``): one dict built from a
narrow, frozen view of the daemon, so the report, the page, the metrics and the SNMP objects
read the same numbers and none of them reaches into the daemon's parts."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from firmware.model import Observations, ServerObs
from firmware.site_state import BUSY, Phase, State


@dataclass(frozen=True)
class StatusView:
    """Everything a report needs, taken at one instant."""

    site: str
    mode: str
    state: State
    obs: Observations | None
    now: float
    started: float  # monotonic time the daemon started
    alarm: tuple[str, bool]  # (severity name, acknowledged)
    vip: str = ""
    last_cycle: float | None = None  # monotonic end of the last cycle that worked
    frames_dropped: dict[str, int] = field(default_factory=dict)
    running: tuple[tuple[str, float], ...] = ()  # (action id, elapsed s)
    last_failover: dict[str, Any] | None = None
    alerts_sent: dict[str, int] = field(default_factory=dict)  # by event name

    def server_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.obs.servers) if self.obs else ()


def version() -> str:
    try:
        return metadata.version("billmaster-arbiter")
    except metadata.PackageNotFoundError:
        return "unknown"


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
        ups = {"name": u.name, "status": " ".join(sorted(u.flags)) if u.reachable else f"unreachable: {u.error}",
               "charge": u.charge, "runtime_s": u.runtime_s}
    return {
        "name": srv.name,
        "role": r.role.value if r else "unknown",
        "alive": srv.alive,
        "fenced": srv.name in fenced,
        "power_on": srv.power_on,
        "healthy": r.healthy if r else None,
        "vip": r.vip if r else None,
        "links": links,
        "repl": {"in_sync": r.repl.in_sync if r else None, "lag_bytes": r.repl.lag_bytes if r else None,
                 "lag_s": r.repl.lag_s if r else None, "peer_alive": r.repl.peer_alive if r else None},
        "ups": ups,
    }


def status_report(view: StatusView) -> dict[str, Any]:
    state, now = view.state, view.now
    severity, acked = view.alarm
    hold = None if state.hold_down_until is None else max(0.0, round(state.hold_down_until - now, 1))
    return {
        "site": view.site,
        "version": version(),
        "phase": state.phase.value,
        "in_phase_s": round(now - state.since, 1),
        "primary": state.primary,
        "target": state.op.target if state.op else None,
        "maintenance": state.maintenance,
        "mode": view.mode,
        "hold_down_remaining_s": hold or None,
        "failovers": state.failovers,
        "last_failover": view.last_failover,
        "uptime_s": round(now - view.started, 1),
        "alarm": {"severity": severity, "acked": acked},
        # a server silent on every link holds nothing any more as far as anyone knows: its last
        # report (a powered-off old primary's "I hold the VIP") is not shown as news
        "vip": {"address": view.vip, "held_by": [s.name for s in view.obs.servers
                                                 if s.report and s.report.vip and s.alive is not False]
                if view.obs else []},
        "last_reason": state.reason,
        "frames_dropped": view.frames_dropped,
        "running": [{"action": a, "elapsed_s": round(t, 2)} for a, t in view.running],
        "servers": [_server(s, state.fenced, now) for s in (view.obs.servers if view.obs else ())],
    }


STALE_AFTER_S = 3.0  # no working cycle for this long: the decision loop is stuck


def health(view: StatusView) -> tuple[bool, str]:
    """For monitors and load balancers: healthy while the loop cycles, the appliance is not
    halted and it knows a primary."""
    if view.last_cycle is None or view.now - view.last_cycle > STALE_AFTER_S:
        return False, f"no working decision cycle for over {STALE_AFTER_S:g} s"
    if view.state.phase is Phase.HALTED:
        return False, "halted: an operator is needed"
    if view.state.primary is None:
        return False, f"no primary (phase {view.state.phase.value})"
    return True, f"phase {view.state.phase.value}, primary {view.state.primary}"


# Monitoring-plugin exit codes (Nagios, Icinga, Zabbix, Checkmk all read them).
CHECK_OK, CHECK_WARNING, CHECK_CRITICAL, CHECK_UNKNOWN = 0, 1, 2, 3
CHECK_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


def check(st: dict[str, Any]) -> tuple[int, str]:
    """(code, one line): critical when halted, without a primary, or the alarm at MAJOR or
    worse (acknowledged or not: the fault is still there); warning in a failover under way,
    in maintenance or observe mode, or the alarm at WARNING."""
    severity = st.get("alarm", {}).get("severity", "CLEAR")
    phase = st.get("phase", "")
    problems: list[tuple[int, str]] = []
    if phase == Phase.HALTED.value:
        problems.append((CHECK_CRITICAL, "halted: an operator is needed"))
    if not st.get("primary") and phase != Phase.STARTING.value:
        problems.append((CHECK_CRITICAL, "no primary"))
    if severity in ("MAJOR", "CRITICAL"):
        problems.append((CHECK_CRITICAL, f"alarm {severity}"))
    elif severity == "WARNING":
        problems.append((CHECK_WARNING, "alarm WARNING"))
    if phase in {p.value for p in BUSY}:
        problems.append((CHECK_WARNING, f"{phase} under way"))
    if st.get("maintenance") or st.get("mode") == "observe":
        problems.append((CHECK_WARNING, "observe only (maintenance or site.mode)"))
    code = max((c for c, _ in problems), default=CHECK_OK)
    said = "; ".join(text for _, text in problems)
    line = (f"ARBITER {CHECK_NAMES[code]} - phase {phase}, primary {st.get('primary') or '-'}"
            f"{'; ' + said if said else ''}{' (alarm acknowledged)' if st.get('alarm', {}).get('acked') else ''}"
            f" | failovers={st.get('failovers', 0)} in_phase={st.get('in_phase_s', 0)}s")
    return code, line
