"""The appliance's heartbeat links: one serial port per server (pyserial) and one UDP socket
for the LAN. The Poller sends a poll on every link of every server each interval and keeps,
per link, when the last valid reply came, its round trip and the report it carried.

A reply is believed only if it echoes the random nonce of a poll sent on that same link
recently, so replies captured earlier (in this run or an earlier one) cannot be played back.
Commands are resent on every poll, each time as a new frame, until the agent acknowledges
them as done; the agent runs each command id once. An acknowledgement counts only for the
command sent to the server that acknowledges. On UDP each source is rate-limited before
any MAC is computed, and the reader handles at most what every source at its limit would
send (ReadBudget), so a flood costs little and never starves the serial links' readers.
"""
from __future__ import annotations

import io
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

import serial

from firmware.errors import ProtocolError
from firmware.model import AgentReport, Channel, Replication, Role
from firmware.realtime import NORMAL, Realtime
from firmware.protocol import MAX_FRAME, Ack, Codec, Command, Deframer, Frame, Kind, Reply, frame_serial

log = logging.getLogger("arbiter.links")

POLL_MEMORY = 64  # outstanding polls remembered per link
POLL_MAX_AGE_S = 5.0
REOPEN_EVERY_S = 0.5
READ_WAIT_S = 0.05  # a serial reader looks at its stop flag at least this often
BITS_PER_BYTE = 10  # 8N1: a start bit, eight data bits and a stop bit on the wire
REST_WAIT_MAX_S = 0.03  # the longest a frame's rest is waited for, whatever its header says
REST_WAIT_MIN_S = 0.001  # a shorter rest is not taken: the reader's epoll waits whole milliseconds
KEEP_COMMANDS = 256  # finished commands whose results stay readable; older ones are dropped
VERSION_WARN_EVERY_S = 60.0
RATE_SOURCES = 1024  # sources a RateLimit remembers; beyond that it starts afresh


class LinkRecord(NamedTuple):
    """A link's last valid reply: when it came, its round trip and the report it carried. A
    new one for every reply, 100 a second on a pair: a tuple, where a frozen dataclass set
    each field through object.__setattr__."""

    last_seen: float | None = None
    rtt_s: float | None = None
    report: AgentReport | None = None


def report_of(reply: Reply) -> AgentReport:
    """A reply as the detector's report."""
    return AgentReport(role=Role(reply.role), healthy=reply.healthy, vip=reply.vip,
                       repl=Replication(reply.in_sync, reply.lag_bytes, reply.lag_s, reply.peer_alive,
                                         reply.sync_standbys),
                       hears_primary=reply.hears_primary, detail=reply.detail, reach=reply.reach,
                       unhealthy_s=reply.unhealthy_s)


class ReadBudget:
    """At most ``per_s`` datagrams handled a second, counted in ticks of ``tick`` seconds; past
    that the reader sleeps to the end of the tick and the kernel drops what a flood sends in
    the meantime. A flood then costs a bounded share of a core and cannot starve the serial
    readers, whose frames keep the servers alive whatever the LAN does."""

    def __init__(self, per_s: float, tick: float = 0.02) -> None:
        self.tick = tick
        self.per_tick = max(4, int(per_s * tick))
        self._left, self._tick_end = self.per_tick, 0.0
        self.pauses = 0

    def spend(self) -> None:
        wait = self.take()
        if wait:
            time.sleep(wait)

    def take(self) -> float:
        """Count one datagram; the seconds to leave the socket unread if that used up this
        tick's share, else 0 (for a reader that serves the serial links meanwhile)."""
        now = time.monotonic()
        if now >= self._tick_end:
            self._left, self._tick_end = self.per_tick, now + self.tick
        self._left -= 1
        if self._left > 0:
            return 0.0
        self.pauses += 1
        return max(0.0, self._tick_end - now)


class RateLimit:
    """A token bucket per source (``rate`` frames a second, bursts of ``burst``), checked
    before any MAC: a flood of frames that would each cost an HMAC costs a dict lookup.
    Its clock is always the real monotonic one: a rate is about real time."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self.refused = 0

    def allow(self, source: Hashable) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= RATE_SOURCES and source not in self._buckets:
            self._buckets.clear()
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            self.refused += 1
            return False
        self._buckets[source] = (tokens - 1.0, now)
        return True


SERIAL_WRITE_TIMEOUT_S = 0.01  # the longest a frame may wait for room on the line


def _descriptor(port: serial.SerialBase) -> int | None:
    """The port's file descriptor; None for a pyserial URL that has none (loop://, rfc2217://)."""
    try:
        return port.fileno()
    except (io.UnsupportedOperation, AttributeError):
        return None


