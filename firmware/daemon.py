"""arbiterd: the appliance daemon. A thin shell around the pure core.

One fixed-rate loop: poll every link, observe once into a frozen snapshot, ``decide``,
persist the new state, then hand the actions to the executor. Signal handlers only set
flags. The loop is woken early when an action finishes, so a failover's steps follow each
other without waiting for the next tick. systemd gets READY after the first full cycle and
WATCHDOG only after a healthy one.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware import footprint  # first: it keeps OpenSSL out of the process before anything imports it
from board.sdnotify import watchdog_interval, watchdog_timeout
from firmware import add_version
from firmware import config as config_mod
from firmware import logs
from firmware.appliance import Appliance
from firmware.decide import decide
from firmware.decide.eligibility import as_primary_sees
from firmware.detector import Stall, first_lease_end, observe_servers
from firmware.errors import ArbiterError, ConfigError, DamagedFile
from firmware.commands import BadCommand, Command, Name, Operator, OrderDesk, peer_loginuid
from firmware.control import Peer
from firmware.model import Action, Notify, Observations, Verdict
from firmware.notify import Throttle
from firmware.site_state import Phase, SavedAlert, State
from firmware.history import History
from firmware.status import StatusView, status_report
from firmware.protocol import derive_key
from firmware.realtime import Realtime, prompt_handover

if TYPE_CHECKING:
    from firmware.metrics import Metrics
    from firmware.snmp_agent import SnmpResponder
    from firmware.web import StatusWeb

log = logging.getLogger("arbiter")

OVERRUN_LOG_EVERY_S = 60.0
BUGS_BEFORE_HALT = 2  # unexpected errors in a row before safe halted mode
RESTART_SECTIONS = ("servers", "site", "board", "alerts", "ups", "http", "snmp")
HURRY_SHARE = 4  # a hurried server is polled this many times an interval (Decision.hurry)
VERDICT_WAIT_S = 5.0  # an order's answer: decide runs every timing.interval, so this means stuck


def next_slot(tick: float, began: float, now: float, interval: float) -> tuple[float, float]:
    """The loop's next tick after a cycle that began at ``began`` and ended at ``now``, and how
    far that cycle ran past the following slot (0: not at all; the next cycle then starts at once).

    A cycle woken before its tick (a lease's end, an action's result, a server's news, an
    order) is one more, and leaves the tick where it was: counted as the tick's, it pushed the
    next poll of every server up to two intervals away, and a failover that waited for the
    standby to stop hearing the primary waited 40 ms more."""
    if began < tick:
        return tick, 0.0
    following = tick + interval
    if now > following:
        return now, now - following
    return following, 0.0


def worth_saving(before: State, after: State, actions: tuple[Action, ...]) -> bool:
    """Whether a decision's state goes to the SD card before its actions run: always when it
    acts (persist before acting: a restart then resumes, never repeats), else only when its
    substance changed. At 25 decisions a second, a write (two fsyncs) for every reason text
    or audit stamp would wear the card out and cost the loop CPU for nothing to resume. A calm
    decision returns the very state it was given (Step.update keeps an unchanged state), which
    needs no comparison: two substance() copies compared cost 48 us of a calm cycle's CPU."""
    return bool(actions) or (after is not before and after.substance() != before.substance())


def with_unsent(state: State, queued: tuple[Action, ...]) -> State:
    """The state to save: a restart sends its alerts again (decide's resume), and those are
    only the alerts of the decision that made it. Alerts of earlier decisions still queued on
    the executor's reporter thread go with them, oldest first, or a crash would lose them."""
    carried = tuple(SavedAlert(a.event, a.server, a.channel, a.text) for a in queued if isinstance(a, Notify))
    return state.evolve(alerts=carried + state.alerts) if carried else state


