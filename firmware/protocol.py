"""The heartbeat protocol between the appliance and the server agents, version 2.

This module is the one place the wire format is defined.

Frame layout (all integers big-endian)::

    offset      size  field
    0           2     magic b"BA"
    2           1     version (2; a version 1 frame is refused naming both versions)
    3           1     kind: 1 poll, 2 reply, 3 command, 4 ack
    4           1     sender id length n (1..32)
    5           n     sender id, ASCII (server or appliance name)
    5+n         1     receiver id length r (1..32)
    6+n         r     receiver id, ASCII: the one node this frame is meant for
    6+n+r       8     boot id: grows with every restart of the sender (the appliance: its run id)
    14+n+r      8     sequence number: grows with every frame the sender sends in this boot
    22+n+r      2     payload length m (0..MAX_PAYLOAD)
    24+n+r      m     payload: compact UTF-8 JSON object (fields per kind below)
    24+n+r+m    32    HMAC-SHA256 over every byte before it, keyed with the link's key

Keys: only the appliance holds the site master key. Frames between the appliance and
server S are signed with S's key, ``derive_key(master, S)``; frames between two servers'
agents (the standby's own view of the primary) with their pair key, ``derive_key(master,
A, B)``. A server therefore cannot sign a frame as another server, nor as the appliance
towards another server. ``arbiterd derive-key`` prints these keys for the technician.

Payloads:

* poll    ``{"n": nonce}``: a random 64-bit integer, fresh for every poll
* reply   ``{"re": the poll's nonce, "role": str, "healthy": bool, "vip": bool,
            "repl": {"in_sync": bool|null, "lag_bytes": int|null, "lag_s": float|null,
                     "peer_alive": bool|null, "sync": [str]|null}, "hears_primary": bool|null,
            "detail": str, "reach": bool|null, "unhealthy_s": float|null}`` (reach: a ping
            target answered; absent or null: not probed. unhealthy_s: how long the service
            has failed its health check, from the start of the first failing check; null
            while healthy. sync, from a primary: the servers holding every commit it
            acknowledges, at most MAX_SYNC names; absent or null: its adapter does not say)
  (``Reply``)
* command ``{"id": str, "op": str, "args": {...}}`` with ``op`` one of COMMAND_OPS; the
  frame's receiver is the target server and its boot id the appliance's run (``Command``)
* ack     ``{"id": str, "ok": bool, "done": bool, "detail": str}`` (``Ack``)

On a serial line every frame is COBS-encoded and followed by one zero byte, so a reader
resynchronises at the next zero after noise. On UDP one datagram carries one raw frame.

Checks, in this order, so that nothing unauthenticated changes any state: size, magic,
version; the sender against the link it came in on (a serial port or a UDP source address
belongs to one server) and the key that sender has; the MAC; the receiver is this node;
then replay. Replay: a receiver keeps, per sender, the highest boot id seen and a 64-frame
window of sequence numbers in that boot (as IPsec does). An older boot, a repeated or a
too-old sequence number is rejected; so is a boot id above MAX_BOOT_ID or more than
MAX_BOOT_JUMP past the known one, so no frame can lock a sender out for ever. On a sender's
first frame of a boot, every older sequence number counts as seen.

Freshness: a reply is believed only when it echoes the nonce of a poll sent recently on that
link, so a reply captured in this or an earlier appliance run cannot be played back. An
agent obeys a command only from the appliance run it saw in a poll within
COMMAND_POLL_FRESH_S, and after a restart only once such a poll came in; the poll starts
its replay window, so a command captured before it is too old. A resend is a new frame
(new sequence number) with the same command id; an agent answers an id it has finished
with the stored result again and never runs it twice.
"""
from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cobs import cobs

from firmware.errors import ProtocolError

MAGIC = b"BA"
VERSION = 2
MAC_LEN = 32
MAX_ID = 32
MAX_SENDER = MAX_ID
MAX_PAYLOAD = 1024
_COUNTERS = struct.Struct(">QQH")
MAX_FRAME = 2 + 1 + 1 + 1 + MAX_ID + 1 + MAX_ID + _COUNTERS.size + MAX_PAYLOAD + MAC_LEN
MIN_FRAME = 2 + 1 + 1 + 1 + 1 + 1 + 1 + _COUNTERS.size + MAC_LEN
MIN_HEADER = MIN_FRAME - MAC_LEN  # everything before the payload, with one-character ids
MAX_HEADER = MIN_HEADER - 2 + 2 * MAX_ID
REPLAY_WINDOW = 64
MAX_BOOT_ID = 2**56  # microseconds since 1970 reach it in the year 4253
MAX_BOOT_JUMP = 2**48  # ~8.9 years of a microsecond clock between two starts
COMMAND_POLL_FRESH_S = 3.0
MIN_KEY = 16
_U64 = 2**64 - 1
_KEY_LABEL = b"billmaster-arbiter/v2/"

