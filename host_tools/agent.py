"""arbiter-agent: runs on every billing server. Answers the appliance's polls on the COM port
and on UDP, reports role, health, replication state, whether it still hears the primary and
whether it reaches the clients' side (ping targets), and carries out the appliance's
commands once per command id.

Polls are answered from cached state only: replication state, health and reachability are
read by background threads, and commands run on worker threads, so a slow promote never delays a
heartbeat. A replication state that cannot be read, whatever the reason, or that is older than
STALE_INTERVALS status intervals (and STALE_MIN_S), is reported as unknown, never as the
last good one.

Commands are obeyed only when addressed to this server, signed with its own key, and sent in
the appliance run seen in a poll within COMMAND_POLL_FRESH_S (protocol.py says why).
"""
from __future__ import annotations

import argparse
import json
import logging
import secrets
import shlex
import subprocess
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from collections.abc import Callable
from typing import Any

from firmware import add_version, logs
from firmware.config import Fencing, read_key
from firmware.events import Severity, event_type
from firmware.notify import Alert, HookSink
from firmware.config import load as load_site
from firmware.errors import ActionError, ArbiterError, ConfigError, ProtocolError, StateError
from firmware.links import RateLimit, ReadBudget, SerialPort
from firmware.protocol import (COMMAND_OPS, COMMAND_POLL_FRESH_S, MAX_FRAME, Ack, Codec, Command, Frame, Kind,
                               Reply, poll_nonce)
from firmware.reach import reaches_any
from firmware.realtime import Realtime, Workers, prompt_handover
from firmware.state import SlotStore
from firmware.subproc import run_checked
from host_tools.agent_config import AgentConfig, load, self_fence_margin, site_problems
from host_tools.replication import Adapter, Health, ReplicationStatus, make_adapter

log = logging.getLogger("arbiter.agent")

KEEP_COMMANDS = 256
_ADAPTER_OPS = ("promote", "demote", "rejoin", "rebuild", "sync_degrade", "sync_restore")
STALE_INTERVALS = 5  # a replication state older than this many agent.status_interval is unknown
STALE_MIN_S = 1.0  # ... and older than this (a status command may take a while to start)
SOURCE_RATE = 500.0  # UDP frames a second one source may send; the rest is dropped before any MAC
WARN_EVERY_S = 60.0
REFUSED_LOG_EVERY_S = 5.0
LISTENING = "answering on udp"  # logged once every link is open: the rig waits for it after a restart
# The role a successful op proves, by every adapter's contract (its promote and demote return
# once the change is done). The other ops prove nothing a report could say (a sync change
# moves the primary's list of synchronous standbys), so their status is read before the ack.
ROLE_AFTER = {"promote": "primary", "demote": "standby"}

Send = Callable[[bytes], None]


def status_after(op: str) -> ReplicationStatus | None:
    """What the agent reports right after acknowledging a successful ``op`` without reading the
    server again: the role the op proved, everything else unknown until the full read, started
    at once in the background, comes back. Reading first held a promote's ack 4 to 12 ms on
    the rig's PostgreSQL, in the failover's way. None: read before acknowledging."""
    role = ROLE_AFTER.get(op)
    return None if role is None else ReplicationStatus(role, detail=f"{op} done; replication state being read")


class Watched:
    """Whether the appliance still watches this server: ``agent-unobserved`` once no valid poll
    from it has arrived for ``after`` seconds, ``agent-observed`` once polls come back."""

    def __init__(self, after: float, now: float) -> None:
        self.after = after
        # Start-up counts as a poll: the appliance gets ``after`` to find us, and if it does not
        # (it is dead, or came up later than that) the alert is true, not a boot artefact.
        self.polled = now
        self.raised = False

    def check(self, now: float) -> str | None:
        silent = now - self.polled >= self.after
        if silent != self.raised:
            self.raised = silent
            return "agent-unobserved" if silent else "agent-observed"
        return None


