"""A frame's MAC from a keyed HMAC object set up once (protocol.Mac) is HMAC-SHA256, byte for
byte, for keys shorter than, as long as and longer than SHA-256's block."""
from __future__ import annotations

import hashlib
import hmac

from hypothesis import example, given
from hypothesis import strategies as st

from firmware.protocol import Codec, Frame, Kind, Mac, decode, encode


@given(key=st.binary(min_size=0, max_size=200), msg=st.binary(max_size=1200))
@example(key=b"k" * 63, msg=b"")
@example(key=b"k" * 64, msg=b"x")
@example(key=b"k" * 65, msg=b"x" * 64)
def test_mac_is_hmac_sha256(key: bytes, msg: bytes) -> None:
    mac = Mac(key)
    assert mac.digest(msg) == hmac.new(key, msg, hashlib.sha256).digest()
    assert mac.digest(msg) == mac.digest(msg)  # its keyed object is copied, never used up


def test_a_codec_signs_and_reads_as_the_frame_functions_do() -> None:
    key = b"0123456789abcdef" * 4
    sender, receiver = Codec("master", {"arbiter": key}, 7), Codec("arbiter", {"master": key}, 1)
    raw = sender.make(Kind.REPLY, "arbiter", {"re": 5, "healthy": True})[1]
    assert raw[-32:] == hmac.new(key, raw[:-32], hashlib.sha256).digest()
    assert raw == encode(Frame(Kind.REPLY, "master", "arbiter", 7, 1, {"re": 5, "healthy": True}), key)
    assert receiver.read(raw, expect="master") == decode(raw, key)
    poll = receiver.poll("master", 2**64 - 1)
    assert decode(poll, key).payload == {"n": 2**64 - 1} and sender.read(poll) is not None