COMMAND_OPS = ("promote", "demote", "take_ip", "release_ip", "backup", "shutdown", "rejoin",
               "sync_degrade", "sync_restore", "rebuild")
ROLES = ("primary", "standby", "unknown")
MAX_SYNC = 8  # names in a reply's repl.sync


class Kind(enum.IntEnum):
    POLL = 1
    REPLY = 2
    COMMAND = 3
    ACK = 4


_KINDS: dict[int, Kind] = dict(Kind._value2member_map_)  # type: ignore[arg-type]  # a byte's kind, None if none


@dataclass(frozen=True)
class Frame:
    kind: Kind
    sender: str
    receiver: str
    boot_id: int
    seq: int
    payload: dict[str, Any] = field(default_factory=dict)


def derive_key(master: bytes, node: str, peer: str | None = None) -> bytes:
    """The key of the link between the appliance and ``node`` or, with ``peer``, between two
    servers' agents: hex of HMAC-SHA256(master, label). Hex, so the key file a technician
    copies is plain text; the 64 ASCII bytes are the key."""
    label = f"server/{node}" if peer is None else "pair/" + "/".join(sorted((node, peer)))
    return hmac.new(master, _KEY_LABEL + label.encode(), hashlib.sha256).hexdigest().encode()


def _id_bytes(value: str, what: str) -> bytes:
    raw = value.encode("ascii") if value.isascii() else b""
    if not 1 <= len(raw) <= MAX_ID:
        raise ProtocolError(f"bad-{what}", f"{what} id must be 1..{MAX_ID} ASCII chars")
    return raw


class Mac:
    """HMAC-SHA256 under one key, the standard library's keyed object set up once per peer and
    copied for each frame: its pads are made and hashed once, not again for every poll sent
    and every reply read (200 a second on a pair, 1000 with ten servers)."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def digest(self, msg: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(msg)
        return h.digest()


def encode(frame: Frame, key: bytes) -> bytes:
    """Serialise and sign a frame; raises ProtocolError for a frame that breaks the bounds."""
    return _encode(frame, Mac(key))


def _encode(frame: Frame, mac: Mac) -> bytes:
    body = json.dumps(frame.payload, separators=(",", ":"), sort_keys=True).encode()
    return _signed(_header(frame.kind, frame.sender, frame.receiver), frame.boot_id, frame.seq, body, mac)


@functools.lru_cache(maxsize=256)
def _header(kind: Kind, sender: str, receiver: str) -> bytes:
    """Magic, version, kind, sender and receiver: the same for every frame between two nodes."""
    s, r = _id_bytes(sender, "sender"), _id_bytes(receiver, "receiver")
    return b"".join((MAGIC, bytes((VERSION, int(kind), len(s))), s, bytes((len(r),)), r))


def _signed(header: bytes, boot_id: int, seq: int, body: bytes, mac: Mac) -> bytes:
    if not (0 <= boot_id <= _U64 and 0 <= seq <= _U64):
        raise ProtocolError("bad-counter", "boot id and seq must fit in 64 bits")
    if len(body) > MAX_PAYLOAD:
        raise ProtocolError("oversized", f"payload {len(body)} bytes > {MAX_PAYLOAD}")
    msg = b"".join((header, _COUNTERS.pack(boot_id, seq, len(body)), body))
    return msg + mac.digest(msg)


def peek_sender(data: bytes) -> str:
    """The sender id of a raw frame, read before its MAC is checked, so the receiver can
    hold it against the link and pick that sender's key; size, magic and version are checked
    here too (a version 1 peer gets a message that names both versions)."""
    if len(data) > MAX_FRAME:
        raise ProtocolError("oversized", f"{len(data)} bytes > {MAX_FRAME}")
    if len(data) < MIN_FRAME:
        raise ProtocolError("truncated", f"{len(data)} bytes")
    if data[:2] != MAGIC:
        raise ProtocolError("bad-magic", data[:2].hex())
    if data[2] != VERSION:
        raise ProtocolError("bad-version", f"protocol version {data[2]} frame; this end speaks version "
                                           f"{VERSION} only: upgrade the peer (arbiterd and arbiter-agent "
                                           f"must both speak version {VERSION})")
    n = data[4]
    if not 1 <= n <= MAX_ID or len(data) < MIN_FRAME + n - 1:
        raise ProtocolError("truncated", "sender field")
    try:
        return data[5:5 + n].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad-sender", "not ASCII") from exc


def header_length(prefix: bytes | bytearray) -> int:
    """The length of a raw frame's header (everything before the payload) as far as its first
    bytes tell: exact once both id lengths are in, before that the least it can be."""
    if len(prefix) < 5:
        return MIN_HEADER
    n = prefix[4]
    if len(prefix) < 6 + n:
        return MIN_HEADER - 1 + n
    return MIN_HEADER - 2 + n + prefix[5 + n]


def frame_length(prefix: bytes | bytearray) -> int | None:
    """A raw frame's whole length by its header, from the frame's first bytes (None until the
    header is in): for a reader on a slow line, which then waits for the rest of the frame
    rather than waking for every few bytes the line hands on. Nothing is checked here; a junk
    header's length is clipped to MAX_FRAME."""
    header = header_length(prefix)
    if len(prefix) < header:
        return None
    return min(MAX_FRAME, header + (prefix[header - 2] << 8 | prefix[header - 1]) + MAC_LEN)


