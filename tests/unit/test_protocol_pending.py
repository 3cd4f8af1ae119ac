"""A serial reader waits for the rest of a frame it has part of (Deframer.pending, from the
frame's header): never past the frame's end by more than COBS's overhead guess, never for
junk longer than the largest frame, and not at all between frames."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware.protocol import (MAX_FRAME, MAX_HEADER, MIN_HEADER, Codec, Deframer, Kind, frame_length, frame_serial,
                               header_length)

KEY = b"k" * 32
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=32)


@given(sender=NAMES, receiver=NAMES, detail=st.text(max_size=150), chunk=st.integers(1, 64))
def test_pending_counts_down_to_the_frame_end(sender: str, receiver: str, detail: str, chunk: int) -> None:
    raw = Codec(sender, {receiver: KEY}, 7).make(Kind.REPLY, receiver, {"re": 1, "detail": detail})[1]
    wire = frame_serial(raw)
    deframer = Deframer()
    for at in range(chunk, len(wire), chunk):
        assert deframer.feed(wire[at - chunk:at]) == []
        pending = deframer.pending()
        assert pending >= 1
        assert at + pending <= len(wire) + len(raw) // 254  # COBS's overhead is guessed high
        if at >= header_length(raw) + 1:  # the header is in (after COBS's first byte): exact but for that guess
            assert at + pending >= len(wire)
    assert deframer.feed(wire[len(wire) - (len(wire) % chunk or chunk):]) == [raw]
    assert deframer.pending() == 0


def test_the_header_tells_the_length() -> None:
    raw = Codec("master", {"arbiter": KEY}, 7).make(Kind.ACK, "arbiter", {"id": "x", "done": True})[1]
    assert header_length(raw) == MIN_HEADER - 2 + len("master") + len("arbiter")
    assert frame_length(raw) == len(raw)
    assert all(frame_length(raw[:n]) is None for n in range(header_length(raw)))
    assert all(MIN_HEADER <= header_length(raw[:n]) <= header_length(raw) for n in range(len(raw)))
    assert header_length(raw) <= MAX_HEADER


def test_junk_is_not_waited_for() -> None:
    """Line noise has no length to believe: bytes that do not begin as a frame of this version
    are read as they come, and a header that does is never believed past the largest frame."""
    deframer = Deframer()
    deframer.feed(b"\xff" * 40)  # as a header: ids of 255 characters, a payload of 65535
    assert deframer.pending() == 0
    deframer.feed(b"\x00\x02B")  # a delimiter, then "B" of the magic: perhaps a frame
    assert deframer.pending() >= 1
    deframer.feed(b"\x00\x02C")
    assert deframer.pending() == 0
    deframer.feed(b"\x00" + bytes((0xFF,)) + b"BA\x02\x03" + b"\xff" * 60)  # magic, version, an id of 255
    assert deframer.pending() == 0
    deframer.feed(b"\x00" + bytes((0xFF,)) + b"BA\x02\x03\x01m\x01a" + b"\xff" * 60)  # a payload of 65535
    assert 1 <= deframer.pending() <= MAX_FRAME + MAX_FRAME // 254 + 2
    deframer.feed(b"\x01" * (Deframer._MAX_ENCODED + 1))  # overlong: skipped to the next delimiter
    assert deframer.pending() == 0
    deframer.feed(b"\x00")
    assert deframer.pending() == 0