class SerialPort:
    """One serial cable whose device is reopened when it vanishes. With ``thread`` (the
    agent's use) it has a reader thread of its own, started by ``start()`` once the owner is
    ready for frames (its replies go out through this object); without, the owner's reader
    waits on the descriptor ``opened()`` gives and calls ``read()`` (the appliance reads every
    link from one thread)."""

    def __init__(self, url: str, baudrate: int, on_frame: Callable[[bytes], None],
                 on_error: Callable[[str], None], realtime: Realtime = NORMAL, thread: bool = True) -> None:
        self.url, self.baudrate, self._realtime = url, baudrate, realtime
        self._on_frame, self._on_error = on_frame, on_error
        self._port: serial.SerialBase | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deframer = Deframer()
        self._counted: dict[str, int] = {}
        self._warned = False
        self._next_open = 0.0
        self._thread: threading.Thread | None = None
        self.has_reader = thread
        if thread:
            self._thread = threading.Thread(target=self._read_loop, name=f"serial-{url}", daemon=True)
        else:
            self._ensure_open()  # open now if it is there, as a reader thread would at once

    def start(self) -> None:
        if self._thread is not None and self._thread.ident is None:  # once
            self._thread.start()

    def _open(self) -> serial.SerialBase | None:
        try:
            return serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=READ_WAIT_S,
                                         write_timeout=SERIAL_WRITE_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError):
            return None

    def _ensure_open(self) -> serial.SerialBase | None:
        """The open port; a closed one is tried again every REOPEN_EVERY_S, never waited for."""
        port = self._port
        if port is not None or self._stop.is_set():
            return port
        now = time.monotonic()
        if now < self._next_open:
            return None
        port = self._open()
        if port is None:
            if not self._warned:
                log.warning("serial %s: cannot open; retrying every %.1f s", self.url, REOPEN_EVERY_S)
                self._warned = True
            self._next_open = now + REOPEN_EVERY_S
            return None
        if self._warned:
            log.info("serial %s: open again", self.url)
        self._warned = False
        with self._lock:
            self._port = port
        return port

    def opened(self) -> tuple[serial.SerialBase, int] | None:
        """The open device and what to wait on for reading it; None while the device is closed
        (a reopen is tried, see _ensure_open) or has no descriptor. A reopened device is
        another object: a reader that registered the descriptor once knows it by that."""
        port = self._ensure_open()
        fd = None if port is None else _descriptor(port)
        return None if port is None or fd is None else (port, fd)

    @property
    def device(self) -> serial.SerialBase | None:
        """The open device, None while closed (a failed read or write closes it)."""
        return self._port

    def read(self, waited: bool = True) -> float:
        """Read what has arrived and hand on its frames. ``waited``: the caller saw the
        descriptor ready; otherwise wait up to READ_WAIT_S for something to arrive.

        Returns the seconds the rest of a frame cut short needs on the wire at the port's baud
        rate (0.0 when none is, or when that is under REST_WAIT_MIN_S): the caller reads again
        then, not before. A UART hands on a few bytes at a time, and a reply of 285 bytes takes
        25 ms at 115200 baud: reading whatever came woke the reader for every 8 or 16 bytes, 36
        or 18 times a frame."""
        port = self._port
        if port is None:
            return 0.0
        try:
            fd = _descriptor(port) if waited else None
            data = _read_ready(fd) if fd is not None else _read_some(port)
        except (serial.SerialException, OSError, TypeError):
            self._drop_port()
            return 0.0
        if not data:  # the wait ran out: a frame's rest is no nearer than it was
            return 0.0
        self._feed(data)
        rest = self._deframer.pending() * BITS_PER_BYTE / self.baudrate
        return min(REST_WAIT_MAX_S, rest) if rest >= REST_WAIT_MIN_S else 0.0

    def _read_loop(self) -> None:
        self._realtime.enter()
        while not self._stop.is_set():
            if self._ensure_open() is None:
                self._stop.wait(max(0.0, self._next_open - time.monotonic()))
                continue
            rest = self.read(waited=False)
            if rest:
                self._stop.wait(rest)

    def _feed(self, data: bytes) -> None:
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
        """Never holds up the caller, the decision loop: on a line that does not drain (its far
        end reads nothing, as a powered-off server's socat cable on the rig; flow control holding
        it) the frame is lost, as on a cable to nobody. A blocking write froze the whole loop."""
        with self._lock:
            port = self._port
        if port is None:
            return
        try:
            fd = _descriptor(port)
            if fd is None:  # a pyserial URL (loop://): its own write, with its write timeout
                port.write(frame_serial(raw))
            else:  # pyserial's descriptor is non-blocking: one write, what does not fit is lost
                os.write(fd, frame_serial(raw))
        except (serial.SerialTimeoutException, BlockingIOError):
            pass  # none or part of the frame went out; the far end's deframer drops a part as noise
        except (serial.SerialException, OSError):
            self._drop_port()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join(1.0)
        self._drop_port()


