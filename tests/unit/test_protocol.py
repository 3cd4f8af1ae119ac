"""The wire format: round trips, every rejection, and arbitrary bytes (hypothesis)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.errors import ProtocolError
from firmware.protocol import (MAX_PAYLOAD, Codec, Deframer, Frame, Kind, ReplayGuard, decode, encode,
                               frame_serial)

KEY = b"k" * 32


def frame(seq=1, boot=5, payload=None, kind=Kind.POLL, sender="arbiter"):
    return Frame(kind, sender, boot, seq, payload or {})


def test_round_trip_keeps_every_field():
    f = frame(seq=7, boot=2**63, payload={"re": 6, "role": "primary"}, kind=Kind.REPLY, sender="master")
    assert decode(encode(f, KEY), KEY) == f


@pytest.mark.parametrize("mutate,reason", [
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "bad-mac"),
    (lambda raw: raw[:10], "truncated"),
    (lambda raw: b"XX" + raw[2:], "bad-magic"),
    (lambda raw: raw + b"\x00" * 2000, "oversized"),
    (lambda raw: raw[:20] + bytes([raw[20] ^ 0xFF]) + raw[21:], "bad-mac"),
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
    g.accept(frame(seq=7))  # late but inside the window, first time
    with pytest.raises(ProtocolError, match="replay"):
        g.accept(frame(seq=7))
    with pytest.raises(ProtocolError, match="replay"):
        g.accept(frame(seq=2))  # older than the window
    g.accept(frame(seq=1, boot=6))  # a new boot starts over
    with pytest.raises(ProtocolError, match="replay"):
        g.accept(frame(seq=99, boot=5))  # an older boot never comes back


def test_codec_counts_drops_and_ignores_its_own_frames():
    a, b = Codec("arbiter", KEY, 1), Codec("master", KEY, 1)
    _, raw = a.make(Kind.POLL)
    assert b.read(raw).kind is Kind.POLL
    assert b.read(raw) is None and b.dropped == {"replay": 1}
    assert a.read(raw) is None and a.dropped == {"own-frame": 1}
    assert b.read(raw[:-3]) is None and b.dropped["bad-mac"] == 1


def test_short_key_is_refused():
    with pytest.raises(ProtocolError, match="bad-key"):
        Codec("arbiter", b"short", 1)


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
