"""Builders for configs and observation snapshots used by the decision-core tests."""
from __future__ import annotations

from typing import Any

from firmware import config
from firmware.model import (ActionResult, AgentReport, Channel, LinkObs, LinkState, Notify,
                            Observations, Replication, Request, Role, ServerObs, SetStatus, UpsObs)

MACS = {"master": "02:00:00:00:00:01", "standby": "02:00:00:00:00:02", "standby2": "02:00:00:00:00:03"}


def site_config(servers: tuple[str, ...] = ("master", "standby"), **sections: dict[str, Any]) -> config.Config:
    data: dict[str, Any] = {
        "site": {"name": "test-site", "key_file": "/nonexistent"},
        "vip": {"address": "192.0.2.100/24"},
        "servers": [
            {"name": n, "address": f"192.0.2.{i + 1}", "serial": f"/dev/ttyUSB{i}",
             "mac": MACS[n], "fence_relay": f"relay{i + 1}", "power_sense": f"sense{i + 1}",
             "priority": 100 - i}
            for i, n in enumerate(servers)
        ],
    }
    for name, table in sections.items():
        data.setdefault(name, {}).update(table)
    return config.parse(data)


def report(role: Role = Role.STANDBY, healthy: bool = True, in_sync: bool | None = True,
           lag: int | None = 0, hears: bool | None = False, peer: bool | None = None) -> AgentReport:
    return AgentReport(role, healthy, role is Role.PRIMARY,
                       Replication(in_sync, lag, 0.0 if lag == 0 else None, peer), hears)


def server(name: str, serial: LinkState = LinkState.UP, lan: LinkState = LinkState.UP,
           rep: AgentReport | None = None, ups: UpsObs | None = None, power_on: bool | None = True) -> ServerObs:
    if rep is None:
        rep = report(Role.PRIMARY if name == "master" else Role.STANDBY)
    return ServerObs(name, (LinkObs(Channel.SERIAL, serial), LinkObs(Channel.LAN, lan)),
                     rep, power_on, False, ups)


def dead(name: str, rep: AgentReport | None = None) -> ServerObs:
    return server(name, LinkState.DEAD, LinkState.DEAD, rep)


def obs(*servers: ServerObs, results: tuple[ActionResult, ...] = (), requests: tuple[Request, ...] = (),
        run: int = 1) -> Observations:
    return Observations(servers=servers, results=results, requests=requests, run=run)


def ok(action_id: str, detail: str = "") -> ActionResult:
    return ActionResult(action_id, True, detail)


def failed(action_id: str, detail: str = "boom") -> ActionResult:
    return ActionResult(action_id, False, detail)


def acting(actions) -> list:
    """The actions that do something, without the reporting ones (Notify, SetStatus)."""
    return [a for a in actions if not isinstance(a, (Notify, SetStatus))]


def events(actions) -> list[str]:
    return [a.event for a in actions if isinstance(a, Notify)]