def _read_some(port: serial.SerialBase) -> bytes:
    """What has arrived, waiting at most READ_WAIT_S. A local device is read with one select
    and one read of all there is: pyserial's read(1) then read(in_waiting) took five system
    calls and two passes through the deframer per frame, 25 frames a second per server.
    A pyserial URL without a descriptor keeps pyserial's read."""
    fd = _descriptor(port)
    if fd is None:
        return port.read(max(1, port.in_waiting or 1))
    if not select.select([fd], [], [], READ_WAIT_S)[0]:
        return b""
    return _read_ready(fd)


def _read_ready(fd: int) -> bytes:
    """All there is on a descriptor that select found ready: one read."""
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:  # readiness without data (the descriptor is non-blocking): look again
        return b""
    if not data:  # as pyserial says it: a vanished USB adapter reads ready and empty
        raise serial.SerialException("device reports readiness to read but returned no data")
    return data


class _SerialWatch:
    """The serial devices one epoll waits on, each registered once: again only when its port
    was closed (a failed read or write) and has been reopened, which makes it another object,
    whose descriptor may well have the old number. A closed descriptor leaves the epoll by
    itself; a registration is dropped here only while its number is still this port's.

    A device whose last read ended inside a frame rests, out of the wait, until the rest of
    that frame can have come (SerialPort.read): one wake-up for what a UART hands on in many."""

    def __init__(self, ready: select.epoll, ports: list[SerialPort]) -> None:
        self._ready = ready
        self._ports = ports
        self._registered: dict[SerialPort, tuple[serial.SerialBase, int]] = {}
        self._by_fd: dict[int, SerialPort] = {}
        self._resting: dict[int, float] = {}  # descriptor -> when it is watched again

    def update(self) -> None:
        """Register every device opened since the last look (a closed one is tried again
        every REOPEN_EVERY_S); two identity checks a port when nothing changed."""
        for port in self._ports:
            was = self._registered.get(port)
            if was is not None:
                if port.device is was[0]:
                    continue
                del self._registered[port]
                if self._by_fd.get(was[1]) is port:
                    del self._by_fd[was[1]]
                    self._resting.pop(was[1], None)
                    try:
                        self._ready.unregister(was[1])
                    except OSError:  # closed already, and so out of the epoll
                        pass
            now_open = port.opened()
            if now_open is not None:
                fd = now_open[1]
                try:
                    self._ready.register(fd, select.EPOLLIN)
                except OSError:  # closed meanwhile by a failed write: looked at again next time
                    continue
                self._registered[port], self._by_fd[fd] = now_open, port

    def read(self, fd: int) -> None:
        port = self._by_fd.get(fd)
        if port is None:
            return
        rest = port.read()
        if rest:
            try:
                self._ready.modify(fd, 0)
            except OSError:  # closed meanwhile by a failed write: the next update registers it again
                return
            self._resting[fd] = time.monotonic() + rest

    def wake(self) -> float:
        """Watch again every device whose rest is over; the seconds until the next one's is
        (READ_WAIT_S when none rests)."""
        if not self._resting:
            return READ_WAIT_S
        now = time.monotonic()
        for fd, until in list(self._resting.items()):
            if until <= now:
                del self._resting[fd]
                try:
                    self._ready.modify(fd, select.EPOLLIN)
                except OSError:  # closed meanwhile, and so out of the epoll
                    pass
        return min(self._resting.values(), default=now + READ_WAIT_S) - now


