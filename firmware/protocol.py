"""The heartbeat protocol between the appliance and the server agents, version 1.

This module is the one place the wire format is defined.

Frame layout (all integers big-endian)::

    offset size  field
    0      2     magic b"BA"
    2      1     version (1)
    3      1     kind: 1 poll, 2 reply, 3 command, 4 ack
    4      1     sender id length n (1..32)
    5      n     sender id, ASCII (server or appliance name)
    5+n    8     boot id: grows with every restart of the sender
    13+n   8     sequence number: grows with every frame the sender sends in this boot
    21+n   2     payload length m (0..MAX_PAYLOAD)
    23+n   m     payload: compact UTF-8 JSON object (fields per kind below)
    23+n+m 32    HMAC-SHA256 over every byte before it, keyed with the per-site key

Payloads:

* poll    ``{}`` (the frame's own seq is the poll's nonce)
* reply   ``{"re": poll seq, "role": str, "healthy": bool, "vip": bool,
            "repl": {"in_sync": bool|null, "lag_bytes": int|null, "lag_s": float|null,
                     "peer_alive": bool|null}, "hears_primary": bool|null, "detail": str,
            "reach": bool|null}`` (reach: a ping target answered; absent or null: not probed)
* command ``{"id": str, "op": str, "args": {...}}`` with ``op`` one of COMMAND_OPS
* ack     ``{"id": str, "ok": bool, "done": bool, "detail": str}``

On a serial line every frame is COBS-encoded and followed by one zero byte, so a reader
resynchronises at the next zero after noise. On UDP one datagram carries one raw frame.

Replay: a receiver keeps, per sender, the highest boot id seen and a 64-frame window of
sequence numbers in that boot (as IPsec does); an older boot, a repeated or a too-old
sequence number is rejected. A reply is only believed when it answers a poll the appliance
sent recently (``re``), so a captured reply cannot be played back later.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from cobs import cobs

from firmware.errors import ProtocolError

MAGIC = b"BA"
VERSION = 1
MAC_LEN = 32
MAX_SENDER = 32
MAX_PAYLOAD = 1024
MAX_FRAME = 2 + 1 + 1 + 1 + MAX_SENDER + 8 + 8 + 2 + MAX_PAYLOAD + MAC_LEN
REPLAY_WINDOW = 64
_U64 = 2**64 - 1

COMMAND_OPS = ("promote", "demote", "take_ip", "release_ip", "backup", "shutdown", "rejoin",
               "sync_degrade", "sync_restore", "rebuild")


class Kind(enum.IntEnum):
    POLL = 1
    REPLY = 2
    COMMAND = 3
    ACK = 4


@dataclass(frozen=True)
class Frame:
    kind: Kind
    sender: str
    boot_id: int
    seq: int
    payload: dict[str, Any] = field(default_factory=dict)


def encode(frame: Frame, key: bytes) -> bytes:
    """Serialise and sign a frame; raises ProtocolError for a frame that breaks the bounds."""
    sender = frame.sender.encode("ascii", errors="strict") if frame.sender.isascii() else b""
    if not 1 <= len(sender) <= MAX_SENDER:
        raise ProtocolError("bad-sender", f"sender id must be 1..{MAX_SENDER} ASCII chars")
    if not (0 <= frame.boot_id <= _U64 and 0 <= frame.seq <= _U64):
        raise ProtocolError("bad-counter", "boot id and seq must fit in 64 bits")
    body = json.dumps(frame.payload, separators=(",", ":"), sort_keys=True).encode()
    if len(body) > MAX_PAYLOAD:
        raise ProtocolError("oversized", f"payload {len(body)} bytes > {MAX_PAYLOAD}")
    head = MAGIC + struct.pack(">BBB", VERSION, int(frame.kind), len(sender)) + sender
    msg = head + struct.pack(">QQH", frame.boot_id, frame.seq, len(body)) + body
    return msg + hmac.new(key, msg, hashlib.sha256).digest()


def decode(data: bytes, key: bytes) -> Frame:
    """Check and parse one raw frame. Any defect raises ProtocolError with a short reason."""
    if len(data) > MAX_FRAME:
        raise ProtocolError("oversized", f"{len(data)} bytes > {MAX_FRAME}")
    if len(data) < 5 + 1 + 18 + MAC_LEN:
        raise ProtocolError("truncated", f"{len(data)} bytes")
    if data[:2] != MAGIC:
        raise ProtocolError("bad-magic", data[:2].hex())
    msg, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(hmac.new(key, msg, hashlib.sha256).digest(), mac):
        raise ProtocolError("bad-mac", "authentication failed")
    version, kind, n = msg[2], msg[3], msg[4]
    if version != VERSION:
        raise ProtocolError("bad-version", str(version))
    if kind not in Kind._value2member_map_:
        raise ProtocolError("bad-kind", str(kind))
    if not 1 <= n <= MAX_SENDER or len(msg) < 5 + n + 18:
        raise ProtocolError("truncated", "sender field")
    try:
        sender = msg[5 : 5 + n].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad-sender", "not ASCII") from exc
    boot_id, seq, m = struct.unpack_from(">QQH", msg, 5 + n)
    body = msg[5 + n + 18 :]
    if len(body) != m:
        raise ProtocolError("truncated", f"payload {len(body)} of {m} bytes")
    try:
        payload = json.loads(body) if body else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("bad-payload", "not JSON") from exc
    except RecursionError as exc:  # a signed but absurdly nested payload
        raise ProtocolError("bad-payload", "nested too deeply") from exc
    if not isinstance(payload, dict):
        raise ProtocolError("bad-payload", "not an object")
    return Frame(Kind(kind), sender, boot_id, seq, payload)


def frame_serial(raw: bytes) -> bytes:
    """Wrap one raw frame for a serial line: COBS, then the zero delimiter."""
    return cobs.encode(raw) + b"\x00"


class Deframer:
    """Splits a serial byte stream into raw frames; survives noise and overlong junk.

    ``feed`` returns the decoded frames' raw bytes; bad chunks are counted in ``errors``
    (by reason) and dropped. A chunk longer than the largest possible encoded frame is
    discarded up to the next delimiter, so line noise cannot grow the buffer.
    """

    _MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 2

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False
        self.errors: dict[str, int] = {}

    def _count(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for chunk_end, part in _split_keep(data):
            if self._skipping:
                if chunk_end:
                    self._skipping = False
                continue
            self._buf += part
            if len(self._buf) > self._MAX_ENCODED:
                self._count("oversized")
                self._buf.clear()
                self._skipping = not chunk_end
                continue
            if chunk_end:
                chunk = bytes(self._buf)
                self._buf.clear()
                if not chunk:
                    continue
                try:
                    out.append(cobs.decode(chunk))
                except cobs.DecodeError:
                    self._count("bad-cobs")
        return out


def _split_keep(data: bytes) -> list[tuple[bool, bytes]]:
    """Split on zero bytes: (ends_with_delimiter, part) pairs."""
    parts = data.split(b"\x00")
    return [(True, p) for p in parts[:-1]] + [(False, parts[-1])]


class ReplayGuard:
    """Per-sender anti-replay state: highest boot id and a sliding window of seqs."""

    def __init__(self, window: int = REPLAY_WINDOW) -> None:
        self._window = window
        self._state: dict[str, tuple[int, int, int]] = {}  # sender -> (boot, top seq, bitmap)

    def accept(self, frame: Frame) -> None:
        """Record the frame, or raise ProtocolError('replay') if it was seen or is stale."""
        boot, top, bitmap = self._state.get(frame.sender, (-1, -1, 0))
        if frame.boot_id < boot:
            raise ProtocolError("replay", f"{frame.sender}: old boot id {frame.boot_id}")
        if frame.boot_id > boot:
            self._state[frame.sender] = (frame.boot_id, frame.seq, 1)
            return
        if frame.seq > top:
            shift = frame.seq - top
            bitmap = ((bitmap << shift) | 1) & ((1 << self._window) - 1) if shift < self._window else 1
            self._state[frame.sender] = (boot, frame.seq, bitmap)
            return
        age = top - frame.seq
        if age >= self._window or bitmap & (1 << age):
            raise ProtocolError("replay", f"{frame.sender}: seq {frame.seq} seen or too old")
        self._state[frame.sender] = (boot, top, bitmap | (1 << age))


class Codec:
    """One endpoint's view: its own id, boot id and sequence counter, plus replay state.

    Counters of dropped frames by reason are kept in ``dropped`` for status output.
    """

    def __init__(self, sender: str, key: bytes, boot_id: int) -> None:
        if len(key) < 16:
            raise ProtocolError("bad-key", "the site key must be at least 16 bytes")
        self.sender = sender
        self.boot_id = boot_id
        self._key = key
        self._seq = 0
        self._guard = ReplayGuard()
        self.dropped: dict[str, int] = {}

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def make(self, kind: Kind, payload: dict[str, Any] | None = None) -> tuple[int, bytes]:
        seq = self.next_seq()
        return seq, encode(Frame(kind, self.sender, self.boot_id, seq, payload or {}), self._key)

    def read(self, raw: bytes) -> Frame | None:
        """Authenticate, parse and replay-check a raw frame; None (and counted) if bad."""
        try:
            frame = decode(raw, self._key)
            if frame.sender == self.sender:
                raise ProtocolError("own-frame", "reflected frame")
            self._guard.accept(frame)
        except ProtocolError as exc:
            self.count_drop(exc.reason)
            return None
        return frame

    def count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
