"""The appliance's heartbeat links: one serial port per server (pyserial) and one UDP socket
for the LAN. The Poller sends a poll on every link of every server each interval and keeps,
per link, when the last valid reply came, its round trip and the report it carried.

A reply is believed only if it answers a poll sent on that same link recently, so replies
captured earlier cannot be played back. Commands are resent on every poll until the agent
acknowledges them as done; the agent runs each command id once.
"""
from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from firmware.errors import ProtocolError
from firmware.model import AgentReport, Channel, Replication, Role
from firmware.protocol import MAX_FRAME, Codec, Deframer, Frame, Kind, frame_serial

log = logging.getLogger("arbiter.links")

POLL_MEMORY = 64  # outstanding polls remembered per link
POLL_MAX_AGE_S = 5.0
REOPEN_EVERY_S = 0.5
KEEP_COMMANDS = 256  # finished commands whose results stay readable; older ones are dropped


@dataclass(frozen=True)
class LinkRecord:
    last_seen: float | None = None
    rtt_s: float | None = None
    report: AgentReport | None = None


def parse_report(payload: dict[str, Any]) -> AgentReport:
    """A reply payload as a report, every field of the type the protocol gives it (no
    conversions: "false" is not false); raises ProtocolError('bad-reply') otherwise."""
    try:
        repl = _field(payload, "repl", (dict, type(None))) or {}
        lag_bytes = _field(repl, "lag_bytes", (int, type(None)))
        if lag_bytes is not None and lag_bytes < 0:
            raise ValueError(f"lag_bytes = {lag_bytes}: negative")
        lag_s = _field(repl, "lag_s", (int, float, type(None)))
        if lag_s is not None:
            try:
                lag_s = float(lag_s)  # an int too big for a float raises OverflowError
            except OverflowError:
                lag_s = math.inf
            if not math.isfinite(lag_s):
                raise ValueError("lag_s: not a finite number")
        return AgentReport(
            role=Role(_field(payload, "role", (str,), "unknown")),
            healthy=_field(payload, "healthy", (bool,), required=True),
            vip=_field(payload, "vip", (bool,), False),
            repl=Replication(_field(repl, "in_sync", (bool, type(None))), lag_bytes,
                             lag_s, _field(repl, "peer_alive", (bool, type(None)))),
            hears_primary=_field(payload, "hears_primary", (bool, type(None))),
            detail=_field(payload, "detail", (str,), "")[:200],
            reach=_field(payload, "reach", (bool, type(None))),
        )
    except ValueError as exc:
        raise ProtocolError("bad-reply", str(exc)) from exc


def _field(obj: dict[str, Any], key: str, types: tuple[type, ...], default: Any = None, required: bool = False) -> Any:
    """obj[key] if it has one of ``types`` (a bool is not an int here), else ValueError."""
    if key not in obj:
        if required:
            raise ValueError(f"{key}: missing")
        return default
    value = obj[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise ValueError(f"{key} = {value!r}: wrong type")
    return value


class SerialPort:
    """One serial cable: a reader thread that reopens the device when it vanishes."""

    def __init__(self, url: str, baudrate: int, on_frame: Callable[[bytes], None],
                 on_error: Callable[[str], None]) -> None:
        self.url, self.baudrate = url, baudrate
        self._on_frame, self._on_error = on_frame, on_error
        self._port: serial.SerialBase | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deframer = Deframer()
        self._counted: dict[str, int] = {}
        self._thread = threading.Thread(target=self._read_loop, name=f"serial-{url}", daemon=True)
        self._thread.start()

    def _open(self) -> serial.SerialBase | None:
        try:
            return serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.05)
        except (serial.SerialException, OSError, ValueError):
            return None

    def _read_loop(self) -> None:
        warned = False
        while not self._stop.is_set():
            port = self._port
            if port is None:
                port = self._open()
                if port is None:
                    if not warned:
                        log.warning("serial %s: cannot open; retrying every %.1f s", self.url, REOPEN_EVERY_S)
                        warned = True
                    self._stop.wait(REOPEN_EVERY_S)
                    continue
                if warned:
                    log.info("serial %s: open again", self.url)
                warned = False
                with self._lock:
                    self._port = port
            try:
                data = port.read(max(1, port.in_waiting or 1))
            except (serial.SerialException, OSError, TypeError):
                self._drop_port()
                continue
            if data:
                for raw in self._deframer.feed(data):
                    self._on_frame(raw)
                self._report_deframer_errors()

    def _report_deframer_errors(self) -> None:
        for reason, n in self._deframer.errors.items():
            for _ in range(n - self._counted.get(reason, 0)):
                self._on_error(reason)
            self._counted[reason] = n

    def _drop_port(self) -> None:
        with self._lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def write(self, raw: bytes) -> None:
        with self._lock:
            port = self._port
        if port is None:
            return
        try:
            port.write(frame_serial(raw))
        except (serial.SerialException, OSError):
            self._drop_port()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self._drop_port()


@dataclass
class _Link:
    channel: Channel
    polls: OrderedDict[int, float]
    record: LinkRecord = LinkRecord()


@dataclass
class _Command:
    server: str
    frame: bytes
    result: tuple[bool, str] | None = None