def decode(data: bytes, key: bytes) -> Frame:
    """Check and parse one raw frame. Any defect raises ProtocolError with a short reason."""
    return _decode(data, Mac(key), peek_sender(data))


def _decode(data: bytes, mac: Mac, sender: str) -> Frame:
    """``decode`` of a frame whose sender ``peek_sender`` has read (and so checked its size,
    magic and version): a reader that picked the key by it does not read it twice."""
    msg, tag = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(mac.digest(msg), tag):
        raise ProtocolError("bad-mac", "authentication failed")
    kind, at = _KINDS.get(msg[3]), 5 + len(sender)
    if kind is None:
        raise ProtocolError("bad-kind", str(msg[3]))
    r = msg[at]
    if not 1 <= r <= MAX_ID or len(msg) < at + 1 + r + _COUNTERS.size:
        raise ProtocolError("truncated", "receiver field")
    try:
        receiver = msg[at + 1:at + 1 + r].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad-receiver", "not ASCII") from exc
    at += 1 + r
    boot_id, seq, m = _COUNTERS.unpack_from(msg, at)
    body = msg[at + _COUNTERS.size:]
    if len(body) != m:
        raise ProtocolError("truncated", f"payload {len(body)} of {m} bytes")
    try:
        payload = json.loads(_text(body)) if body else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("bad-payload", "not JSON") from exc
    except RecursionError as exc:  # a signed but absurdly nested payload
        raise ProtocolError("bad-payload", "nested too deeply") from exc
    if not isinstance(payload, dict):
        raise ProtocolError("bad-payload", "not an object")
    return _frame(kind, sender, receiver, boot_id, seq, payload)


def _frame(kind: Kind, sender: str, receiver: str, boot_id: int, seq: int, payload: dict[str, Any]) -> Frame:
    """``Frame(...)`` without the frozen dataclass's __init__, which sets each of the six
    fields through object.__setattr__: a tenth of the instructions of reading a reply, 100 a
    second on a pair. Frame has no __post_init__ and no field with init=False (a test holds
    it to that), so the fields set here are the very value __init__ builds."""
    frame = object.__new__(Frame)
    frame.__dict__.update(kind=kind, sender=sender, receiver=receiver, boot_id=boot_id, seq=seq, payload=payload)
    return frame


def _text(body: bytes) -> str:
    """A payload's bytes decoded as json.loads decodes bytes, without its look for a UTF-16 or
    UTF-32 encoding when the payload starts as every peer's does, ``{`` in UTF-8 (json.loads
    of a reply's bytes 10.7 us, of its text 7.6 us, here under load)."""
    if body[:1] == b"{" and body[1:2] != b"\0":
        return body.decode("utf-8", "surrogatepass")
    return body.decode(json.detect_encoding(body), "surrogatepass")


# ---------------------------------------------------------------------- payloads