@dataclass
class _Link:
    channel: Channel
    polls: OrderedDict[int, float]  # nonce -> when sent
    record: LinkRecord = LinkRecord()
    said: Said | None = None  # the last valid reply's payload and report, read and written by its reader only


@dataclass(frozen=True)
class Said:
    """A valid reply's payload without its nonce, the types of its values, and its report.

    A server says the same thing 25 times a second on every link: a payload equal to the last
    one, its values of the same types (1 == True, and the protocol takes no 1 for true; a
    value equal to a name is a string), has the same report, without Reply.parse and
    report_of (19 us of a reply's time on the reader here, the check below 5 us)."""

    payload: dict[str, Any]
    types: tuple[tuple[type, ...], tuple[type, ...]]
    report: AgentReport

    @staticmethod
    def of(payload: dict[str, Any]) -> tuple[dict[str, Any], tuple[tuple[type, ...], tuple[type, ...]]]:
        rest = dict(payload)
        rest.pop("re", None)
        repl = rest.get("repl")
        return rest, (tuple(map(type, rest.values())), tuple(map(type, repl.values())) if type(repl) is dict else ())


def reply_report(said: Said | None, payload: dict[str, Any]) -> tuple[int, Said]:
    """The nonce a reply answers and what it says, parsed only when it says something new;
    ProtocolError('bad-reply') for a payload the protocol refuses."""
    rest, types = Said.of(payload)
    if said is not None and said.payload == rest and said.types == types:
        return Reply.nonce(payload), said
    reply = Reply.parse(payload)
    return reply.re, Said(rest, types, report_of(reply))


@dataclass
class _Command:
    server: str
    command: Command
    result: tuple[bool, str] | None = None


def news(before: AgentReport | None, after: AgentReport | None) -> bool:
    """Whether a server's new report changes its view of the primary (peer heartbeat,
    replication stream): a standby that stops hearing a silent primary is what a failover
    waits for (safety rule 4), and decide learnt it only at the next cycle, up to an
    interval after the reply, often two, as the reply to a cycle's poll comes after it."""
    if before is None or after is None:
        return False
    return (before.hears_primary, before.repl.peer_alive) != (after.hears_primary, after.repl.peer_alive)


