"""What each action does to the world: relays, agent commands, ARP checks, alerts.

``make_handlers`` binds the actions to the appliance's parts; the executor calls them on
its worker threads. Every handler returns a short detail for the log, or raises
ActionError naming what did not happen and the setting that bounds it.
"""
from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from typing import Any, Protocol

from firmware.config import Config, FenceMode
from firmware.errors import ActionError, SplitBrainSuspected
from firmware.executor import Handler
from firmware.model import (Backup, DegradeSync, Demote, Fence, HoldFence, Notify, PowerOn, Promote,
                            Rebuild, Rejoin, ReleaseIp, RestoreSync, SetStatus, Shutdown, TakeIp, VerifyIp)


class Relay(Protocol):
    def cut(self) -> None: ...
    def restore(self) -> None: ...
    def cut_and_confirm(self, timeout: float) -> bool: ...
    def power_on(self) -> bool | None: ...


class BoardPort(Protocol):
    def relay(self, server: str) -> Relay: ...
    def set_status(self, status: str) -> None: ...


class CommandPort(Protocol):
    def send_command(self, server: str, op: str, args: dict[str, Any]) -> str: ...
    def wait_result(self, cmd_id: str, timeout: float) -> tuple[bool, str] | None: ...


class NotifyPort(Protocol):
    def notify(self, event: str, server: str = "", channel: str = "", text: str = "") -> object: ...


ArpProbe = Callable[[str, str], frozenset[str]]
# fence level 2: (ups spec, instcmd, timeout, power-sense reads off) -> what confirmed it, or ActionError
OutletCut = Callable[[str, str, float, Callable[[], bool]], str]


def make_handlers(cfg: Config, board: BoardPort, agents: CommandPort, notifier: NotifyPort,
                  arp_probe: ArpProbe, cut_outlet: OutletCut | None = None) -> dict[type, Handler]:
    t = cfg.timing

    def command(server: str, op: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> str:
        cmd_id = agents.send_command(server, op, args or {})
        bound = "timing.action_timeout" if timeout is None else "timing.rebuild_timeout"
        limit = timeout or t.action_timeout
        result = agents.wait_result(cmd_id, limit)  # woken as the acknowledgement arrives
        if result is None:
            raise ActionError(f"{op} on {server} ({bound}): no answer within {limit:g} s")
        ok, detail = result
        if not ok:
            raise ActionError(f"{op} on {server} refused: {detail}")
        return detail or f"{op} done"

    def fence(a: Fence) -> str:
        """Level 1, the relay; level 2, the UPS outlet, only when level 1 is not confirmed
        (Pacemaker's fencing topology). The detail names the level that worked: fence-done's text."""
        relay = board.relay(a.server)
        if relay.cut_and_confirm(t.fence_timeout):
            if cfg.fence.mode is FenceMode.CYCLE:
                timer = threading.Timer(cfg.fence.cycle_off_s, relay.restore)
                timer.daemon = True  # a stopping appliance must not wait for it; the relay fails safe (closed)
                timer.start()
                return (f"{a.server}: power off confirmed (level 1: relay); back on in {cfg.fence.cycle_off_s:g} s"
                        " (fence.mode = cycle)")
            return f"{a.server}: power off confirmed (level 1: relay)"
        level1 = (f"{a.server}: power still reads on {t.fence_timeout:g} s after the relay opened"
                  " (timing.fence_timeout; check the relay and its power_sense input)")
        srv = cfg.server(a.server)
        if not srv.fence_ups_command or cut_outlet is None:
            raise ActionError(level1)
        notifier.notify("fence-escalated", a.server, text=f"{level1}; level 2: {srv.fence_ups_command} on {srv.ups}")
        try:
            how = cut_outlet(srv.ups, srv.fence_ups_command, t.fence_timeout, lambda: relay.power_on() is False)
        except ActionError as exc:
            raise ActionError(f"{level1}; {exc}") from exc
        return f"{a.server}: power off confirmed (level 2: UPS outlet, {how})"

    def hold(a: HoldFence) -> str:
        if cfg.fence.mode is FenceMode.CYCLE:  # they were powered on again on purpose, and are kept out of service
            return f"fence.mode = cycle: {', '.join(a.servers)} stay powered, out of service"
        for server in a.servers:
            board.relay(server).cut()
        return f"held off: {', '.join(a.servers)}"

    def power_on(a: PowerOn) -> str:
        board.relay(a.server).restore()
        return f"{a.server}: relay closed, power restored"

    def verify(a: VerifyIp) -> str:
        ip = str(ipaddress.ip_interface(cfg.vip.address).ip)
        want = cfg.server(a.expect).mac
        macs = arp_probe(ip, cfg.vip.interface)
        if macs == {want}:
            return f"only {a.expect} ({want}) answers for {ip}"
        if len(macs) > 1:
            raise SplitBrainSuspected(f"{len(macs)} MACs answer for {ip}: {', '.join(sorted(macs))} (expected {want})")
        if not macs:
            raise ActionError(f"no ARP answer for {ip} on {cfg.vip.interface}")
        raise ActionError(f"{next(iter(macs))} answers for {ip}, expected {a.expect} ({want})")

    def notify(a: Notify) -> str:
        notifier.notify(a.event, a.server, a.channel, a.text)
        return ""

    def status(a: SetStatus) -> str:
        board.set_status(a.status)
        return ""

    return {
        Fence: fence, HoldFence: hold, PowerOn: power_on, VerifyIp: verify,
        Notify: notify, SetStatus: status,
        Promote: lambda a: command(a.server, "promote"),
        Demote: lambda a: command(a.server, "demote"),
        TakeIp: lambda a: command(a.server, "take_ip"),
        ReleaseIp: lambda a: command(a.server, "release_ip"),
        Backup: lambda a: command(a.server, "backup"),
        Shutdown: lambda a: command(a.server, "shutdown"),
        Rejoin: lambda a: command(a.server, "rejoin", {"primary": a.primary}),
        DegradeSync: lambda a: command(a.server, "sync_degrade", {"lost": list(a.lost)}),
        RestoreSync: lambda a: command(a.server, "sync_restore", {"standbys": list(a.standbys)}),
        Rebuild: lambda a: command(a.server, "rebuild", {"primary": a.primary}, t.rebuild_timeout),
    }
