"""What to do when mains power fails: a pure function of the UPS readings (no I/O).

Defaults, as the policy settings describe them: on battery alone is only an alert (raised
from ups_events); the primary's UPS running low while a standby's is on line means a planned,
zero-loss switchover to that standby before the primary's batteries die; with no such
standby, a backup on the primary and an orderly shutdown, standbys first; every UPS on
battery means a backup on the primary now, and shutdowns in an order that leaves the most
up-to-date copy running longest. Unknown or unreachable readings never cause an action.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from firmware.model import UpsObs


@dataclass(frozen=True)
class UpsIntent:
    kind: str  # "none", "switchover", "backup-shutdown", "all-on-battery"
    target: str | None = None
    backup: str | None = None
    shutdown_order: tuple[str, ...] = ()
    reason: str = ""


def _low(u: UpsObs, low_runtime_s: float) -> bool:
    """Low by the UPS's own flags, or on battery with less runtime left than the limit."""
    if "LB" in u.flags or "FSD" in u.flags:
        return True
    return "OB" in u.flags and u.runtime_s is not None and u.runtime_s < low_runtime_s


def _low_now(u: UpsObs | None, low_runtime_s: float) -> bool:
    """Low on a reading the policy may act on: a known and reachable UPS only."""
    return u is not None and bool(u.reachable) and _low(u, low_runtime_s)


def _on_line(u: UpsObs | None) -> bool:
    return u is not None and bool(u.reachable) and "OL" in u.flags and "OB" not in u.flags


def _on_battery(u: UpsObs | None) -> bool:
    return u is not None and bool(u.reachable) and "OB" in u.flags


def shutdown_order(primary: str, servers: Sequence[str], lag_bytes: Mapping[str, int]) -> tuple[str, ...]:
    """Most behind first; the most up-to-date copy last (ties: standbys before the primary)."""
    return tuple(sorted(servers, key=lambda s: (-lag_bytes.get(s, 0), s == primary, s)))


def ups_intent(primary: str | None, ups: Mapping[str, UpsObs | None], candidates: Sequence[str],
               lag_bytes: Mapping[str, int], low_runtime_s: float, switchover_enabled: bool) -> UpsIntent:
    if primary is None or ups.get(primary) is None:
        return UpsIntent("none")
    watched = [s for s, u in ups.items() if u is not None]
    mine = ups[primary]
    if len(watched) > 1 and all(_on_battery(ups[s]) for s in watched):
        order = shutdown_order(primary, watched, lag_bytes)
        low = [s for s in watched if _low_now(ups[s], low_runtime_s)]
        if low:  # nowhere to switch to: the order decided below is carried out now
            return UpsIntent("backup-shutdown", backup=primary, shutdown_order=order,
                             reason=f"every UPS is on battery and {', '.join(low)} runs low: backup on {primary},"
                                    f" then shutdown {', '.join(order)}")
        return UpsIntent("all-on-battery", backup=primary, shutdown_order=order,
                         reason=f"every UPS is on battery ({', '.join(watched)}): backup on {primary} now;"
                                f" once a battery runs low, shutdown {', '.join(order)}")
    if not _low_now(mine, low_runtime_s):
        return UpsIntent("none")
    why = (f"{primary}'s UPS is low (status {' '.join(sorted(mine.flags))}, runtime {mine.runtime_s} s,"  # type: ignore[union-attr]
           f" limit policy.ups_low_runtime_s = {low_runtime_s:g})")
    on_line = [c for c in candidates if _on_line(ups.get(c))]
    if switchover_enabled and on_line:
        return UpsIntent("switchover", target=on_line[0], reason=f"{why}: switching over to {on_line[0]}, on line power")
    order = shutdown_order(primary, watched, lag_bytes)
    return UpsIntent("backup-shutdown", backup=primary, shutdown_order=order,
                     reason=f"{why} and no in-sync standby on line power: backup, then shutdown {', '.join(order)}")


def ups_events(prev: UpsObs | None, cur: UpsObs, low_runtime_s: float = 0.0) -> list[str]:
    """Events for a real change between two readings.

    Like NUT upsmon's flags that start unknown (-1) and fire only on a real 0 -> 1 change,
    a first reading (prev None) raises nothing: the states already present at start-up were
    present before the appliance looked, and alarming on them at every reboot would teach
    the staff to ignore the alarm. Losing and regaining monitoring are changes of their own;
    across a gap, ``prev`` keeps the flags of the last reading before it (decide keeps them),
    so a UPS that went on battery while nobody could see it is still reported when it is seen.
    """
    if prev is None:
        return []
    if not cur.reachable:
        return ["ups-monitoring-lost"] if prev.reachable else []
    if not prev.reachable:
        back = ["ups-monitoring-restored"] if prev.reachable is False else []
        return back + (_power_changes(prev, cur, low_runtime_s) if prev.flags else [])
    return _power_changes(prev, cur, low_runtime_s)


def _power_changes(prev: UpsObs, cur: UpsObs, low_runtime_s: float) -> list[str]:
    events = []
    if "OB" in cur.flags and "OB" not in prev.flags:
        events.append("ups-on-battery")
    if _low(cur, low_runtime_s) and not _low(prev, low_runtime_s):
        events.append("ups-low-battery")
    if "OL" in cur.flags and "OB" in prev.flags and "OB" not in cur.flags:
        events.append("ups-power-restored")
    return events