class Daemon:
    def __init__(self, config_path: Path, clock=time.monotonic) -> None:
        self.config_path = config_path
        self.cfg = config_mod.load(config_path)
        check_watchdog(self.cfg, watchdog_timeout())
        self.clock = clock
        self.started_at = clock()
        self.app = Appliance(self.cfg, clock, wake=self._wake_event_set)
        self.halted = ""  # why the appliance is in safe halted mode; empty while it runs
        self._bugs = 0  # unexpected errors in a row
        try:
            self.state = self.app.load_state(self.started_at)
        except DamagedFile as exc:  # kept as it is: a restart halts again until an operator looks
            self.app.damaged.append(str(exc))
            self.state = State(phase=Phase.HALTED, since=self.started_at)
        self.orders = OrderDesk()
        self.history = History(self.app.journal)
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.last_obs: Observations | None = None
        self.last_cycle: float | None = None
        self._last_heartbeat = -float("inf")
        self._prev_cycle_at = self.started_at
        self._stall: Stall | None = None
        self._hurry: tuple[str, ...] = ()  # the last decision's (cleared by every cycle)
        self._polled_at = -math.inf  # when the loop last polled: a tick's cycle, or a hurried server
        self.metrics: Metrics | None = None  # with the HTTP page only: nobody else reads them
        self.web = self._web()
        self.snmp = self._snmp()
        self.last_decision_at = self.started_at
        self._dropped_seen = 0
        self._overruns = Throttle(OVERRUN_LOG_EVERY_S, self.clock)
        self._logged_reason = ""
        self._errors: dict[str, Throttle] = {}
        self._progress_logged: dict[str, float] = {}

    # The status page, its metrics and the SNMP responder are imported only when configured:
    # prometheus_client, http.server and pysnmp's command responder cost ~15 MiB each that a
    # site without them should not carry. Either way they load here, at start-up.

    def _web(self) -> StatusWeb | None:
        h = self.cfg.http
        if not h.address:
            return None
        footprint.let_ssl_in()  # prometheus_client imports ssl
        from firmware.metrics import Metrics
        from firmware.web import StatusWeb
        self.metrics = Metrics(self.view)
        try:
            return StatusWeb(h.address, h.port, self.view, self.metrics, lambda n: self.app.journal.tail(n))
        except OSError as exc:
            raise ArbiterError(f"http.address = {h.address!r}, http.port = {h.port}: cannot listen ({exc})") from exc

    def _snmp(self) -> SnmpResponder | None:
        if not self.cfg.snmp.address:
            return None
        from firmware.snmp import engine_id
        from firmware.snmp_agent import SnmpResponder
        responder = SnmpResponder(self.cfg.snmp, self.cfg.alerts.enterprise_oid, self.view,
                                  engine_id(self.cfg, ".q"))
        responder.start()
        return responder

    def _wake_event_set(self) -> None:
        self.wake.set()

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        self._signals()
        prompt_handover()
        Realtime(self.cfg.site.realtime_priority, "site.realtime_priority").enter()  # the loop's own thread
        self.app.start(self.handle_request)
        if self.web is not None:
            self.web.start()
        self.app.notifier.notify("arbiter-started", text=f"run {self.app.run_id}, phase {self.state.phase.value}")
        if self.app.damaged:
            self._halt("; ".join(self.app.damaged))
        next_tick = self.clock()
        ready = False
        pet_every = min(watchdog_interval() or 1.0, 1.0)
        last_pet = -pet_every
        shown_status = ""
        while not self.stop.is_set():
            if self.reload.is_set():
                self._reload()
            began = self.clock()
            healthy = self._cycle(poll=began >= next_tick)
            if healthy and not ready:
                self.app.sd_notify("READY=1")  # after the first full cycle that worked
                ready = True
            if ready and self._status_line() != shown_status:
                shown_status = self._status_line()
                self.app.sd_notify(f"STATUS={shown_status}")  # what `systemctl status arbiterd` shows
            if healthy and self.clock() - last_pet >= pet_every:
                self.app.sd_notify("WATCHDOG=1")  # only from the loop, only after a healthy cycle
                last_pet = self.clock()
            now = self.clock()
            next_tick, late = next_slot(next_tick, began, now, self.cfg.timing.interval)  # a reload may change it
            if late:
                self._overrun(late)
            # a lease that runs out before the next tick is judged when it does, not up to an interval later
            lease_end = first_lease_end(self.last_obs.servers, self.cfg.timing, self._stall) \
                if self.last_obs else math.inf
            self._wait(min(next_tick, lease_end))
        if self.web is not None:
            self.web.stop()
        if self.snmp is not None:
            self.snmp.close()
        self.app.close()
        log.info("stopped; phase %s, primary %s", self.state.phase.value, self.state.primary)
        return 0

    def _wait(self, until: float) -> None:
        """Until the next cycle is due, or something wakes the loop sooner (a reply with news,
        an order, a signal). Meanwhile the servers the last decision hurries are polled on the LAN
        every timing.interval / HURRY_SHARE after the loop's last poll, at once if that was as
        long ago (a cycle woken by a lease's end polls nobody): a reply that changes their
        report wakes the loop."""
        step = self.cfg.timing.interval / HURRY_SHARE
        while self._hurry and self._polled_at + step < until:
            if self.wake.wait(max(0.0, self._polled_at + step - self.clock())):
                break
            self.app.poller.poll_lan(self._hurry)
            self._polled_at = self.clock()
        else:
            self.wake.wait(max(0.0, until - self.clock()))
        self.wake.clear()

    def _status_line(self) -> str:
        return f"phase {self.state.phase.value}, primary {self.state.primary or 'none'}"

    def _cycle(self, poll: bool = True) -> bool:
        """One poll-observe-decide-act cycle. False if it failed (no watchdog pet).

        ``poll``: this is the tick's cycle. One woken before its tick (an action's result, a
        server's news, an order, a lease's end) polls nobody: its decision reads the replies
        already in, as the tick's does (a poll's reply comes after the decision that sent it),
        and a serial line has room for one poll and its reply an interval
        (config.SERIAL_MAX_SHARE), where a failover wakes the loop five or six times in a
        fraction of a second.

        In safe halted mode nothing is polled, decided or done: the loop only keeps the
        watchdog, the control socket and the alarm alive."""
        self._hurry = ()
        if self.halted:
            return True
        try:
            now = self.clock()
            if poll:
                self.app.poller.poll_all()
                self._polled_at = now
            obs = self._observe(now)
            d = decide(self.state, obs, now, self.cfg)
            if worth_saving(self.state, d.state, d.actions):
                self.app.save_state(with_unsent(d.state, self.app.executor.unsent()))  # before any action runs
            before, self.state = self.state, d.state
            # saved: the acting batch starts now (then the alerts); the log and the journal come
            # after it, since the journal's periodic fsync had come before a failover's fence
            self.app.executor.submit(d.actions)
            target = d.state.op.target if d.state.op else None
            self.orders.answer(d.verdicts, target)  # saved first: an accepted order is kept
            self._hurry = d.hurry
            self.last_obs = obs
            for warning in d.warnings:
                self._throttled(logging.WARNING, "{}{}", warning)
            new_reason = bool(d.reason) and d.reason != self._logged_reason
            if new_reason:
                log.info("%s", d.reason)
                self._logged_reason = d.reason
                self.last_decision_at = now
            self.history.cycle(before, d.state, obs, d.actions, new_reason, now)
            self._progress(now)
            self._frames_rejected()
            self._heartbeat(now)
            self.last_cycle = self.clock()
            if self.metrics is not None:
                self.metrics.cycle_seconds.observe(self.last_cycle - now)
            self._bugs = 0
            return True
        except ArbiterError as exc:
            self._cycle_failed(str(exc))
            return False
        except Exception as exc:  # a bug (decide's included): alarm, and never a crash loop
            self._internal_error(exc)
            return False

    def _internal_error(self, exc: Exception) -> None:
        """Traceback to the log, the alarm relay on and a trap; the caller skips the watchdog
        pet. The saved state that made decide fail makes it fail again after a restart, so a
        second failure in a row halts safely instead of restarting into it."""
        self._bugs += 1
        text = f"{type(exc).__name__}: {exc}"[:200]
        log.error("internal error in the cycle (%d in a row): %s", self._bugs, text, exc_info=exc)
        self.app.notifier.notify("internal-error", text=text)
        if self._bugs >= BUGS_BEFORE_HALT:
            self._halt(f"internal error {self._bugs} cycles in a row ({text})")

    def _halt(self, why: str) -> None:
        """Safe halted mode: decide no more and act on nothing, keep the alarm relay on (a
        trap says why), keep answering status and keep petting the watchdog.

        Chosen over exiting for systemd to retry: a restart meets the same damaged file or the
        same state again, so retrying is a crash loop by another name; a process that exits
        holds no alarm relay and answers no `arbiterctl status`; and a halted appliance that
        polls nobody is seen by the agents as unobserved. An operator looks, mends or moves
        the file named in the alarm, and restarts arbiterd."""
        self.halted = why
        self.state = dataclasses.replace(self.state, phase=Phase.HALTED, reason=(
            f"safe halt: {why}; acting on nothing until arbiterd is restarted"))
        log.critical("%s", self.state.reason)
        self.app.notifier.notify("internal-error", text=f"safe halt: {why}"[:200])

    def _progress(self, now: float) -> None:
        """A line a second for every slow action, so an operator sees a promote still running."""
        for action, elapsed in self.app.executor.running():
            if elapsed >= 1.0 and now - self._progress_logged.get(action.id, 0.0) >= 1.0:
                log.info("still running: %s for %.0f s", action.id, elapsed)
                self._progress_logged[action.id] = now

    def _cycle_failed(self, error: str) -> None:
        self._throttled(logging.ERROR, "cycle failed: {}{}; no watchdog pet for this cycle", error)

    def _throttled(self, level: int, template: str, text: str) -> None:
        """One log line per distinct text per minute, with how many were held back: an SD card
        must survive a long fault (``template`` gets the text and the held-back count)."""
        held = self._errors.setdefault(text, Throttle(OVERRUN_LOG_EVERY_S, self.clock)).ready()
        if held is not None:
            more = f" (and {held} more times since the last report)" if held else ""
            log.log(level, template.format(text, more))

    def _observe(self, now: float) -> Observations:
        records = self.app.poller.snapshot()
        servers = observe_servers(self.cfg, records, now, self.started_at, self.app.power(),
                                  self.app.ups_latest(), self._stalled(now))
        obs = Observations(servers=servers, results=self.app.executor.results(),
                           requests=self.orders.drain(), run=self.app.run_id,
                           vip_audit=self.app.vip_audit, reach=self.app.reach)
        return as_primary_sees(obs, self.state.primary)  # as decide judges it, so status shows the same

    def _heartbeat(self, now: float) -> None:
        """From the loop, so a stuck loop stops them: a manager then knows nobody watches."""
        every = self.cfg.alerts.heartbeat_interval
        if every and now - self._last_heartbeat >= every:
            self._last_heartbeat = now
            self.app.notifier.heartbeat(f"appliance alive; phase {self.state.phase.value}, "
                                        f"primary {self.state.primary or '-'}")

    def _stalled(self, now: float) -> Stall | None:
        """The last stall of this loop, while it still matters: a gap between two cycles
        longer than timing.warn_time means the appliance itself stood still (frozen, starved),
        and the servers' silence over it is no evidence against them."""
        began, self._prev_cycle_at = self._prev_cycle_at, now
        if now - began > self.cfg.timing.warn_time and self.last_cycle is not None:
            self._throttled(logging.WARNING, "{}{}", "the decision loop stood still for longer than timing.warn_time"
                            f" = {self.cfg.timing.warn_time:g} s; heartbeat leases restarted at its end")
            self._stall = Stall(began, now)
        if self._stall is not None and now - self._stall.ended > self.cfg.timing.dead_time:
            self._stall = None
        return self._stall

    def _frames_rejected(self) -> None:
        dropped = self.app.poller.dropped()
        total = sum(dropped.values())
        if total > self._dropped_seen:
            self.app.notifier.notify("frames-rejected", text=", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))
        self._dropped_seen = total

    def _overrun(self, late: float) -> None:
        held = self._overruns.ready()
        if held is not None:
            more = f" (and {held} more overruns since the last report)" if held else ""
            log.warning("cycle overran timing.interval = %g s by %.3f s%s", self.cfg.timing.interval, late, more)

    # ------------------------------------------------------------------ signals, reload

    def _signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._stop())
        signal.signal(signal.SIGINT, lambda *_: self._stop())
        signal.signal(signal.SIGHUP, lambda *_: (self.reload.set(), self.wake.set()))

    def _stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def _reload(self) -> None:
        """Validate first; keep the old config on any error. timing, policy, fence and vip
        apply at once; the sections built into the links, the board, the alert senders and
        the UPS watch (RESTART_SECTIONS) keep their old values until the next restart."""
        self.reload.clear()
        self.app.sd_notify("RELOADING=1")
        try:
            self._apply_new_config()
        finally:
            self.app.sd_notify("READY=1")  # systemd waits for it to end the reload, failed or not

    def _apply_new_config(self) -> None:
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as exc:
            log.error("reload rejected, old config kept: %s", "; ".join(exc.problems))
            self.app.notifier.notify("config-rejected", text="; ".join(exc.problems)[:200])
            return
        later = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(self.cfg, name)]
        if later:
            log.warning("reload: %s changed; that takes effect at the next restart", ", ".join(later))
            new = dataclasses.replace(new, **{name: getattr(self.cfg, name) for name in later})
        self.cfg = new
        self.app.reconfigure(new)
        self.app.notifier.notify("config-reloaded", text="applied: timing, policy, fence, vip" + (
            f"; at the next restart: {', '.join(later)}" if later else ""))
        log.info("config reloaded from %s", self.config_path)

    # ------------------------------------------------------------------ operator requests

    def handle_request(self, data: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """One control request, on the control thread. An order waits for decide's verdict."""
        try:
            cmd = Command.from_wire(data)
        except BadCommand as exc:
            return {"ok": False, "error": str(exc)}
        if cmd.name is Name.STATUS:
            return {"ok": True, **status_report(self.view())}
        if cmd.name is Name.EVENTS:
            return {"ok": True, "events": self.app.journal.tail(cmd.n, kind="alert")}
        if cmd.name is Name.HISTORY:
            return {"ok": True, "history": self.app.journal.tail(cmd.n, since=cmd.since)}
        if cmd.name is Name.WHY:
            state = self.state
            return {"ok": True, "reason": state.reason, "phase": state.phase.value,
                    "decided_s_ago": round(self.clock() - self.last_decision_at, 1),
                    "in_phase_s": round(self.clock() - state.since, 1), "primary": state.primary,
                    "target": state.op.target if state.op else None}
        operator = Operator(peer.uid, peer.pid, cmd.sudo_user, peer_loginuid(peer.pid))
        if cmd.name is Name.ACK:
            self.app.notifier.ack()
            self.app.notifier.notify("alarm-acknowledged", text=f"by {operator.describe()}")
            return self._answered(cmd, operator, Verdict(True, "alarm silenced until something new happens"))
        return self._order(cmd, operator)

    def view(self) -> StatusView:
        """A frozen snapshot for the status report, the page, the metrics and SNMP."""
        notifier = self.app.notifier
        return StatusView(site=self.cfg.site.name, mode=self.cfg.site.mode, state=self.state, obs=self.last_obs,
                          now=self.clock(), started=self.started_at, alarm=notifier.alarm_state(),
                          vip=self.cfg.vip.address, last_cycle=self.last_cycle,
                          frames_dropped=self.app.poller.dropped(),
                          running=tuple((a.id, t) for a, t in self.app.executor.running()),
                          last_failover=self.history.last_failover, alerts_sent=dict(notifier.sent))

    def _order(self, cmd: Command, operator: Operator) -> dict[str, Any]:
        kind = cmd.request_kind()
        assert kind is not None, cmd.name  # every other command is answered above
        if self.halted:
            return self._answered(cmd, operator, Verdict(False, f"refused: {self.state.reason}"))
        if cmd.server is not None and cmd.server not in [s.name for s in self.cfg.servers]:
            return self._answered(cmd, operator, Verdict(False, f"unknown server {cmd.server!r}"))
        rid = self.orders.submit(kind, cmd.server, cmd.force)
        self.wake.set()
        verdict, target = self.orders.wait(rid, VERDICT_WAIT_S)
        if verdict is None:
            log.error("order %s from %s: no decision within %g s", cmd.name.value, operator.describe(),
                      VERDICT_WAIT_S)
            return {"ok": False, "accepted": None,
                    "error": f"no verdict within {VERDICT_WAIT_S:g} s; the decision loop may be stuck"}
        return {**self._answered(cmd, operator, verdict), "target": target}

    def _answered(self, cmd: Command, operator: Operator, verdict: Verdict) -> dict[str, Any]:
        """Logged and journaled with who gave the order, whatever the verdict."""
        word = "accepted" if verdict.accepted else "REFUSED"
        log.info("order %s%s from %s: %s: %s", cmd.name.value, f" {cmd.server}" if cmd.server else "",
                 operator.describe(), word, verdict.reason)
        self.app.journal.append({"kind": "order", "cmd": cmd.name.value, "server": cmd.server, "force": cmd.force,
                                 "on": cmd.on, "operator": operator.to_dict(), "accepted": verdict.accepted,
                                 "reason": verdict.reason})
        answer: dict[str, Any] = {"ok": verdict.accepted, "accepted": verdict.accepted, "reason": verdict.reason}
        if not verdict.accepted:
            answer["error"] = verdict.reason
        return answer

# ---------------------------------------------------------------------- command line


def check_watchdog(cfg: config_mod.Config, unit_timeout: float | None) -> None:
    """systemd's watchdog for arbiterd (WatchdogSec, seen as WATCHDOG_USEC) must be no longer
    than timing.watchdog_timeout, the longest the site accepts a hung loop to go unnoticed."""
    limit = cfg.timing.watchdog_timeout
    if unit_timeout is not None and unit_timeout > limit:
        raise ConfigError([f"timing.watchdog_timeout = {limit:g}: arbiterd runs with WatchdogSec = {unit_timeout:g} s,"
                           " longer; lower WatchdogSec in arbiterd.service or raise the setting (15 at most)"])


def leave_out_unused_ciphers(cfg: config_mod.Config) -> None:
    """A site without SNMPv3 (v3 is authPriv here) never encrypts: pysnmp then finds no
    ``cryptography`` and carries on without privacy, instead of loading 6 MiB of ciphers at
    start-up for nothing. Decided once, in arbiterd's own process, before pysnmp is imported:
    alerts and snmp only change at a restart, so a reload cannot ask for privacy later."""
    if any(m.version == "v3" for m in cfg.alerts.managers) or (cfg.snmp.address and cfg.snmp.user):
        return
    sys.modules.setdefault("cryptography", None)  # type: ignore[arg-type]  # "import cryptography" fails


def check_config(path: Path, as_json: bool) -> int:
    """What the daemon would refuse at start: the schema with its cross-checks (pins, address
    families included), then the key and secret files it reads. 0 ok, 1 bad config."""
    try:
        cfg = config_mod.load(path)
        problems = config_mod.file_problems(cfg)
    except ConfigError as exc:
        problems = exc.problems
    if as_json:
        print(json.dumps({"ok": not problems, "problems": problems}))
    elif problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        print(f"{path}: {len(problems)} problem(s); the daemon will not start with this config", file=sys.stderr)
    else:
        vip = ipaddress.ip_interface(cfg.vip.address)
        print(f"{path}: ok (site {cfg.site.name}, {len(cfg.servers)} servers, virtual IP {vip})")
    return 1 if problems else 0


def derive_key_command(config_path: Path, server: str, peer: str | None) -> int:
    """Print an agent's key, derived from the site master key that stays on the appliance."""
    try:
        cfg = config_mod.load(config_path)
        master = config_mod.read_key(cfg.site.key_file)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"arbiterd: config error: {p}", file=sys.stderr)
        return 1
    names = [s.name for s in cfg.servers]
    for name in (server, peer):
        if name is not None and name not in names:
            print(f"arbiterd: derive-key: {name!r} is not a server in {config_path} (servers: {', '.join(names)})",
                  file=sys.stderr)
            return 2
    if peer == server:
        print("arbiterd: derive-key: a pair key needs two different servers", file=sys.stderr)
        return 2
    print(derive_key(master, server, peer).decode())
    return 0


