"""A frame read is built without Frame's __init__ (protocol._frame): it must be the very value
__init__ builds, which holds while Frame has no __post_init__ and every field is set by init."""
from __future__ import annotations

import dataclasses

import pytest

from firmware.protocol import Codec, Frame, Kind, _frame


def test_a_frame_built_for_a_read_is_what_init_builds() -> None:
    built = _frame(Kind.ACK, "master", "arbiter", 7, 2, {"id": "x", "done": True})
    made = Frame(Kind.ACK, "master", "arbiter", 7, 2, {"id": "x", "done": True})
    assert built == made and vars(built) == vars(made) and type(built) is Frame
    assert list(vars(built)) == [f.name for f in dataclasses.fields(Frame)]


def test_frame_has_no_post_init_and_no_field_outside_init() -> None:
    assert not hasattr(Frame, "__post_init__")
    assert all(f.init for f in dataclasses.fields(Frame))
    assert dataclasses.fields(Frame)[-1].default_factory is dict  # the one default: a payload of its own


def test_a_frame_read_is_frozen_like_any_frame() -> None:
    key = b"k" * 32
    raw = Codec("master", {"arbiter": key}, 7).make(Kind.REPLY, "arbiter", {"re": 1, "healthy": True})[1]
    frame = Codec("arbiter", {"master": key}, 1).read(raw, expect="master")
    assert frame is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.seq = 9  # type: ignore[misc]
