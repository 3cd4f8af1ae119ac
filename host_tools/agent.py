"""arbiter-agent: runs on every billing server. Answers the appliance's polls on the COM port
and on UDP, reports role, health, replication state, whether it still hears the primary and
whether it reaches the clients' side (ping targets), and carries out the appliance's
commands once per command id.

Polls are answered from cached state only: replication state, health and reachability are
read by background threads, and commands run on worker threads, so a slow promote never delays a
heartbeat.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from firmware import logs
from firmware.config import Fencing, read_key
from firmware.config import load as load_site
from firmware.errors import ActionError, ArbiterError, ConfigError
from firmware.links import SerialPort
from firmware.protocol import COMMAND_OPS, MAX_FRAME, Codec, Frame, Kind
from firmware.reach import reaches_any
from host_tools.agent_config import AgentConfig, load, self_fence_margin, site_problems
from host_tools.replication import Adapter, Health, ReplicationStatus, make_adapter

log = logging.getLogger("arbiter.agent")

KEEP_COMMANDS = 256
_ADAPTER_OPS = ("promote", "demote", "rejoin", "rebuild", "sync_degrade", "sync_restore")


class Agent:
    def __init__(self, cfg: AgentConfig, adapter: Adapter | None = None) -> None:
        self.cfg = cfg
        a = cfg.agent
        saved = self._load_state()
        last = saved.get("boot")
        self.boot_id = max((last if isinstance(last, int) else 0) + 1, time.time_ns() // 1000)
        self.codec = Codec(a.name, read_key(a.key_file), self.boot_id)
        self.codec_lock = threading.Lock()
        self.adapter = adapter if adapter is not None else (
            make_adapter(cfg.replication) if cfg.replication else None)
        self.status = ReplicationStatus("unknown", detail="not read yet")
        self.health = Health(False, "not checked yet")
        self.reach: bool | None = None  # None: no ping targets configured, or not probed yet
        self.commands: OrderedDict[str, dict[str, Any]] = OrderedDict(
            (k, v) for k, v in saved.get("commands", {}).items() if isinstance(v, dict) and v.get("done"))
        self.lock = threading.Lock()
        self.stop = threading.Event()
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
        self.serial = SerialPort(a.serial, a.baudrate, self._from_serial, lambda reason: None) if a.serial else None
        self._last_link: dict[str, Any] = {}
        with self.lock:
            self._save_state()  # the boot id is spent: the next start must use a higher one

    # ------------------------------------------------------------------ lifetime

    def run(self) -> None:
        self.health = self.check_health()  # answered from the first poll on, never guessed
        threads = [self._udp_loop, self._status_loop, self._health_loop]
        if self.cfg.peers:
            threads.append(self._peer_loop)
        if self.cfg.ping.targets:
            threads.append(self._ping_loop)
        if self.cfg.agent.isolation_timeout:
            threads.append(self._isolation_loop)
        for target in threads:
            threading.Thread(target=target, name=target.__name__, daemon=True).start()
        log.info("%s: answering on udp %s:%d%s", self.cfg.agent.name, self.cfg.agent.listen, self.cfg.agent.port,
                 f" and {self.cfg.agent.serial}" if self.serial else "")
        self.stop.wait()
        self.close()

    def close(self) -> None:
        self.stop.set()
        if self.serial is not None:
            self.serial.close()
        self.sock.close()
        if self.vip is not None:
            self.vip.close()

    # ------------------------------------------------------------------ background readers

    def _status_loop(self) -> None:
        while not self.stop.is_set():
            if self.adapter is not None:
                try:
                    status = self.adapter.status()
                except ArbiterError as exc:
                    status = ReplicationStatus("unknown", detail=str(exc)[:200])
                with self.lock:
                    self.status = status
            self.stop.wait(self.cfg.agent.status_interval)

    def _health_loop(self) -> None:
        while not self.stop.wait(self.cfg.agent.health_interval):
            health = self.check_health()
            if health.ok != self.health.ok:
                log.warning("service health check %s", "passes again" if health.ok else f"FAILS: {health.detail}")
            self.health = health

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
        cmd = self.cfg.agent.health_command
        try:
            done = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Health(False, f"agent.health_command did not finish within agent.health_timeout = {timeout:g} s")
        except OSError as exc:
            return Health(False, f"agent.health_command: cannot run ({exc})")
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            return Health(False, f"agent.health_command exit {done.returncode}" + (f": {why[0]}" if why else ""))
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

    def _peer_loop(self) -> None:
        """Poll the other servers' agents: the standby's own view of the primary."""
        while not self.stop.is_set():
            now = time.monotonic()
            for peer in self.cfg.peers:
                with self.codec_lock:
                    seq, raw = self.codec.make(Kind.POLL)
                with self._peer_lock:
                    self._peer_polls[seq] = now
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
            except (ArbiterError, OSError, subprocess.TimeoutExpired) as exc:
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
            self._handle(raw, lambda out, a=addr: self._send_udp(out, a))

    def _send_udp(self, raw: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(raw, addr)
        except OSError:
            pass

    def _from_serial(self, raw: bytes) -> None:
        self._handle(raw, self._send_serial)

    def _send_serial(self, raw: bytes) -> None:
        if self.serial is not None:
            self.serial.write(raw)

    def _handle(self, raw: bytes, reply: Any) -> None:
        try:
            self._dispatch(raw, reply)
        except Exception:  # an authenticated but malformed frame must not end a receiver thread
            log.exception("frame handling failed; frame dropped")

    def _dispatch(self, raw: bytes, reply: Any) -> None:
        with self.codec_lock:
            frame = self.codec.read(raw)
        if frame is None:
            return
        self._heard = time.monotonic()
        if frame.kind is Kind.POLL:
            reply(self._make(Kind.REPLY, self._report(frame.seq)))
        elif frame.kind is Kind.REPLY:
            self._peer_reply(frame)
        elif frame.kind is Kind.COMMAND and frame.sender == self.cfg.agent.arbiter:
            self._command(frame, reply)

    def _make(self, kind: Kind, payload: dict[str, Any]) -> bytes:
        with self.codec_lock:
            return self.codec.make(kind, payload)[1]

    def _report(self, poll_seq: int) -> dict[str, Any]:
        with self.lock:
            st = self.status
        health = self.health
        detail = st.detail if health.ok else f"unhealthy: {health.detail}; {st.detail}"
        return {"re": poll_seq, "role": st.role, "healthy": health.ok, "reach": self.reach,
                "vip": bool(self.vip is not None and self.vip.held()),
                "repl": {"in_sync": st.in_sync, "lag_bytes": st.lag_bytes, "lag_s": st.lag_s,
                         "peer_alive": st.peer_alive},
                "hears_primary": self.hears_primary(),
                "detail": (f"self-fenced: {self.self_fenced}" if self.self_fenced else self.progress or detail)[:200]}

    def _peer_reply(self, frame: Frame) -> None:
        re = frame.payload.get("re")
        with self._peer_lock:
            sent = self._peer_polls.pop(re, None) if isinstance(re, int) else None
        if sent is not None and frame.payload.get("role") == "primary":
            self._primary_heard = time.monotonic()

    # ------------------------------------------------------------------ commands

    def _command(self, frame: Frame, reply: Any) -> None:
        cmd_id, op = str(frame.payload.get("id", "")), frame.payload.get("op")
        args = frame.payload.get("args") or {}
        with self.lock:
            self._last_link[cmd_id] = reply
            entry = self.commands.get(cmd_id)
            if entry is None:
                if op not in COMMAND_OPS or not cmd_id:
                    entry = {"done": True, "ok": False, "detail": f"unknown op {op!r}"}
                else:
                    entry = {"done": False, "ok": False, "detail": "running"}
                    threading.Thread(target=self._execute, args=(cmd_id, op, args), daemon=True).start()
                self.commands[cmd_id] = entry
                while len(self.commands) > KEEP_COMMANDS:
                    self.commands.popitem(last=False)
            payload = {"id": cmd_id, **entry}
        reply(self._make(Kind.ACK, payload))

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
            self._save_state()
        if reply is not None:
            reply(self._make(Kind.ACK, {"id": cmd_id, "done": True, "ok": ok, "detail": detail}))

    def carry_out(self, op: str, args: dict[str, Any], cmd_id: str) -> str:
        hook = getattr(self.cfg.hooks, op)
        if op in ("take_ip", "release_ip") and self.cfg.vip.address:
            return self._vip(op)
        if op in _ADAPTER_OPS and self.adapter is not None and not hook:
            detail = self._adapter_op(op, args)
            with self.lock:
                self.status = self.adapter.status()
            return f"{detail or op + ' done'}; role now {self.status.role}"
        if not hook:
            raise ActionError(f"no way to {op}: set hooks.{op}" + (" or [replication]" if op in _ADAPTER_OPS else ""))
        env = {**os.environ, "ARBITER_OP": op, "ARBITER_COMMAND_ID": cmd_id,
               "ARBITER_ARGS": json.dumps(args)}
        try:
            done = subprocess.run(shlex.split(hook), env=env, capture_output=True, text=True,
                                  timeout=self.cfg.agent.command_timeout)
        except subprocess.TimeoutExpired as exc:
            raise ActionError(f"hooks.{op} did not finish within agent.command_timeout = "
                              f"{self.cfg.agent.command_timeout:g} s") from exc
        except OSError as exc:
            raise ActionError(f"hooks.{op}: cannot run ({exc})") from exc
        if done.returncode != 0:
            raise ActionError(f"hooks.{op} exit {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}")
        return done.stdout.strip()[:200]

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
            return self.adapter.sync_degrade()
        else:
            getattr(self.adapter, op)()
        return None

    def _progress(self, line: str) -> None:
        """A long command's progress: in the log, and in the replies' detail until it ends."""
        log.info("%s", line)
        self.progress = line

    def _vip_manager(self):
        """Built at start-up: scapy's first import costs a few hundred ms, not to be paid mid-takeover."""
        from host_tools.vip import VipManager
        v = self.cfg.vip
        manager = VipManager(v.address, v.interface, v.garp_count, v.garp_interval, v.refresh_s)
        manager.warm_up()
        return manager

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
        path = Path(self.cfg.agent.state_file)
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            log.warning("%s: unreadable (agent.state_file); forgetting earlier command ids", path)
            return {}

    def _save_state(self) -> None:
        path = self.cfg.agent.state_file
        done = {k: v for k, v in self.commands.items() if v.get("done")}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"boot": self.boot_id, "commands": done}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arbiter-agent",
        description="Billmaster Arbiter server agent: answers the appliance's heartbeat polls on the COM "
                    "port and the LAN, reports role, health and replication, and carries out promote, "
                    "demote, take-IP, release-IP, backup and shutdown commands.")
    parser.add_argument("--config", type=Path, default=Path("/etc/arbiter/agent.toml"))
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-config", help="validate an agent config; non-zero naming every bad key")
    check.add_argument("file", type=Path)
    check.add_argument("--site", type=Path, help="the appliance's config: cross-check self-fencing against"
                                                 " its policy.fencing and timing.self_fence_wait")
    args = parser.parse_args(argv)
    logs.setup()
    try:
        cfg = load(args.file if args.command == "check-config" else args.config)
        if args.command == "check-config":
            read_key(cfg.agent.key_file)
            if args.site is not None:
                site = load_site(args.site)
                problems = site_problems(cfg.agent, site, str(args.site))
                if problems:
                    raise ConfigError(problems)
                if site.policy.fencing is Fencing.NONE:
                    print(f"{args.file}: self-fencing done {self_fence_margin(cfg.agent, site):.2f} s"
                          " before the appliance may promote")
            print(f"{args.file}: ok")
            return 0
        agent = Agent(cfg)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"arbiter-agent: config error: {p}", file=sys.stderr)
        return 2
    except (ArbiterError, OSError) as exc:
        print(f"arbiter-agent: cannot start: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop.set())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