class Agent:
    def __init__(self, cfg: AgentConfig, adapter: Adapter | None = None) -> None:
        self.cfg = cfg
        a = cfg.agent
        self._store = SlotStore(Path(a.state_file))
        saved = self._load_state()
        last = saved.get("boot")
        self.boot_id = max((last if isinstance(last, int) else 0) + 1, time.time_ns() // 1000)
        keys = {a.arbiter: read_key(a.key_file, "agent.key_file")}
        keys.update((p.name, read_key(p.key_file, f"peers[{i}].key_file")) for i, p in enumerate(cfg.peers))
        self.codec = Codec(a.name, keys, self.boot_id)
        self.codec_lock = threading.Lock()
        self.adapter = adapter if adapter is not None else (
            make_adapter(cfg.replication) if cfg.replication else None)
        self.reach: bool | None = None  # None: no ping targets configured, or not probed yet
        self.stale_after = max(STALE_INTERVALS * a.status_interval, STALE_MIN_S)
        self._appliance_poll: tuple[int, float] | None = None  # (its run, when) of its latest poll
        self._peer_by_addr = {(p.address, p.port): p.name for p in cfg.peers}
        self._limit = RateLimit(SOURCE_RATE, burst=SOURCE_RATE / 4)
        self._budget = ReadBudget(SOURCE_RATE * (1 + len(cfg.peers)))  # the appliance and every peer at the limit
        self._warned: dict[str, float] = {}
        self._refused: dict[str, int] = {}
        self._refused_at = -REFUSED_LOG_EVERY_S
        # read once before any link opens: the first poll is answered with what is true, not a
        # placeholder that would make a healthy standby look ineligible for a moment
        self.status = self._read_status()
        self.status_at: float | None = time.monotonic()  # when the status was read
        self._status_gen = 0  # counts commands' outcomes: a read begun before one is older than it
        self._status_due = threading.Event()  # read now, not at the next agent.status_interval
        self.failing_since: float | None = None  # start of the first check of the current failing spell
        self.health = self._check_and_time()
        self.commands: OrderedDict[str, dict[str, Any]] = OrderedDict(
            (k, v) for k, v in saved.get("commands", {}).items() if isinstance(v, dict) and v.get("done"))
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.realtime = Realtime(a.realtime_priority, "agent.realtime_priority")
        self._workers = Workers(self.realtime, "command")  # commands run there, one started at once
        self.vip = self._vip_manager() if cfg.vip.address else None
        self._peer_polls: dict[int, float] = {}
        self._peer_lock = threading.Lock()  # the peer thread adds polls, the receivers take them
        self._primary_heard: float | None = None
        self._heard = time.monotonic()  # last valid frame from the appliance or a peer; the isolation clock
        self.self_fenced = ""  # why this server stopped its own database, once it has
        self.progress = ""  # the last progress line of a long command (a rebuild)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((a.listen, a.port))
        self.sock.settimeout(0.2)
        self._last_link: dict[str, Any] = {}
        self.watched = Watched(a.unobserved_after, time.monotonic())
        self.alert_hook = HookSink(shlex.split(a.alert_hook), env={"ARBITER_ENTERPRISE": a.enterprise_oid}) \
            if a.alert_hook else None
        # its reader starts in run(): a frame read before self.serial was set had no way back
        self.serial = SerialPort(a.serial, a.baudrate, self._from_serial, lambda reason: None,
                                 self.realtime) if a.serial else None
        self._save_lock = threading.Lock()  # one writer of agent.state_file at a time, the newest last
        self._save_state()  # the boot id is spent: the next start must use a higher one

    # ------------------------------------------------------------------ lifetime

    def run(self) -> None:
        prompt_handover()
        threads = [self._udp_loop, self._status_loop, self._health_loop]
        if self.cfg.peers:
            threads.append(self._peer_loop)
        if self.cfg.ping.targets:
            threads.append(self._ping_loop)
        if self.cfg.agent.isolation_timeout:
            threads.append(self._isolation_loop)
        if self.cfg.agent.unobserved_after:
            threads.append(self._watched_loop)
        for target in threads:
            self._start(target)
        if self.serial is not None:
            self.serial.start()
        log.info("%s: %s %s:%d%s", self.cfg.agent.name, LISTENING, self.cfg.agent.listen, self.cfg.agent.port,
                 f" and {self.cfg.agent.serial}" if self.serial else "")
        self.stop.wait()
        self.close()

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        """Every thread of the agent real-time (agent.realtime_priority), not only those that
        answer: they share one interpreter lock, and a normal thread holding it while a busy
        server runs something else would hold up the answer too. What they start runs at
        normal priority (firmware.realtime)."""
        def run() -> None:
            self.realtime.enter()
            target(*args)
        threading.Thread(target=run, name=target.__name__, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self._status_due.set()
        if self.serial is not None:
            self.serial.close()
        self.sock.close()
        if self.vip is not None:
            self.vip.close()
        if self.alert_hook is not None:
            self.alert_hook.close()

    # ------------------------------------------------------------------ background readers

    def _status_loop(self) -> None:
        """A read every agent.status_interval, and one at once after a command. A read that
        began before a command's outcome was set is dropped: it may say what the command has
        just changed (a standby read in the middle of its promotion)."""
        while not self.stop.is_set():
            self._status_due.wait(self.cfg.agent.status_interval)
            self._status_due.clear()
            if self.stop.is_set():
                return
            with self.lock:
                began = self._status_gen
            status = self._read_status()
            with self.lock:
                if began == self._status_gen:
                    self.status, self.status_at = status, time.monotonic()
            self._log_refusals()

    def _set_status(self, status: ReplicationStatus) -> None:
        """A command's outcome: reported from now on, and the full read follows at once."""
        with self.lock:
            self.status, self.status_at = status, time.monotonic()
            self._status_gen += 1
        self._status_due.set()

    def _read_status(self) -> ReplicationStatus:
        if self.adapter is None:
            return ReplicationStatus("unknown", detail="no [replication] adapter")
        try:
            return self.adapter.status()
        except Exception as exc:  # whatever broke (a bug included), the truth is unknown now
            self._warn("status", f"replication status failed, reported as unknown: {exc!r}"[:300])
            return ReplicationStatus("unknown", detail=f"status failed: {exc!r}"[:200])

    def _log_refusals(self) -> None:
        """Refused frames as running counts by reason, at most every REFUSED_LOG_EVERY_S: an
        attack on this server shows in its journal without filling it."""
        now = time.monotonic()
        if now - self._refused_at < REFUSED_LOG_EVERY_S:
            return
        with self.codec_lock:
            counts = dict(self.codec.dropped)
        if counts != self._refused:
            self._refused, self._refused_at = counts, now
            log.warning("frames refused since start: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    def _watched_loop(self) -> None:
        step = min(0.1, self.cfg.agent.unobserved_after / 10)
        while not self.stop.wait(step):
            event = self.watched.check(time.monotonic())
            if event is not None:
                self.alert(event)

    def alert(self, event: str) -> None:
        """The agent's own alert: the log, and the alert hook (a trap to the manager) if set."""
        etype = event_type(event)
        text = f"{self.cfg.agent.name}: {etype.text}" + (
            f" (agent.unobserved_after = {self.cfg.agent.unobserved_after:g} s)" if event == "agent-unobserved" else "")
        log.log(logging.ERROR if etype.severity >= Severity.MAJOR else logging.INFO, "%s", text)
        if self.alert_hook is not None:
            try:
                self.alert_hook.send(Alert(0, event, etype.severity, self.cfg.agent.name, "", text, time.time()))
            except RuntimeError as exc:
                log.error("alert hook: %s", exc)

    def _health_loop(self) -> None:
        while not self.stop.wait(self.cfg.agent.health_interval):
            health = self._check_and_time()
            if health.ok != self.health.ok:
                log.warning("service health check %s", "passes again" if health.ok else f"FAILS: {health.detail}")
            self.health = health

    def _check_and_time(self) -> Health:
        """A check, and since when the service has failed: from the START of the first failing
        check, since a check that timed out found the service not answering from its start."""
        started = time.monotonic()
        try:
            health = self.check_health()
        except Exception as exc:  # a check that broke, whatever raised, proves nothing: not healthy
            health = Health(False, f"health check failed: {exc!r}"[:200])
        self.failing_since = None if health.ok else (self.failing_since or started)
        return health

    def unhealthy_s(self) -> float | None:
        since = self.failing_since
        return None if since is None else round(time.monotonic() - since, 3)

    def check_health(self) -> Health:
        """The adapter's own check (PostgreSQL: a new connection and a query) and the site's
        agent.health_command, each within agent.health_timeout; healthy when every one passes."""
        timeout = self.cfg.agent.health_timeout
        checks = [self.adapter.health(timeout)] if self.adapter is not None else []
        if self.cfg.agent.health_command:
            checks.append(self._health_command(timeout))
        failed = [c.detail for c in checks if c is not None and not c.ok]
        return Health(not failed, "; ".join(failed)[:200])

    def _health_command(self, timeout: float) -> Health:
        try:
            run_checked(shlex.split(self.cfg.agent.health_command), "agent.health_command", timeout,
                        bound="agent.health_timeout")
        except ActionError as exc:
            return Health(False, str(exc)[:200])
        return Health(True)

    def _ping_loop(self) -> None:
        """One probe round per ping.interval; the reply carries the last round's answer."""
        p = self.cfg.ping
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                reach: bool | None = reaches_any(p.targets, p.timeout)
            except OSError as exc:  # cannot probe at all (no permission): unknown, never "unreachable"
                log.error("ping.targets: cannot send ICMP echo (%s); reachability unknown", exc)
                reach = None
            if reach != self.reach and reach is not None:
                log.warning("ping targets %s", "reached again" if reach else f"NOT reached: {', '.join(p.targets)}")
            self.reach = reach
            self.stop.wait(max(0.0, p.interval - (time.monotonic() - started)))

    def _warn(self, what: str, text: str) -> None:
        """A warning at most once a minute per kind: a failing check must not fill the disk."""
        now = time.monotonic()
        if now - self._warned.get(what, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[what] = now
            log.warning("%s", text)

    def _peer_loop(self) -> None:
        """Poll the other servers' agents: the standby's own view of the primary."""
        while not self.stop.is_set():
            now = time.monotonic()
            for peer in self.cfg.peers:
                nonce = secrets.randbits(64)
                with self.codec_lock:
                    _, raw = self.codec.make(Kind.POLL, peer.name, {"n": nonce})
                with self._peer_lock:
                    self._peer_polls[nonce] = now
                try:
                    self.sock.sendto(raw, (peer.address, peer.port))
                except OSError:
                    pass
            with self._peer_lock:
                for old in [s for s, t in self._peer_polls.items() if now - t > 2.0]:
                    del self._peer_polls[old]
            self.stop.wait(self.cfg.agent.peer_interval)

    def _isolation_loop(self) -> None:
        """Self-fencing (Data Guard's FastStartFailoverPmyShutdown, sbd): a primary that hears
        neither the appliance nor any peer may already have been replaced; it stops taking
        writes before the appliance may promote another (timing.self_fence_wait)."""
        a = self.cfg.agent
        while not self.stop.wait(a.peer_interval):
            silent = time.monotonic() - self._heard
            with self.lock:
                role = self.status.role
            if silent > a.isolation_timeout and role == "primary" and not self.self_fenced:
                self.fence_self(f"no frame from the appliance on any channel nor from any peer for {silent:.2f} s"
                                f" (agent.isolation_timeout = {a.isolation_timeout:g} s)")

    def fence_self(self, why: str) -> None:
        """Stop the database, then give up the virtual IP; each step logged with its time."""
        started = time.monotonic()
        self.self_fenced = why
        log.critical("SELF-FENCING: %s; stopping the database", why)
        if self.adapter is not None:
            try:
                log.critical("self-fencing: %s", self.adapter.self_fence(self.cfg.agent.self_fence_timeout))
            except (ArbiterError, OSError, subprocess.SubprocessError) as exc:  # the virtual IP goes all the same
                log.critical("self-fencing: the database did not stop: %s", exc)
        if self.vip is not None:
            self.vip.release()
        log.critical("self-fenced in %.3f s; the database stays stopped until an operator starts it",
                     time.monotonic() - started)

    def hears_primary(self) -> bool | None:
        if not self.cfg.peers:
            return None
        heard = self._primary_heard
        return heard is not None and time.monotonic() - heard < self.cfg.agent.peer_dead_time

    # ------------------------------------------------------------------ receiving

    def _udp_loop(self) -> None:
        while not self.stop.is_set():
            try:
                raw, addr = self.sock.recvfrom(MAX_FRAME + 1)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self._budget.spend()
            if not self._limit.allow(addr[0]):
                self._drop("rate-limited")
                continue
            expect = self._peer_by_addr.get((addr[0], addr[1]), self.cfg.agent.arbiter)
            self._handle(raw, expect, lambda out, a=addr: self._send_udp(out, a))

    def _send_udp(self, raw: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(raw, addr)
        except OSError:
            pass

    def _from_serial(self, raw: bytes) -> None:
        self._handle(raw, self.cfg.agent.arbiter, self._send_serial)

    def _send_serial(self, raw: bytes) -> None:
        if self.serial is not None:
            self.serial.write(raw)

    def _handle(self, raw: bytes, expect: str, reply: Send) -> None:
        try:
            self._dispatch(raw, expect, reply)
        except Exception:  # an authenticated but malformed frame must not end a receiver thread
            log.exception("frame handling failed; frame dropped")

    def _dispatch(self, raw: bytes, expect: str, reply: Send) -> None:
        """``expect``: the sender the link belongs to (the appliance on the COM port, a peer
        from its own address); the codec refuses anyone else before the MAC."""
        with self.codec_lock:
            frame = self.codec.read(raw, expect)
            error = self.codec.last_error if frame is None else None
        if frame is None:
            if error is not None and error.reason == "bad-version":
                self._warn("version", f"{expect}: {error.detail}")
            return
        self._heard = time.monotonic()
        try:
            if frame.kind is Kind.POLL:
                nonce = poll_nonce(frame.payload)
                if frame.sender == self.cfg.agent.arbiter:
                    self._appliance_poll = (frame.boot_id, time.monotonic())
                    self.watched.polled = self._appliance_poll[1]
                reply(self._make(Kind.REPLY, frame.sender, self._report(nonce).payload()))
            elif frame.kind is Kind.REPLY:
                self._peer_reply(Reply.parse(frame.payload))
            elif frame.kind is Kind.COMMAND and frame.sender == self.cfg.agent.arbiter:
                self._command(frame, reply)
            else:
                self._drop("unexpected-kind")
        except ProtocolError as exc:
            self._drop(exc.reason)

    def _drop(self, reason: str) -> None:
        with self.codec_lock:
            self.codec.count_drop(reason)

    def _make(self, kind: Kind, to: str, payload: dict[str, Any]) -> bytes:
        with self.codec_lock:
            return self.codec.make(kind, to, payload)[1]

    def _report(self, nonce: int) -> Reply:
        with self.lock:
            st, at = self.status, self.status_at
        if self.adapter is not None and at is not None and time.monotonic() - at > self.stale_after:
            st = ReplicationStatus("unknown", detail=f"replication status {time.monotonic() - at:.1f} s old"
                                                     f" (read every agent.status_interval = "
                                                     f"{self.cfg.agent.status_interval:g} s)")
        health = self.health
        detail = st.detail if health.ok else f"unhealthy: {health.detail}; {st.detail}"
        return Reply(re=nonce, role=st.role, healthy=health.ok, vip=bool(self.vip is not None and self.vip.held()),
                     in_sync=st.in_sync, lag_bytes=st.lag_bytes, lag_s=st.lag_s, peer_alive=st.peer_alive,
                     sync_standbys=st.sync_standbys,
                     hears_primary=self.hears_primary(), reach=self.reach, unhealthy_s=self.unhealthy_s(),
                     detail=f"self-fenced: {self.self_fenced}" if self.self_fenced else self.progress or detail)

    def _peer_reply(self, reply: Reply) -> None:
        with self._peer_lock:
            sent = self._peer_polls.pop(reply.re, None)
        if sent is not None and reply.role == "primary":
            self._primary_heard = time.monotonic()

    # ------------------------------------------------------------------ commands

    def _fresh_run(self, frame: Frame) -> bool:
        """The command comes from the appliance run this agent saw poll it just now."""
        seen = self._appliance_poll
        return (seen is not None and seen[0] == frame.boot_id
                and time.monotonic() - seen[1] <= COMMAND_POLL_FRESH_S)

    def _command(self, frame: Frame, reply: Send) -> None:
        if not self._fresh_run(frame):
            self._drop("stale-run")
            return
        cmd = Command.parse(frame.payload)
        with self.lock:
            self._last_link[cmd.id] = reply
            entry = self.commands.get(cmd.id)
            if entry is None:
                if cmd.op not in COMMAND_OPS:
                    entry = {"done": True, "ok": False, "detail": f"unknown op {cmd.op!r}"}
                else:
                    entry = {"done": False, "ok": False, "detail": "running"}
                    self._workers.run(lambda: self._execute(cmd.id, cmd.op, cmd.args))
                self.commands[cmd.id] = entry
                while len(self.commands) > KEEP_COMMANDS:
                    self.commands.popitem(last=False)
            ack = Ack(cmd.id, entry["done"], entry["ok"], entry["detail"])
        reply(self._make(Kind.ACK, frame.sender, ack.payload()))

    def _execute(self, cmd_id: str, op: str, args: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            detail = self.carry_out(op, args, cmd_id)
            ok = True
        except ArbiterError as exc:
            ok, detail = False, str(exc)
        except Exception as exc:  # the agent must answer, whatever the op did
            ok, detail = False, f"internal error: {exc!r}"
            log.exception("%s crashed", op)
        log.info("command %s %s: %s in %.3f s%s", cmd_id, op, "ok" if ok else "FAILED",
                 time.monotonic() - started, f" ({detail})" if detail else "")
        with self.lock:
            self.commands[cmd_id] = {"done": True, "ok": ok, "detail": detail}
            reply = self._last_link.pop(cmd_id, None)
        self._save_state()  # before the acknowledgement: one acknowledged never runs again, restart or not
        if reply is not None:
            reply(self._make(Kind.ACK, self.cfg.agent.arbiter, Ack(cmd_id, True, ok, detail).payload()))

    def carry_out(self, op: str, args: dict[str, Any], cmd_id: str) -> str:
        hook = getattr(self.cfg.hooks, op)
        if op in ("take_ip", "release_ip") and self.cfg.vip.address:
            return self._vip(op)
        if op in _ADAPTER_OPS and self.adapter is not None and not hook:
            try:
                detail = self._adapter_op(op, args)
            except Exception:
                self._status_due.set()  # a failed op may have changed something: read it now
                raise
            status = status_after(op) or self._read_status()
            self._set_status(status)
            return f"{detail or op + ' done'}; role now {status.role}"
        if not hook:
            raise ActionError(f"no way to {op}: set hooks.{op}" + (" or [replication]" if op in _ADAPTER_OPS else ""))
        env = {"ARBITER_OP": op, "ARBITER_COMMAND_ID": cmd_id, "ARBITER_ARGS": json.dumps(args)}
        return run_checked(shlex.split(hook), f"hooks.{op}", self.cfg.agent.command_timeout, env,
                           bound="agent.command_timeout").strip()[:200]

    def _adapter_op(self, op: str, args: dict[str, Any]) -> str | None:
        assert self.adapter is not None
        if op == "rejoin":
            self.adapter.rejoin(str(args.get("primary", "")))
        elif op == "rebuild":
            try:
                return self.adapter.rebuild(str(args.get("primary", "")), self._progress)
            finally:
                self.progress = ""
        elif op == "sync_restore":
            return self.adapter.sync_restore([str(s) for s in args.get("standbys", [])])
        elif op == "sync_degrade":
            return self.adapter.sync_degrade([str(s) for s in args.get("lost", [])])
        else:
            getattr(self.adapter, op)()
        return None

    def _progress(self, line: str) -> None:
        """A long command's progress: in the log, and in the replies' detail until it ends."""
        log.info("%s", line)
        self.progress = line

    def _vip_manager(self):
        """Built at start-up, with everything a takeover needs loaded."""
        from host_tools.vip import VipManager
        v = self.cfg.vip
        return VipManager(v.address, v.interface, v.garp_count, v.garp_interval, v.refresh_s,
                          enter=self.realtime.enter)

    def _vip(self, op: str) -> str:
        assert self.vip is not None
        if op == "take_ip":
            self.vip.take()
            return f"{self.cfg.vip.address} held on {self.cfg.vip.interface}"
        self.vip.release()
        return f"{self.cfg.vip.address} released"

    def _load_state(self) -> dict[str, Any]:
        """The last boot id and the executed command ids: a command replayed after a restart
        is answered from here, never run again."""
        try:
            return self._store.load() or {}
        except StateError as exc:
            log.warning("%s (agent.state_file); forgetting earlier command ids", exc)
            return {}

    def _save_state(self) -> None:
        """The boot id and the finished commands, before a command's acknowledgement (one
        acknowledged never runs again, restart or not), and outside self.lock, which every
        poll's reply takes. In two slots written in turn (firmware.state.SlotStore), one
        fdatasync: write_atomic's two journal commits took 2.5-3 ms median on the loaded
        rig's disk, twice on a failover's way (promote, then the virtual IP)."""
        with self._save_lock:
            with self.lock:
                done = {k: v for k, v in self.commands.items() if v.get("done")}
            self._store.save({"boot": self.boot_id, "commands": done})


EXIT_CODES = "exit status: 0 ok, 1 bad config, 2 usage, 3 cannot start for another reason (socket, serial port)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arbiter-agent",
        description="Billmaster Arbiter server agent: answers the appliance's heartbeat polls on the COM "
                    "port and the LAN, reports role, health and replication, and carries out promote, "
                    "demote, take-IP, release-IP, backup and shutdown commands.",
        epilog=EXIT_CODES)
    add_version(parser)
    parser.add_argument("--config", type=Path, default=Path("/etc/arbiter/agent.toml"),
                        help="agent configuration (TOML); default %(default)s")
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-config", epilog=EXIT_CODES,
                           help="validate an agent config as the agent would at start (schema, key file, "
                                "replication adapter and its keys) and exit 1 naming every bad key")
    check.add_argument("file", type=Path, help="the agent config file to check")
    check.add_argument("--site", type=Path, help="the appliance's config: cross-check self-fencing against"
                                                 " its policy.fencing and timing.self_fence_wait")
    return parser


def check_config(path: Path, site_path: Path | None = None) -> int:
    """What the agent would refuse at start, without binding a socket or opening a database;
    with the appliance's config, the self-fencing cross-check too. 0 ok, 1 bad config."""
    try:
        cfg = load(path)
        read_key(cfg.agent.key_file, "agent.key_file")
        for i, peer in enumerate(cfg.peers):
            read_key(peer.key_file, f"peers[{i}].key_file")
        if cfg.replication:
            make_adapter(cfg.replication)  # builds only: no connection, no command run
        site = load_site(site_path) if site_path is not None else None
        problems = site_problems(cfg.agent, site, str(site_path)) if site is not None else []
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"error: {p}", file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); the agent will not start with this config", file=sys.stderr)
        return 1
    if site is not None and site.policy.fencing is Fencing.NONE:
        print(f"{path}: self-fencing done {self_fence_margin(cfg.agent, site):.2f} s before the appliance may promote")
    adapter = cfg.replication.get("adapter", "none: the role is reported as unknown")
    print(f"{path}: ok (server {cfg.agent.name}, replication {adapter})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file, args.site)
    logs.setup()
    try:
        agent = Agent(load(args.config))
    except ConfigError as exc:
        for p in exc.problems:
            print(f"arbiter-agent: config error: {p}", file=sys.stderr)
        return 1
    except (ArbiterError, OSError) as exc:
        print(f"arbiter-agent: cannot start: {exc}", file=sys.stderr)
        return 3
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop.set())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
