"""The wire format: round trips, every rejection, and arbitrary bytes (hypothesis)."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import struct
from collections.abc import Mapping

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from firmware.errors import ProtocolError
from firmware.links import LinkRecord, Poller
from firmware.model import AgentReport, Channel, Replication, Role
from firmware.protocol import (MAGIC, MAX_FRAME, MAX_PAYLOAD, MAX_SENDER, VERSION, Codec, Deframer, Frame, Kind,
                               ReplayGuard, decode, encode, frame_serial)

KEY = b"k" * 32


def frame(seq=1, boot=5, payload=None, kind=Kind.POLL, sender="arbiter", receiver="master"):
    return Frame(kind, sender, receiver, boot, seq, payload or {})


def test_round_trip_keeps_every_field():
    f = frame(seq=7, boot=2**63, payload={"re": 6, "role": "primary"}, kind=Kind.REPLY, sender="master",
              receiver="arbiter")
    assert decode(encode(f, KEY), KEY) == f


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=2**56))
@example(0, 0)
@example(2**64 - 1, 2**56)
def test_a_poll_is_byte_for_byte_the_frame_make_builds(nonce, boot):
    """Codec.poll skips the Frame and the JSON encoder; the wire must not tell the difference."""
    fast, general = Codec("arbiter", {"master": KEY}, boot), Codec("arbiter", {"master": KEY}, boot)
    for _ in range(3):  # and each takes the next sequence number
        raw = fast.poll("master", nonce)
        assert raw == general.make(Kind.POLL, "master", {"n": nonce})[1]
    assert decode(raw, KEY) == frame(seq=3, boot=boot, payload={"n": nonce})


def test_a_poll_nonce_outside_64_bits_is_refused():
    for nonce in (-1, 2**64):
        with pytest.raises(ProtocolError, match="bad-poll|64-bit"):
            Codec("arbiter", {"master": KEY}, 1).poll("master", nonce)


@pytest.mark.parametrize("mutate,reason", [
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "bad-mac"),
    (lambda raw: raw[:10], "truncated"),
    (lambda raw: b"XX" + raw[2:], "bad-magic"),
    (lambda raw: raw + b"\x00" * 2000, "oversized"),
    (lambda raw: raw[:20] + bytes([raw[20] ^ 0xFF]) + raw[21:], "bad-mac"),
    (lambda raw: raw[:2] + b"\x01" + raw[3:], "bad-version"),
])
def test_damaged_frames_are_rejected_with_a_reason(mutate, reason):
    with pytest.raises(ProtocolError) as exc:
        decode(mutate(encode(frame(), KEY)), KEY)
    assert exc.value.reason == reason


def test_wrong_key_is_a_forgery():
    with pytest.raises(ProtocolError, match="bad-mac"):
        decode(encode(frame(), KEY), b"x" * 32)


def test_oversized_payload_cannot_be_sent():
    with pytest.raises(ProtocolError, match="oversized"):
        encode(frame(payload={"x": "a" * MAX_PAYLOAD}), KEY)


def test_replay_guard_window():
    g = ReplayGuard(window=8)
    g.accept(frame(seq=10))
    with pytest.raises(ProtocolError, match="replay"):
        g.accept(frame(seq=10))
    with pytest.raises(ProtocolError, match="replay"):
        g.accept(frame(seq=7))  # sent before the first frame of this boot seen here: counts as seen
    g.accept(frame(seq=14))
    g.accept(frame(seq=12))  # late but inside the window, first time
    with pytest.raises(ProtocolError, match="replay"):
        g.accept(frame(seq=12))
    with pytest.raises(ProtocolError, match="replay"):
        g.accept(frame(seq=2))  # older than the window
    g.accept(frame(seq=1, boot=6))  # a new boot starts over
    with pytest.raises(ProtocolError, match="replay"):
        g.accept(frame(seq=99, boot=5))  # an older boot never comes back


def test_codec_counts_drops_and_ignores_its_own_frames():
    a, b = Codec("arbiter", {"master": KEY}, 1), Codec("master", {"arbiter": KEY}, 1)
    _, raw = a.make(Kind.POLL, "master")
    assert b.read(raw).kind is Kind.POLL
    assert b.read(raw) is None and b.dropped == {"replay": 1}
    assert a.read(raw) is None and a.dropped == {"own-frame": 1}
    assert b.read(raw[:-3]) is None and b.dropped["bad-mac"] == 1


def test_short_key_is_refused():
    with pytest.raises(ProtocolError, match="bad-key"):
        Codec("arbiter", {"master": b"short"}, 1)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000))
def test_decode_of_arbitrary_bytes_only_raises_protocol_errors(data):
    try:
        decode(data, KEY)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=8), st.integers(min_value=1, max_value=64))
def test_deframer_survives_garbage_and_still_reads_the_next_frame(chunks, split):
    good = encode(frame(seq=3, payload={"n": 1}), KEY)
    stream = b"".join(chunks) + b"\x00" + frame_serial(good)
    d = Deframer()
    out = []
    for i in range(0, len(stream), split):
        out += d.feed(stream[i:i + split])
    assert out and out[-1] == good
    for raw in out[:-1]:
        try:
            decode(raw, KEY)
        except ProtocolError:
            pass


def test_deframer_drops_an_endless_run_without_delimiters():
    d = Deframer()
    assert d.feed(b"\x01" * 10000) == []
    assert d.errors.get("oversized", 0) >= 1
    good = encode(frame(), KEY)
    assert d.feed(b"\x00" + frame_serial(good)) == [good]


# ---------------------------------------------------------------- signed frames with arbitrary content
# Random bytes never pass the MAC, so the tests below sign whatever they build, the way encode() does:
# HMAC-SHA256 with the site key over every byte before the MAC. That fuzzes the parsing behind the MAC.

U64 = st.integers(min_value=0, max_value=2**64 - 1)
ASCII_IDS = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=MAX_SENDER)
ROLES = [r.value for r in Role]


def sign(msg: bytes, key: bytes = KEY) -> bytes:
    return msg + hmac.new(key, msg, hashlib.sha256).digest()


def _json_values(finite: bool):
    huge = st.builds(lambda digit, exp: digit * 10**exp, st.integers(-9, 9), st.integers(0, 600))
    scalars = (st.none() | st.booleans() | st.integers() | huge
               | st.floats(allow_nan=False, allow_infinity=not finite) | st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


_JSON = {finite: _json_values(finite) for finite in (False, True)}


def json_values(finite: bool = False):
    return _JSON[finite]


def dumps(value, ascii_only: bool = True) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_only).encode()


def bodies(max_depth: int):
    """(the JSON value if the body is exactly that value's JSON, else None; the body bytes)."""
    objects = st.dictionaries(st.text(max_size=8), json_values(), max_size=6)
    untagged = st.one_of(
        st.binary(max_size=300),  # mostly not UTF-8
        st.text(max_size=100).map(str.encode),  # UTF-8, rarely JSON
        objects.map(lambda v: json.dumps(v).encode("utf-16")),
        st.binary(max_size=50).map(lambda b: b'{"s":"' + b + b'"}'),  # JSON-shaped, invalid UTF-8 inside
        st.integers(1, max_depth).flatmap(lambda d: st.sampled_from([  # deep nesting
            b"[" * d + b"]" * d, b"[" * d, b'{"a":' + b"[" * d + b"]" * d + b"}", b'{"a":' * d + b"0" + b"}" * d])),
        st.integers(1, 1100).map(lambda k: b'{"n":' + b"9" * k + b"}"),  # huge numbers
        st.integers(1, 400).map(lambda k: b'{"n":1e' + b"9" * k + b"}"),
        st.sampled_from([b'{"n":1e999}', b'{"n":-1e999}', b'{"n":NaN}', b'{"n":Infinity}', b"[1e999]", b"-0"]),
    ).map(lambda body: (None, body))
    return st.one_of(
        objects.map(lambda v: (v, dumps(v))),
        objects.map(lambda v: (v, dumps(v, ascii_only=False))),
        json_values().map(lambda v: (v, dumps(v))),  # JSON, mostly not an object
        untagged,
    )


_BODIES = {1100: bodies(1100)}


@st.composite
def signed_frames(draw, max_depth: int = 1100):
    """A signed raw frame with every header field possibly wrong, and the Frame decode must
    return for it if every field is right (else None)."""
    def broken() -> bool:
        return draw(st.integers(0, 3)) == 3

    version = draw(st.integers(0, 255)) if broken() else VERSION
    kind = draw(st.integers(0, 255)) if broken() else int(draw(st.sampled_from(Kind)))
    if broken():
        sender = draw(st.one_of(st.binary(max_size=40), st.text(min_size=1, max_size=40).map(str.encode),
                                ASCII_IDS.map(lambda s: (s * 3).encode())))
    else:
        sender = draw(ASCII_IDS).encode()
    n = draw(st.integers(0, 255)) if broken() else len(sender)
    receiver = draw(st.binary(max_size=40)) if broken() else draw(st.just("arbiter") | ASCII_IDS).encode()
    r = draw(st.integers(0, 255)) if broken() else len(receiver)
    boot, seq = draw(U64), draw(U64)
    payload, body = draw(_BODIES[max_depth] if max_depth in _BODIES else bodies(max_depth))
    m = draw(st.integers(0, 0xFFFF)) if broken() else len(body)
    raw = sign(MAGIC + bytes([version, kind, n]) + sender + bytes([r]) + receiver
               + struct.pack(">QQH", boot, seq, m) + body)
    valid = (version == VERSION and kind in Kind._value2member_map_ and 1 <= n <= MAX_SENDER
             and n == len(sender) and sender.isascii() and 1 <= r <= MAX_SENDER and r == len(receiver)
             and receiver.isascii() and m == len(body) and isinstance(payload, dict) and len(raw) <= MAX_FRAME)
    return raw, Frame(Kind(kind), sender.decode(), receiver.decode(), boot, seq, payload) if valid else None


def deep_frame(depth: int = 1050, sender: bytes = b"m") -> bytes:
    """Signed, within MAX_FRAME, payload '[[[[...' nested past the interpreter's recursion limit."""
    body = b"[" * depth
    return sign(MAGIC + bytes([VERSION, Kind.REPLY, len(sender)]) + sender + b"\x07arbiter"
                + struct.pack(">QQH", 1, 1, len(body)) + body)


class AnyKey(Mapping):
    """Every node has the test key: the codec under test reads frames from any sender."""

    def __getitem__(self, node: str) -> bytes:
        return KEY

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


def assert_well_formed(got: Frame) -> None:
    assert isinstance(got, Frame) and isinstance(got.kind, Kind)
    assert isinstance(got.sender, str) and 1 <= len(got.sender) <= MAX_SENDER and got.sender.isascii()
    assert isinstance(got.receiver, str) and 1 <= len(got.receiver) <= MAX_SENDER and got.receiver.isascii()
    assert 0 <= got.boot_id < 2**64 and 0 <= got.seq < 2**64
    assert isinstance(got.payload, dict)


def check_decode(case) -> None:
    raw, expected = case
    try:
        got = decode(raw, KEY)
    except ProtocolError as exc:
        assert expected is None, f"a well-formed signed frame was rejected: {exc}"
        return
    assert_well_formed(got)
    if expected is not None:
        assert got == expected


@settings(max_examples=200, deadline=None)
@given(signed_frames())
def test_decode_of_signed_frames_with_arbitrary_content_only_raises_protocol_errors(case):
    check_decode(case)


# Hypothesis raises the recursion limit while it runs a test, so nesting that breaks json.loads
# at the default limit (as in the daemon's reader threads) is only seen outside @given.
def test_decode_of_a_deeply_nested_signed_payload_raises_protocol_error():
    with pytest.raises(ProtocolError):
        decode(deep_frame(), KEY)


# ---------------------------------------------------------------- Codec.read

def reply_payloads(re, finite: bool = True):
    """Reply payloads, each field either as the protocol says or arbitrary JSON, any key missing."""
    junk = json_values(finite)
    maybe_bool = st.none() | st.booleans() | junk
    repl = st.fixed_dictionaries({}, optional={
        "in_sync": maybe_bool, "lag_bytes": st.none() | st.integers(0, 2**63) | junk,
        "lag_s": st.none() | st.floats(0, 1e6) | junk, "peer_alive": maybe_bool,
        "sync": st.none() | st.lists(st.sampled_from(["standby", "db3"])) | junk})
    fields = {"role": st.sampled_from(ROLES) | junk, "vip": st.booleans() | junk, "repl": repl | junk,
              "hears_primary": maybe_bool, "reach": maybe_bool, "detail": st.text(max_size=40) | junk,
              "unhealthy_s": st.none() | st.floats(0, 1e6) | junk}
    core = {"re": re | junk, "healthy": st.booleans() | junk}
    return st.fixed_dictionaries(core, optional=fields) | st.fixed_dictionaries({}, optional={**core, **fields})


def ack_payloads(cmd_id, finite: bool = True):
    junk = json_values(finite)
    fields = {"id": cmd_id | st.text(max_size=20) | junk, "ok": st.booleans() | junk,
              "done": st.booleans() | junk, "detail": st.text(max_size=40) | junk}
    done = st.fixed_dictionaries({"id": cmd_id, "done": st.just(True)},
                                 optional={"ok": fields["ok"], "detail": fields["detail"]})
    return done | st.fixed_dictionaries(fields) | st.fixed_dictionaries({}, optional=fields)


def encoded_frames():
    payloads = (st.dictionaries(st.text(max_size=8), json_values(), max_size=6)
                | reply_payloads(st.integers(0, 2**64)) | ack_payloads(st.text(max_size=20))
                | st.fixed_dictionaries({"id": st.text(max_size=20), "op": st.sampled_from(["promote", "x"]),
                                         "args": st.dictionaries(st.text(max_size=8), json_values(), max_size=3)}))
    names = st.sampled_from(["master", "slave", "arbiter"]) | ASCII_IDS
    frames = st.builds(Frame, st.sampled_from(Kind), names, names, st.integers(0, 3) | U64,
                       st.integers(0, 70) | U64, payloads)

    def try_encode(f: Frame) -> bytes:
        try:
            return encode(f, KEY)
        except ProtocolError:
            return b""  # oversized: read() still has to drop it cleanly
    return frames.map(try_encode)


def codec_inputs():
    return st.lists(encoded_frames() | signed_frames().map(lambda case: case[0]) | st.binary(max_size=200),
                    max_size=4)


def check_codec(raws) -> None:
    codec = Codec("arbiter", AnyKey(), 1)
    accepted = 0
    for raw in raws:
        got = codec.read(raw)
        assert got is None or isinstance(got, Frame)
        if got is not None:
            assert_well_formed(got)
            assert got.sender != "arbiter" and got.receiver == "arbiter"
            accepted += 1
    assert accepted + sum(codec.dropped.values()) == len(raws)  # every frame is either returned or counted


@settings(max_examples=200, deadline=None)
@given(codec_inputs())
def test_codec_read_of_arbitrary_signed_frames_returns_a_frame_or_none(raws):
    check_codec(raws)


def test_codec_read_of_a_deeply_nested_signed_frame_returns_none():
    codec = Codec("arbiter", AnyKey(), 1)
    assert codec.read(deep_frame()) is None
    assert codec.dropped == {"bad-payload": 1}


# ---------------------------------------------------------------- Poller._receive

class _PollSeq:
    """Stands for the newest outstanding poll's nonce, converted by ``conv``, filled in at run time."""

    def __init__(self, conv) -> None:
        self.conv = conv

    def __repr__(self) -> str:
        return f"<poll seq as {self.conv.__name__}>"


POLL, POLL_STR, POLL_FLOAT = _PollSeq(int), _PollSeq(str), _PollSeq(float)
CMD = "<command id>"  # stands for the id of the command sent just before
POLL_REFS = st.just(POLL) | st.sampled_from([POLL, POLL_STR, POLL_FLOAT])


def poller_frames(finite: bool):
    return st.tuples(st.sampled_from(["master", "master", "intruder"]),
                     st.tuples(st.just(Kind.REPLY), reply_payloads(POLL_REFS, finite))
                     | st.tuples(st.just(Kind.ACK), ack_payloads(st.just(CMD), finite)))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bench():
    """A Poller with one server reachable only by UDP on a free loopback port, plus agents' codecs."""
    poller = Poller(Codec("arbiter", {"master": KEY}, 1), [("master", "", 0, "127.0.0.1", _free_udp_port())],
                    clock=lambda: 100.0, bind=("127.0.0.1", 0))
    agents = {name: Codec(name, {"arbiter": KEY}, 7) for name in ("master", "intruder")}
    try:
        yield poller, agents
    finally:
        poller.close()


def assert_well_typed(record: LinkRecord) -> None:
    assert isinstance(record, LinkRecord)
    r = record.report
    if r is None:
        return
    assert isinstance(record.last_seen, float) and isinstance(record.rtt_s, float)
    assert isinstance(r, AgentReport) and isinstance(r.role, Role)
    assert type(r.healthy) is bool and type(r.vip) is bool
    assert r.hears_primary is None or type(r.hears_primary) is bool
    assert type(r.detail) is str and len(r.detail) <= 200
    assert isinstance(r.repl, Replication)
    assert r.repl.in_sync is None or type(r.repl.in_sync) is bool
    assert r.repl.peer_alive is None or type(r.repl.peer_alive) is bool
    assert r.repl.lag_bytes is None or type(r.repl.lag_bytes) is int
    assert r.repl.lag_s is None or type(r.repl.lag_s) is float


def poller_step(bench, sender: str, kind: Kind, template: dict):
    """Send a poll and a command, feed the Poller one signed frame; check it was dropped or used."""
    poller, agents = bench
    poller.poll_all()
    seq = next(reversed(poller._links[("master", Channel.LAN)].polls))  # the newest poll's nonce
    cmd_id = poller.send_command("master", "promote", {})
    payload = {k: v.conv(seq) if isinstance(v, _PollSeq) else cmd_id if v == CMD else v
               for k, v in template.items()}
    try:
        _, raw = agents[sender].make(kind, "arbiter", payload)
    except ProtocolError:
        assume(False)  # too big to send
    drops_before = sum(poller.dropped().values())
    before = poller.snapshot()["master"][Channel.LAN]
    poller._receive("master", Channel.LAN, raw)
    dropped = sum(poller.dropped().values()) - drops_before
    after = poller.snapshot()["master"][Channel.LAN]
    assert_well_typed(after)
    stored = after is not before
    result = poller.wait_result(cmd_id, 0.0)
    del poller._commands[cmd_id]  # unanswered commands would be resent by every later example's poll
    if kind is Kind.REPLY:
        assert stored + dropped == 1, "a reply must be either stored or counted as dropped"
        assert result is None
    else:
        assert not stored and dropped <= 1 and (sender == "master" or dropped == 1)
        assert result is None or dropped == 0
        if result is not None:  # acknowledged: the ack named this command and said done
            assert sender == "master" and payload.get("id") == cmd_id and payload.get("done") is True
            assert type(result[0]) is bool and type(result[1]) is str and len(result[1]) <= 300
    return payload, stored, result


@settings(max_examples=200, deadline=None)
@given(poller_frames(finite=True))
def test_poller_receive_of_arbitrary_replies_and_acks_drops_or_stores_well_typed(bench, case):
    sender, (kind, template) = case
    poller_step(bench, sender, kind, template)


def test_poller_receive_of_a_deeply_nested_signed_frame_counts_it(bench):
    poller, _ = bench
    before = sum(poller.dropped().values())
    poller._receive("master", Channel.LAN, deep_frame())
    assert sum(poller.dropped().values()) == before + 1


@settings(max_examples=200, deadline=None, report_multiple_bugs=False)
@given(poller_frames(finite=False))
@example(("master", (Kind.REPLY, {"re": POLL, "healthy": True, "repl": {"lag_bytes": float("inf")}})))
@example(("master", (Kind.REPLY, {"re": float("inf"), "healthy": True})))
@example(("master", (Kind.REPLY, {"re": POLL, "healthy": True, "repl": {"lag_s": 10**400}})))  # no float holds it
def test_poller_receive_of_replies_with_infinite_numbers_never_raises(bench, case):
    sender, (kind, template) = case
    poller_step(bench, sender, kind, template)


def _is_num(v) -> bool:
    return type(v) in (int, float)



def reply_conforms_strict(p: dict) -> bool:
    repl = p.get("repl", {})
    if not (repl is None or isinstance(repl, dict)):
        return False
    repl = repl or {}
    lag_s = repl.get("lag_s")
    return (type(p.get("re")) is int and type(p.get("healthy")) is bool and p.get("role", "unknown") in ROLES
            and type(p.get("vip", False)) is bool and p.get("hears_primary") in (None, True, False)
            and p.get("reach") in (None, True, False)
            and (p.get("unhealthy_s") is None or (_is_num(p["unhealthy_s"]) and p["unhealthy_s"] >= 0))
            and type(p.get("detail", "")) is str
            and repl.get("in_sync") in (None, True, False) and repl.get("peer_alive") in (None, True, False)
            and (repl.get("lag_bytes") is None or type(repl.get("lag_bytes")) is int)
            and (lag_s is None or _is_num(lag_s)))


@settings(max_examples=200, deadline=None, report_multiple_bugs=False)
@given(poller_frames(finite=True))
@example(("master", (Kind.REPLY, {"re": POLL, "healthy": "false"})))
@example(("master", (Kind.ACK, {"id": CMD, "ok": "false", "done": True})))
def test_poller_stores_only_replies_and_acks_that_follow_the_protocol(bench, case):
    sender, (kind, template) = case
    payload, stored, result = poller_step(bench, sender, kind, template)
    if stored:
        assert reply_conforms_strict(payload), f"report stored from a malformed reply {payload!r}"
    if result is not None:
        assert type(payload.get("ok")) is bool and type(payload.get("detail", "")) is str, \
            f"command result taken from a malformed ack {payload!r}"


# ---------------------------------------------------------------- serial deframer

@settings(max_examples=200, deadline=None)
@given(noise=st.binary(max_size=3000) | st.lists(st.binary(max_size=400) | st.just(b"\x01" * 1200)
                                                | st.just(b"\x00"), max_size=5).map(b"".join),
       sender=ASCII_IDS, text=st.text(st.characters(max_codepoint=0x7F), max_size=1000),
       cuts=st.lists(st.integers(1, 700), max_size=20))
def test_deframer_after_arbitrary_noise_yields_the_valid_frames(noise, sender, text, cuts):
    try:
        first = encode(Frame(Kind.REPLY, sender, "arbiter", 1, 1, {"p": text}), KEY)
    except ProtocolError:
        assume(False)
    last = encode(frame(seq=2, payload={"n": 1}), KEY)
    stream = noise + frame_serial(first) + frame_serial(last)
    d, out, pos = Deframer(), [], 0
    for cut in cuts:
        out += d.feed(stream[pos:pos + cut])
        pos += cut
    out += d.feed(stream[pos:])
    assert out[-1] == last and out.count(last) == 1
    if not noise or noise.endswith(b"\x00"):  # the noise ended at a delimiter: nothing of it sticks to `first`
        assert out[-2] == first
    for raw in out:
        if raw not in (first, last):
            with pytest.raises(ProtocolError):
                decode(raw, KEY)