def field_of(obj: dict[str, Any], key: str, types: tuple[type, ...], default: Any = None,
             required: bool = False) -> Any:
    """obj[key] if it has one of ``types`` (a bool is not an int here), else ValueError."""
    if key not in obj:
        if required:
            raise ValueError(f"{key}: missing")
        return default
    value = obj[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise ValueError(f"{key} = {value!r}: wrong type")
    return value


def _u64(obj: dict[str, Any], key: str) -> int:
    value = field_of(obj, key, (int,), required=True)
    if not 0 <= value <= _U64:
        raise ValueError(f"{key} = {value}: not a 64-bit unsigned integer")
    return value


def poll_nonce(payload: dict[str, Any]) -> int:
    """The nonce of a poll payload; ProtocolError('bad-poll') if it has none."""
    try:
        return _u64(payload, "n")
    except ValueError as exc:
        raise ProtocolError("bad-poll", str(exc)) from exc


_NONE = type(None)


@dataclass(frozen=True)
class Reply:
    """A reply's payload: built by the agent, parsed by the appliance, only here."""

    re: int  # the nonce of the poll it answers
    healthy: bool
    role: str = "unknown"
    vip: bool = False
    in_sync: bool | None = None
    lag_bytes: int | None = None
    lag_s: float | None = None
    peer_alive: bool | None = None
    hears_primary: bool | None = None
    detail: str = ""
    reach: bool | None = None  # a ping target answered; None: none configured or not probed
    unhealthy_s: float | None = None  # how long the service has failed its health check; None: healthy
    sync_standbys: tuple[str, ...] | None = None  # a primary's standbys holding every acknowledged commit

    def payload(self) -> dict[str, Any]:
        return {"re": self.re, "role": self.role, "healthy": self.healthy, "vip": self.vip,
                "repl": {"in_sync": self.in_sync, "lag_bytes": self.lag_bytes, "lag_s": self.lag_s,
                         "peer_alive": self.peer_alive,
                         "sync": None if self.sync_standbys is None else list(self.sync_standbys[:MAX_SYNC])},
                "hears_primary": self.hears_primary, "detail": self.detail[:200], "reach": self.reach,
                "unhealthy_s": self.unhealthy_s}

    @staticmethod
    def nonce(payload: dict[str, Any]) -> int:
        """The nonce of the poll a reply answers; ProtocolError('bad-reply') if it has none."""
        try:
            return _u64(payload, "re")
        except ValueError as exc:
            raise ProtocolError("bad-reply", str(exc)) from exc

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> Reply:
        """Every field of the type the protocol gives it (no conversions: "false" is not
        false); raises ProtocolError('bad-reply') otherwise."""
        try:
            repl = field_of(payload, "repl", (dict, _NONE)) or {}
            lag_bytes = field_of(repl, "lag_bytes", (int, _NONE))
            if lag_bytes is not None and lag_bytes < 0:
                raise ValueError(f"lag_bytes = {lag_bytes}: negative")
            lag_s = field_of(repl, "lag_s", (int, float, _NONE))
            if lag_s is not None:
                try:
                    lag_s = float(lag_s)  # an int too big for a float raises OverflowError
                except OverflowError:
                    lag_s = math.inf
                if not math.isfinite(lag_s):
                    raise ValueError("lag_s: not a finite number")
            role = field_of(payload, "role", (str,), "unknown")
            if role not in ROLES:
                raise ValueError(f"role = {role!r}: not one of {', '.join(ROLES)}")
            return cls(re=_u64(payload, "re"), healthy=field_of(payload, "healthy", (bool,), required=True),
                       role=role, vip=field_of(payload, "vip", (bool,), False),
                       in_sync=field_of(repl, "in_sync", (bool, _NONE)), lag_bytes=lag_bytes, lag_s=lag_s,
                       peer_alive=field_of(repl, "peer_alive", (bool, _NONE)),
                       hears_primary=field_of(payload, "hears_primary", (bool, _NONE)),
                       detail=field_of(payload, "detail", (str,), "")[:200],
                       reach=field_of(payload, "reach", (bool, _NONE)),
                       unhealthy_s=_duration(field_of(payload, "unhealthy_s", (int, float, _NONE))),
                       sync_standbys=_names(field_of(repl, "sync", (list, _NONE))))
        except ValueError as exc:
            raise ProtocolError("bad-reply", str(exc)) from exc


def _names(value: list[Any] | None) -> tuple[str, ...] | None:
    """At most MAX_SYNC server names (1..MAX_ID ASCII characters), or None; ValueError otherwise."""
    if value is None:
        return None
    if len(value) > MAX_SYNC:
        raise ValueError(f"sync: {len(value)} names, more than {MAX_SYNC}")
    for name in value:
        if not (isinstance(name, str) and name.isascii() and 1 <= len(name) <= MAX_ID):
            raise ValueError(f"sync: {name!r} is not a server name (1 to {MAX_ID} ASCII characters)")
    return tuple(value)


def _duration(value: float | None) -> float | None:
    """A non-negative finite number of seconds, or None; ValueError otherwise."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int too big for a float
        seconds = math.inf
    if not 0 <= seconds < math.inf:
        raise ValueError(f"unhealthy_s = {value!r}: not a finite duration")
    return seconds


@dataclass(frozen=True)
class Ack:
    """An agent's answer to a command: ``done`` False while it runs, then its result."""

    id: str
    done: bool
    ok: bool
    detail: str = ""

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "done": self.done, "ok": self.ok, "detail": self.detail[:300]}

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> Ack:
        try:
            return cls(field_of(payload, "id", (str,), required=True), field_of(payload, "done", (bool,), required=True),
                       field_of(payload, "ok", (bool,), required=True), field_of(payload, "detail", (str,), "")[:300])
        except ValueError as exc:
            raise ProtocolError("bad-ack", str(exc)) from exc


