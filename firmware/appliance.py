"""Builds the appliance's parts from its config and owns their lifetimes.

The daemon asks this object for snapshots (links, power, UPS) and hands it actions; the
parts themselves (board, links, alerts, UPS watch, control socket, state) stay swappable.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from board.gpio import Board, make_factory
from board.hil_bridge import HilFactory
from board.pins import PIN_MAPS
from board.sdnotify import notify as sd_notify
from firmware import arpcheck
from firmware.config import Config, read_key, read_secret
from firmware.reach import reaches_any
from firmware.errors import DamagedFile, StateError
from firmware.control import ControlServer, Handler
from firmware.executor import Executor
from firmware.hands import make_handlers
from firmware.journal import Journal
from firmware.links import Poller
from firmware.realtime import Realtime
from firmware.model import UpsObs, VipAudit
from firmware.notify import AlarmSink, HookSink, JournalSink, LogSink, Notifier, Sink
from firmware.protocol import Codec, derive_key
from firmware.site_state import State
from firmware.state import DAMAGE, SlotStore, StateStore, kernel_boot_id
from firmware.ups import UpsWatch, cut_outlet

log = logging.getLogger("arbiter")
T = TypeVar("T")
MAX_DAMAGED = 8  # files one part keeps; each damaged one is set aside once

SOURCE_RATE_PER_POLL = 10  # UDP frames one server may send per poll interval before the rest is dropped


class Appliance:
    def __init__(self, cfg: Config, clock: Callable[[], float], wake: Callable[[], None]) -> None:
        self.cfg = cfg
        self.clock = clock
        state_dir = Path(cfg.site.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.store = SlotStore(state_dir / "state.json")
        self.damaged: list[str] = []  # one line per damaged file: the daemon then halts safely
        self.run_id = self._next_run(state_dir / "runs")
        self.journal = self._set_aside_if_damaged(lambda: Journal(state_dir / "journal.jsonl"))
        # on the rig, mock pins that the rig sees and drives through a directory
        self.rig_pins = HilFactory(Path(cfg.board.hil_gpio_dir), PIN_MAPS["hil"]) \
            if cfg.board.kind == "hil" and cfg.board.hil_gpio_dir else None
        self.board = Board(cfg, self.rig_pins or make_factory(cfg.board), clock=clock)
        master = read_key(cfg.site.key_file)
        codec = Codec(cfg.site.node_id, {s.name: derive_key(master, s.name) for s in cfg.servers}, self.run_id)
        self.poller = Poller(codec, [(s.name, s.serial, s.baudrate, s.address, s.port) for s in cfg.servers],
                             clock=clock, source_rate=SOURCE_RATE_PER_POLL / cfg.timing.interval,
                             realtime=Realtime(cfg.site.realtime_priority, "site.realtime_priority"),
                             on_news=wake)
        self.notifier = self._set_aside_if_damaged(
            lambda: make_notifier(cfg, state_dir, self.journal, self.board.set_alarm))
        self.board.on_ack(self._button_ack)
        self.executor = Executor(self._handlers(cfg), wake=wake, clock=clock,
                                 realtime=Realtime(cfg.site.realtime_priority, "site.realtime_priority"))
        specs = {s.name: s.ups for s in cfg.servers if s.ups}
        password = read_secret("ups.password_file", cfg.ups.password_file) if specs and cfg.ups.password_file \
            else ""
        self.ups_watch = UpsWatch(specs, cfg.ups.username, password, cfg.ups.timeout) if specs else None
        self._ups: dict[str, UpsObs] = {}
        self._ups_lock = threading.Lock()
        self.vip_audit: VipAudit | None = None  # written by one thread, read whole by the loop
        self.reach: bool | None = None
        self._stop = threading.Event()
        self.control: ControlServer | None = None
        self.sd_notify = sd_notify

    def _next_run(self, path: Path) -> int:
        """A counter that grows with every start: the frames' boot id and decide's run id.

        A damaged counter is left where it is (a restart halts again, until an operator has
        looked): run 0 then, and the appliance acts on nothing."""
        store = StateStore(path)
        try:
            run = (store.load() or {}).get("run", 0)
            if not isinstance(run, int) or isinstance(run, bool) or run < 0:
                raise DamagedFile(path, f"run = {run!r:.40}, not a count")
        except DamagedFile as exc:
            self.damaged.append(str(exc))
            return 0
        store.save({"run": run + 1})
        return run + 1

    def _set_aside_if_damaged(self, build: Callable[[], T]) -> T:
        """Build a part whose files are records, not decisions (journal, alarm, alert outbox and
        counters): a damaged one is renamed NAME.damaged, noted, and the part built afresh."""
        for _ in range(MAX_DAMAGED):
            try:
                return build()
            except DamagedFile as exc:
                aside = Path(str(exc.path) + ".damaged")
                try:
                    os.replace(exc.path, aside)
                except OSError as err:
                    raise StateError(f"{exc}; cannot move it aside ({err.strerror})") from exc
                self.damaged.append(f"{exc}; kept as {aside}")
        return build()

    def reconfigure(self, cfg: Config) -> None:
        """A reloaded config: the action handlers (timeouts, fence mode, address) follow it."""
        self.cfg = cfg
        self.executor.replace_handlers(self._handlers(cfg))

    def _handlers(self, cfg: Config) -> dict:
        path = cfg.fence.ups_password_file
        user, password = cfg.fence.ups_username, read_secret("fence.ups_password_file", path) if path else ""
        return make_handlers(cfg, self.board, self.poller, self.notifier, arpcheck.probe,
                             lambda spec, cmd, timeout, off: cut_outlet(spec, cmd, user, password, timeout, off))

    def load_state(self, now: float) -> State:
        data = self.store.load()
        if data is None:
            return State(since=now)
        try:
            state = State.from_dict(data.get("site", data))
        except DAMAGE as exc:
            raise DamagedFile(self.store.source, f"{type(exc).__name__}: {exc}") from exc
        op = (state.op.old, state.op.target) if state.op else ()
        named = {state.primary, *op, *state.fenced, *state.rejoining} - {None, ""}
        unknown = sorted(named - {s.name for s in self.cfg.servers})
        if unknown:
            raise StateError(f"{self.store.source}: the saved state names {', '.join(unknown)}, not in the config's"
                             " [[servers]]; put the server back in the config, or check the site and remove the"
                             f" state files ({', '.join(str(p) for p in (self.store.path, *self.store.slots))})"
                             " to start afresh")
        if data.get("kernel_boot") != kernel_boot_id():
            state = state.rebased(now, self.cfg.timing.hold_down)
        log.info("resuming: phase %s, primary %s, fenced %s", state.phase.value, state.primary,
                 ", ".join(state.fenced) or "none")
        return state

    def save_state(self, state: State) -> None:
        self.store.save({"site": state.to_dict(), "kernel_boot": kernel_boot_id()})

    def start(self, handler: Handler) -> None:
        self.control = ControlServer(self.cfg.site.socket, handler)
        self.control.start()
        if self.ups_watch is not None:
            threading.Thread(target=self._watch_ups, name="ups-watch", daemon=True).start()
        threading.Thread(target=self._audit_vip, name="vip-audit", daemon=True).start()
        threading.Thread(target=self._probe_clients, name="ping", daemon=True).start()

    def _audit_vip(self) -> None:
        """Who answers ARP for the virtual IP, every vip.audit_interval, off the loop (a probe
        waits for late answers). A failed probe is logged and leaves the last audit standing,
        which ages: decide acts only on audits newer than what it already judged."""
        while not self._stop.is_set():
            started = time.monotonic()
            every = self.cfg.vip.audit_interval  # a reload may change it
            if every > 0 and self.cfg.vip.verify == "arp":
                try:
                    at = self.clock()
                    macs = arpcheck.probe(str(ipaddress.ip_interface(self.cfg.vip.address).ip), self.cfg.vip.interface)
                    self.vip_audit = VipAudit(at, macs)
                except Exception:  # the audit must outlive a bad moment of the interface; decide sees no new audit
                    log.exception("virtual IP audit failed (vip.interface = %s)", self.cfg.vip.interface)
            self._stop.wait(max(0.05, (every or 1.0) - (time.monotonic() - started)))

    def _probe_clients(self) -> None:
        """The appliance's own view of the ping targets: one more witness for network-down."""
        while not self._stop.is_set():
            started = time.monotonic()
            p = self.cfg.ping
            if p.targets:
                try:
                    self.reach = reaches_any(p.targets, p.timeout)
                except OSError as exc:  # cannot look is not "unreachable"
                    log.error("ping.targets: cannot send ICMP echo (%s); the appliance's view is unknown", exc)
                    self.reach = None
            else:
                self.reach = None
            self._stop.wait(max(0.05, p.interval - (time.monotonic() - started)))

    def _watch_ups(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                latest = self.ups_watch.poll()  # type: ignore[union-attr]
            except Exception as exc:  # the watch thread must outlive anything: monitoring lost, alerted
                log.exception("UPS poll failed")
                latest = {name: UpsObs(spec, reachable=False, error=f"UPS poll failed: {exc!r}"[:200])
                          for name, spec in self.ups_watch.specs.items()}  # type: ignore[union-attr]
            by_server = {s.name: latest[s.name] for s in self.cfg.servers if s.name in latest}
            with self._ups_lock:
                self._ups = by_server
            self._stop.wait(max(0.0, self.cfg.ups.poll_interval - (time.monotonic() - started)))

    def ups_latest(self) -> dict[str, UpsObs]:
        with self._ups_lock:
            return dict(self._ups)

    def power(self) -> dict[str, tuple[bool, bool | None]]:
        out: dict[str, tuple[bool, bool | None]] = {}
        for s in self.cfg.servers:
            if s.fence_relay:  # policy.fencing = "none" sites have no relay to read
                relay = self.board.relay(s.name)
                out[s.name] = (relay.is_cut, relay.power_on())
        return out

    def _button_ack(self) -> None:
        self.notifier.ack()
        self.notifier.notify("alarm-acknowledged", text="push button")

    def close(self) -> None:
        self._stop.set()
        if self.control is not None:
            self.control.stop()
        self.executor.join(2.0)
        self.poller.close()
        self.notifier.close()
        self.store.close()
        if self.rig_pins is not None:
            self.rig_pins.close()


def make_notifier(cfg: Config, state_dir: Path, journal: Journal | None,
                  set_alarm: Callable[[bool], None]) -> Notifier:
    """The appliance's notifier with every sink its config asks for."""
    sinks: list[Sink] = [LogSink(), AlarmSink(set_alarm, StateStore(Path(state_dir) / "alarm.json"))]
    if journal is not None:
        sinks.append(JournalSink(journal))
    if cfg.alerts.hook:
        sinks.append(HookSink(shlex.split(cfg.alerts.hook)))
    if cfg.alerts.managers:
        # pysnmp (~12 MiB) only for a site with managers; imported here, at start-up, since the
        # traps of a failover must not wait for it
        from firmware.snmp import SnmpSink
        sinks.append(SnmpSink(cfg, Path(state_dir)))
    return Notifier(cfg, sinks, Path(state_dir))

