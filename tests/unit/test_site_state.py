"""The persisted state: typed conditions, and state files written by older versions."""
from __future__ import annotations

import json

from firmware.site_state import CondKind, Condition, Phase, State


def test_conditions_are_typed_and_round_trip_through_json():
    st = State(phase=Phase.NORMAL, conditions=(Condition(CondKind.LINK_DOWN, "master", "serial"),
                                                Condition(CondKind.OPERATOR_NEEDED)))
    back = State.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back == st
    assert all(isinstance(c, Condition) and isinstance(c.kind, CondKind) for c in back.conditions)


def test_a_state_file_with_conditions_as_text_still_loads():
    old = {"phase": "normal", "primary": "master",
           "conditions": ["operator-needed:", "link-down:master/serial", "split:standby", "late:standby/lan"]}
    st = State.from_dict(old)
    assert st.conditions == (Condition(CondKind.LATE, "standby", "lan"),
                             Condition(CondKind.LINK_DOWN, "master", "serial"),
                             Condition(CondKind.OPERATOR_NEEDED), Condition(CondKind.SPLIT, "standby"))
    assert str(st.conditions[1]) == "link-down:master/serial"


def test_substance_leaves_out_the_reason_and_late_links_only():
    late = Condition(CondKind.LATE, "master", "lan")
    down = Condition(CondKind.LINK_DOWN, "master", "serial")
    assert State(reason="a", conditions=(late,)).substance() == State()
    assert State(conditions=(down, late)).substance() == State(conditions=(down,))