DERIVE_KEY_HELP = """\
Print the key a server's agent needs, derived from the site master key (site.key_file),
which never leaves the appliance. Each server signs with its own key, so one server can
speak neither for another nor for the appliance.

  arbiterd derive-key SERVER > SERVER.key
      the server's own key: its agent.key_file
  arbiterd derive-key SERVER PEER > SERVER-PEER.key
      the key SERVER and PEER share for the standby's view of the primary: the
      [[peers]] key_file on both of them

Copy each file to its server as root, mode 0600. A new master key means new keys for
every agent. --config (before derive-key) names the site config, default
/etc/arbiter/arbiter.toml."""


EXIT_CODES = "exit status: 0 ok, 1 bad config, 2 usage, 3 cannot start for another reason (board, saved state)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arbiterd",
        description="Billmaster Arbiter appliance daemon: polls the servers over serial and LAN, "
                    "fences a dead primary, promotes the in-sync standby, moves the virtual IP.",
        epilog=EXIT_CODES)
    add_version(parser)
    parser.add_argument("--config", type=Path, default=Path("/etc/arbiter/arbiter.toml"),
                        help="site configuration (TOML); default %(default)s")
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-config", epilog=EXIT_CODES,
                           help="validate a config as the daemon would at start (schema, pins, key and "
                                "secret files) and exit 1 naming every bad key")
    check.add_argument("file", type=Path, help="the config file to check")
    check.add_argument("--json", action="store_true", help="machine-readable result")
    derive = sub.add_parser("derive-key", help="print the key of a server's agent (or of two servers' pair)",
                            description=DERIVE_KEY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    derive.add_argument("server", help="the server's name, as in [[servers]]")
    derive.add_argument("peer", nargs="?", help="a second server: print the key the two share")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file, args.json)
    if args.command == "derive-key":
        return derive_key_command(args.config, args.server, args.peer)
    logs.setup()
    try:
        leave_out_unused_ciphers(config_mod.load(args.config))
        daemon = Daemon(args.config)
        logging.getLogger().setLevel(daemon.cfg.site.log_level.upper())
    except ConfigError as exc:
        for p in exc.problems:
            print(f"arbiterd: config error: {p}", file=sys.stderr)
        print("arbiterd: not started (fix the settings above; `arbiterd check-config FILE` checks a file)",
              file=sys.stderr)
        return 1
    except ArbiterError as exc:
        print(f"arbiterd: cannot start: {exc}", file=sys.stderr)
        return 3
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