@dataclass(frozen=True)
class Command:
    id: str
    op: str
    args: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "args": self.args}

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> Command:
        try:
            cmd = cls(field_of(payload, "id", (str,), required=True), field_of(payload, "op", (str,), required=True),
                      field_of(payload, "args", (dict,), {}))
        except ValueError as exc:
            raise ProtocolError("bad-command", str(exc)) from exc
        if not cmd.id:
            raise ProtocolError("bad-command", "empty id")
        return cmd


# ---------------------------------------------------------------------- serial framing


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

    def pending(self) -> int:
        """How many more bytes the frame now arriving needs, its delimiter included: by its
        header once that is in, before that at least what the rest of its header needs; 0
        between frames, while junk is skipped, and for bytes that cannot begin a frame of this
        version (line noise: no length of theirs is believed). COBS adds a byte per 254,
        counted as if the frame had no zero byte: at most a few bytes more than it takes."""
        if self._skipping or not self._buf:
            return 0
        raw = _cobs_prefix(self._buf, MAX_HEADER)
        if not _begins_a_frame(raw):
            return 0
        length = frame_length(raw) or header_length(raw)
        return max(1, length + length // 254 + 2 - len(self._buf))

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


_FRAME_START = MAGIC + bytes((VERSION,))


def _begins_a_frame(prefix: bytes) -> bool:
    """Whether these bytes can begin a frame: the magic, this version, ids of 1..MAX_ID."""
    if not _FRAME_START.startswith(prefix[:len(_FRAME_START)]):
        return False
    n = prefix[4] if len(prefix) > 4 else 1
    r = prefix[5 + n] if len(prefix) > 5 + n else 1
    return 1 <= n <= MAX_ID and 1 <= r <= MAX_ID


def _cobs_prefix(encoded: bytes | bytearray, limit: int) -> bytes:
    """The first ``limit`` bytes or so of what a COBS chunk, perhaps cut short, decodes to."""
    out = bytearray()
    at = 0
    while at < len(encoded) and len(out) < limit:
        code = encoded[at]
        out += encoded[at + 1:at + code]
        at += code
        if code < 0xFF and at < len(encoded):
            out.append(0)
    return bytes(out)


def _split_keep(data: bytes) -> list[tuple[bool, bytes]]:
    """Split on zero bytes: (ends_with_delimiter, part) pairs."""
    parts = data.split(b"\x00")
    return [(True, p) for p in parts[:-1]] + [(False, parts[-1])]


# ---------------------------------------------------------------------- replay and endpoints


class ReplayGuard:
    """Per-sender anti-replay state: highest boot id and a sliding window of seqs."""

    def __init__(self, window: int = REPLAY_WINDOW) -> None:
        self._window = window
        self._full = (1 << window) - 1
        self._state: dict[str, tuple[int, int, int]] = {}  # sender -> (boot, top seq, bitmap)

    def accept(self, frame: Frame) -> None:
        """Record the frame, or raise ProtocolError('replay'/'bad-boot') if it was seen, is
        stale, or its boot id is out of bounds."""
        if frame.boot_id > MAX_BOOT_ID:
            raise ProtocolError("bad-boot", f"{frame.sender}: boot id {frame.boot_id} > {MAX_BOOT_ID}")
        boot, top, bitmap = self._state.get(frame.sender, (-1, -1, 0))
        if frame.boot_id < boot:
            raise ProtocolError("replay", f"{frame.sender}: old boot id {frame.boot_id}")
        if frame.boot_id > boot:
            if boot >= 0 and frame.boot_id - boot > MAX_BOOT_JUMP:
                raise ProtocolError("bad-boot", f"{frame.sender}: boot id jumps {frame.boot_id - boot}"
                                                f" > {MAX_BOOT_JUMP}")
            self._state[frame.sender] = (frame.boot_id, frame.seq, self._full)  # older seqs: seen
            return
        if frame.seq > top:
            shift = frame.seq - top
            bitmap = ((bitmap << shift) | 1) & self._full if shift < self._window else 1
            self._state[frame.sender] = (boot, frame.seq, bitmap)
            return
        age = top - frame.seq
        if age >= self._window or bitmap & (1 << age):
            raise ProtocolError("replay", f"{frame.sender}: seq {frame.seq} seen or too old")
        self._state[frame.sender] = (boot, top, bitmap | (1 << age))


class Codec:
    """One endpoint's view: its own id, boot id and sequence counter, the key of every node
    it talks to, and replay state.

    Counters of dropped frames by reason are kept in ``dropped`` for status output; the
    last rejection is in ``last_error`` (a caller logs a version mismatch from it).
    """

    def __init__(self, me: str, keys: Mapping[str, bytes], boot_id: int) -> None:
        for node, key in keys.items():
            if len(key) < MIN_KEY:
                raise ProtocolError("bad-key", f"the key for {node} must be at least {MIN_KEY} bytes")
        self.sender = me
        self.boot_id = boot_id
        self._keys = keys
        self._macs: dict[str, Mac] = {}
        self._seq = 0
        self._guard = ReplayGuard()
        self.dropped: dict[str, int] = {}
        self.last_error: ProtocolError | None = None

    def _mac(self, node: str) -> Mac:
        """The MAC of the link to ``node``, set up at its first frame (KeyError: no key for it)."""
        mac = self._macs.get(node)
        if mac is None:
            mac = self._macs[node] = Mac(self._keys[node])
        return mac

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def make(self, kind: Kind, to: str, payload: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """A signed frame for ``to`` (KeyError for a node this codec has no key for)."""
        seq = self.next_seq()
        return seq, _encode(Frame(kind, self.sender, to, self.boot_id, seq, payload or {}), self._mac(to))

    def poll(self, to: str, nonce: int) -> bytes:
        """A signed poll, byte for byte what ``make(Kind.POLL, to, {"n": nonce})`` gives,
        without a Frame and a JSON encoder's pass for a payload of one number: the appliance
        sends one on every link of every server each cycle."""
        if not 0 <= nonce <= _U64:
            raise ProtocolError("bad-poll", f"nonce {nonce}: not a 64-bit unsigned integer")
        return _signed(_header(Kind.POLL, self.sender, to), self.boot_id, self.next_seq(), b'{"n":%d}' % nonce,
                       self._mac(to))

    def read(self, raw: bytes, expect: str | None = None) -> Frame | None:
        """Authenticate, parse and replay-check a raw frame; None (and counted) if bad.

        ``expect``: the only sender the link it came in on belongs to; anyone else is
        refused before the MAC, and the replay state changes only after it."""
        try:
            sender = peek_sender(raw)
            if expect is not None and sender != expect:
                raise ProtocolError("wrong-sender", f"{sender!r} on {expect}'s link")
            if sender == self.sender:
                raise ProtocolError("own-frame", "reflected frame")
            try:
                mac = self._mac(sender)
            except KeyError:
                raise ProtocolError("unknown-sender", sender) from None
            frame = _decode(raw, mac, sender)
            if frame.receiver != self.sender:
                raise ProtocolError("not-for-me", f"{sender} -> {frame.receiver}")
            self._guard.accept(frame)
        except ProtocolError as exc:
            self.last_error = exc
            self.count_drop(exc.reason)
            return None
        return frame

    def count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