class Poller:
    """servers: (name, serial url or "", baudrate, LAN address or "", UDP port)."""

    def __init__(self, codec: Codec, servers: list[tuple[str, str, int, str, int]],
                 clock: Callable[[], float] = time.monotonic, bind: tuple[str, int] = ("0.0.0.0", 0)) -> None:
        self._codec = codec
        self._codec_lock = threading.Lock()  # readers on several threads share its replay state
        self._clock = clock
        self._lock = threading.Lock()
        self._links: dict[tuple[str, Channel], _Link] = {}
        self._serial: dict[str, SerialPort] = {}
        self._udp_peer: dict[str, tuple[str, int]] = {}
        self._by_addr: dict[tuple[str, int], str] = {}
        self._commands: dict[str, _Command] = {}
        self._malformed: dict[str, int] = {}
        self._cmd_seq = 0
        for name, url, baud, address, port in servers:
            if url:
                self._links[(name, Channel.SERIAL)] = _Link(Channel.SERIAL, OrderedDict())
                self._serial[name] = SerialPort(url, baud, lambda raw, n=name: self._receive(n, Channel.SERIAL, raw),
                                                self._count)
            if address:
                self._links[(name, Channel.LAN)] = _Link(Channel.LAN, OrderedDict())
                self._udp_peer[name] = (address, port)
                self._by_addr[(address, port)] = name
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(bind)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._udp_thread = threading.Thread(target=self._udp_loop, name="udp", daemon=True)
        self._udp_thread.start()

    # ------------------------------------------------------------------ sending

    def poll_all(self) -> None:
        now = self._clock()
        for (name, channel), link in self._links.items():
            with self._codec_lock:
                seq, raw = self._codec.make(Kind.POLL)
            with self._lock:
                link.polls[seq] = now
                while len(link.polls) > POLL_MEMORY:
                    link.polls.popitem(last=False)
            self._send(name, channel, raw)
        with self._lock:
            pending = [c for c in self._commands.values() if c.result is None]
        for cmd in pending:
            self._send_everywhere(cmd.server, cmd.frame)

    def _send(self, name: str, channel: Channel, raw: bytes) -> None:
        if channel is Channel.SERIAL:
            self._serial[name].write(raw)
        else:
            try:
                self._sock.sendto(raw, self._udp_peer[name])
            except OSError:
                pass  # no route while a cable is out; the lease runs out on its own

    def _send_everywhere(self, name: str, raw: bytes) -> None:
        for (srv, channel) in self._links:
            if srv == name:
                self._send(name, channel, raw)

    def send_command(self, server: str, op: str, args: dict[str, Any]) -> str:
        with self._lock:
            self._cmd_seq += 1
            cmd_id = f"{self._codec.sender}-{self._codec.boot_id}-{self._cmd_seq}"
        with self._codec_lock:
            _, raw = self._codec.make(Kind.COMMAND, {"id": cmd_id, "op": op, "args": args})
        with self._lock:
            self._commands[cmd_id] = _Command(server, raw)
            finished = [k for k, c in self._commands.items() if c.result is not None]
            for old in finished[:max(0, len(self._commands) - KEEP_COMMANDS)]:  # oldest first
                del self._commands[old]
        self._send_everywhere(server, raw)
        return cmd_id

    def command_result(self, cmd_id: str) -> tuple[bool, str] | None:
        with self._lock:
            cmd = self._commands.get(cmd_id)
            return None if cmd is None else cmd.result

    # ------------------------------------------------------------------ receiving

    def _udp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw, addr = self._sock.recvfrom(MAX_FRAME + 1)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            name = self._by_addr.get((addr[0], addr[1]))
            if name is None:
                self._count("unknown-peer")
                continue
            self._receive(name, Channel.LAN, raw)

    def _receive(self, name: str, channel: Channel, raw: bytes) -> None:
        with self._codec_lock:
            frame = self._codec.read(raw)
        if frame is None:
            return
        if frame.sender != name:
            self._count("wrong-sender")
        elif frame.kind is Kind.REPLY:
            self._on_reply(name, channel, frame)
        elif frame.kind is Kind.ACK:
            self._on_ack(frame)
        else:
            self._count("unexpected-kind")

    def _on_reply(self, name: str, channel: Channel, frame: Frame) -> None:
        now = self._clock()
        try:
            report = parse_report(frame.payload)
            answered = _field(frame.payload, "re", (int,), required=True)
        except (ProtocolError, ValueError):
            self._count("bad-reply")
            return
        with self._lock:
            link = self._links[(name, channel)]
            sent = link.polls.pop(answered, None)
            if sent is None or now - sent > POLL_MAX_AGE_S:
                self._malformed["stale-reply"] = self._malformed.get("stale-reply", 0) + 1
                return
            link.record = LinkRecord(now, now - sent, report)

    def _on_ack(self, frame: Frame) -> None:
        p = frame.payload
        try:
            cmd_id, done = _field(p, "id", (str,), required=True), _field(p, "done", (bool,), required=True)
            ok, detail = _field(p, "ok", (bool,), required=True), _field(p, "detail", (str,), "")
        except ValueError:
            self._count("bad-ack")
            return
        with self._lock:
            cmd = self._commands.get(cmd_id)
            if cmd is not None and done and cmd.result is None:
                cmd.result = (ok, detail[:300])

    def _count(self, reason: str) -> None:
        with self._lock:
            self._malformed[reason] = self._malformed.get(reason, 0) + 1

    # ------------------------------------------------------------------ views

    def snapshot(self) -> dict[str, dict[Channel, LinkRecord]]:
        out: dict[str, dict[Channel, LinkRecord]] = {}
        with self._lock:
            for (name, channel), link in self._links.items():
                out.setdefault(name, {})[channel] = link.record
        return out

    def dropped(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self._malformed)
        with self._codec_lock:
            codec_drops = dict(self._codec.dropped)
        for reason, n in codec_drops.items():
            counts[reason] = counts.get(reason, 0) + n
        return counts

    def close(self) -> None:
        self._stop.set()
        for port in self._serial.values():
            port.close()
        self._sock.close()
        self._udp_thread.join(1.0)