class Poller:
    """servers: (name, serial url or "", baudrate, LAN address or "", UDP port).

    ``source_rate``: frames a second one UDP source may send before the rest is dropped
    unread (a server sends one reply per poll and a few acks: far below it).
    ``on_news``: called from a reader thread when a reply changes what a server says of
    the primary (see ``news``), so the loop decides on it now rather than a poll later."""

    def __init__(self, codec: Codec, servers: list[tuple[str, str, int, str, int]],
                 clock: Callable[[], float] = time.monotonic, bind: tuple[str, int] = ("0.0.0.0", 0),
                 source_rate: float = 250.0, realtime: Realtime = NORMAL,
                 on_news: Callable[[], None] = lambda: None) -> None:
        self._codec = codec
        self._on_news = on_news
        self._codec_lock = threading.Lock()  # readers on several threads share its replay state
        self._clock = clock
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)  # a command's result arrived
        self._links: dict[tuple[str, Channel], _Link] = {}
        self._serial: dict[str, SerialPort] = {}
        self._udp_peer: dict[str, tuple[str, int]] = {}
        self._by_addr: dict[tuple[str, int], str] = {}
        self._commands: dict[str, _Command] = {}
        self._malformed: dict[str, int] = {}
        self._version_warned: dict[tuple[str, Channel], float] = {}
        self._cmd_seq = 0
        self._realtime = realtime
        self.limit = RateLimit(source_rate, burst=max(8.0, source_rate / 4))
        self.budget = ReadBudget(source_rate * max(1, sum(1 for s in servers if s[3])))  # every source at its limit
        for name, url, baud, address, port in servers:
            if url:
                self._links[(name, Channel.SERIAL)] = _Link(Channel.SERIAL, OrderedDict())
                self._serial[name] = SerialPort(url, baud, lambda raw, n=name: self._receive(n, Channel.SERIAL, raw),
                                                self._count, realtime, thread="://" in url)
            if address:
                self._links[(name, Channel.LAN)] = _Link(Channel.LAN, OrderedDict())
                self._udp_peer[name] = (address, port)
                self._by_addr[(address, port)] = name
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(bind)
        self._sock.setblocking(False)  # read only when ready; a send never waits for buffer room
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="links", daemon=True)
        self._reader.start()
        for port in self._serial.values():
            port.start()  # a pyserial URL's own reader (the others are read by self._reader)

    # ------------------------------------------------------------------ sending

    def poll_all(self) -> None:
        """Every server on every link; commands not yet acknowledged are sent again."""
        self._poll_links(self._links)
        with self._lock:
            pending = [c for c in self._commands.values() if c.result is None]
        for cmd in pending:
            self._send_everywhere(cmd)

    def _poll_links(self, links: Collection[tuple[str, Channel]]) -> None:
        """A poll with a fresh random nonce on each of these links. The nonces are one read of
        the kernel's generator (secrets.randbits read it once a poll), the polls are signed
        under one hold of the codec's lock and remembered under one of the links', all before
        the first is sent, so no reply can come before its poll is known."""
        now = self._clock()
        nonces = struct.unpack(f">{len(links)}Q", os.urandom(8 * len(links)))
        with self._codec_lock:
            raws = [self._codec.poll(name, nonce) for (name, _), nonce in zip(links, nonces)]
        with self._lock:
            for key, nonce in zip(links, nonces):
                polls = self._links[key].polls
                polls[nonce] = now
                while len(polls) > POLL_MEMORY:
                    polls.popitem(last=False)
        for (name, channel), raw in zip(links, raws):
            self._send(name, channel, raw)

    def poll_lan(self, servers: Collection[str]) -> None:
        """These servers alone, on their LAN link: a serial line has no room for polls between
        the interval's (config.SERIAL_MAX_SHARE: a poll and its reply an interval may take
        80 % of a 115200-baud line at the shipped 40 ms)."""
        self._poll_links([key for key in self._links if key[0] in servers and key[1] is Channel.LAN])

    def _send(self, name: str, channel: Channel, raw: bytes) -> None:
        if channel is Channel.SERIAL:
            self._serial[name].write(raw)
        else:
            try:
                self._sock.sendto(raw, self._udp_peer[name])
            except OSError:
                pass  # no route while a cable is out; the lease runs out on its own

    def _send_everywhere(self, cmd: _Command) -> None:
        """The command on every link of its server, each copy a frame of its own (a new seq),
        so a resend is never a replay."""
        for (srv, channel) in self._links:
            if srv == cmd.server:
                with self._codec_lock:
                    _, raw = self._codec.make(Kind.COMMAND, srv, cmd.command.payload())
                self._send(srv, channel, raw)

    def send_command(self, server: str, op: str, args: dict[str, Any]) -> str:
        with self._lock:
            self._cmd_seq += 1
            cmd_id = f"{self._codec.sender}-{self._codec.boot_id}-{self._cmd_seq}"
            cmd = _Command(server, Command(cmd_id, op, args))
            self._commands[cmd_id] = cmd
            finished = [k for k, c in self._commands.items() if c.result is not None]
            for old in finished[:max(0, len(self._commands) - KEEP_COMMANDS)]:  # oldest first
                del self._commands[old]
        self._send_everywhere(cmd)
        return cmd_id

    def wait_result(self, cmd_id: str, timeout: float) -> tuple[bool, str] | None:
        """The command's result as soon as the reader has the agent's acknowledgement, or None
        after ``timeout`` seconds. Every step of a failover waits here: the reader wakes it,
        where looking every millisecond woke a real-time thread a thousand times a second."""
        with self._acked:
            self._acked.wait_for(lambda: self._result(cmd_id) is not None, timeout)
            return self._result(cmd_id)

    def _result(self, cmd_id: str) -> tuple[bool, str] | None:
        cmd = self._commands.get(cmd_id)
        return None if cmd is None else cmd.result

    # ------------------------------------------------------------------ receiving

    def _read_loop(self) -> None:
        """One thread reads every link: an epoll over the UDP socket and every serial device
        (a pyserial URL without a descriptor has a thread of its own). The replies to a
        cycle's polls arrive together, so one wake-up often serves several of them, where a
        thread per link woke, took the interpreter lock and ran cold once per frame. Each
        descriptor is registered once, a serial device's again only when it was reopened:
        building the list and select() again on every wake-up, 100 a second on a pair, cost
        more than the wait. While the LAN has used up its read budget its socket is left out
        of the wait, so a flood still never holds up the serial links."""
        self._realtime.enter()
        udp = self._sock.fileno()
        ready = select.epoll()
        ready.register(udp, select.EPOLLIN)
        watch = _SerialWatch(ready, [port for port in self._serial.values() if not port.has_reader])
        lan_paused_until = 0.0
        try:
            while not self._stop.is_set():
                watch.update()
                wait = watch.wake()
                if lan_paused_until:
                    lan_wait = lan_paused_until - time.monotonic()
                    if lan_wait <= 0.0:
                        ready.modify(udp, select.EPOLLIN)
                        lan_paused_until = 0.0
                    else:
                        wait = min(wait, lan_wait)
                for fd, _ in ready.poll(wait):
                    if fd == udp:
                        lan_paused_until = self._read_udp()
                        if lan_paused_until:
                            ready.modify(udp, 0)
                    else:
                        watch.read(fd)
        finally:
            ready.close()

    def _read_udp(self) -> float:
        """Every datagram waiting, within the read budget; when the budget is spent, until
        when to leave the socket unread (0.0 if it was not)."""
        while True:
            try:
                raw, addr = self._sock.recvfrom(MAX_FRAME + 1)
            except OSError:  # nothing more waiting (BlockingIOError), or the socket closed
                return 0.0
            pause = self.budget.take()
            name = self._by_addr.get((addr[0], addr[1]))
            if name is None:
                self._count("unknown-peer")
            elif self.limit.allow(name):
                self._receive(name, Channel.LAN, raw)
            if pause:
                return time.monotonic() + pause

    def _receive(self, name: str, channel: Channel, raw: bytes) -> None:
        with self._codec_lock:
            frame = self._codec.read(raw, expect=name)
            error = self._codec.last_error if frame is None else None
        if frame is None:
            if error is not None and error.reason == "bad-version":
                self._warn_version(name, channel, error)
        elif frame.kind is Kind.REPLY:
            self._on_reply(name, channel, frame)
        elif frame.kind is Kind.ACK:
            self._on_ack(name, frame)
        else:
            self._count("unexpected-kind")

    def _warn_version(self, name: str, channel: Channel, error: ProtocolError) -> None:
        now = self._clock()
        with self._lock:
            if now - self._version_warned.get((name, channel), -VERSION_WARN_EVERY_S) < VERSION_WARN_EVERY_S:
                return
            self._version_warned[(name, channel)] = now
        log.warning("%s/%s: %s", name, channel.value, error.detail)

    def _on_reply(self, name: str, channel: Channel, frame: Frame) -> None:
        now = self._clock()
        link = self._links[(name, channel)]
        try:
            nonce, link.said = reply_report(link.said, frame.payload)
        except ProtocolError:
            self._count("bad-reply")
            return
        with self._lock:
            sent = link.polls.pop(nonce, None)
            if sent is None or now - sent > POLL_MAX_AGE_S:
                self._malformed["stale-reply"] = self._malformed.get("stale-reply", 0) + 1
                return
            before, link.record = link.record.report, LinkRecord(now, now - sent, link.said.report)
        if news(before, link.record.report):
            self._on_news()

    def _on_ack(self, name: str, frame: Frame) -> None:
        try:
            ack = Ack.parse(frame.payload)
        except ProtocolError:
            self._count("bad-ack")
            return
        with self._lock:
            cmd = self._commands.get(ack.id)
            if cmd is None or cmd.server != name:
                self._malformed["ack-unmatched"] = self._malformed.get("ack-unmatched", 0) + 1
            elif ack.done and cmd.result is None:
                cmd.result = (ack.ok, ack.detail)
                self._acked.notify_all()

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
        if self.limit.refused:
            counts["rate-limited"] = counts.get("rate-limited", 0) + self.limit.refused
        return counts

    def close(self) -> None:
        self._stop.set()
        self._reader.join(1.0)
        for port in self._serial.values():
            port.close()
        self._sock.close()
