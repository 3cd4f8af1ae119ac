"""UPS edges (start-up silent, real changes only) and the pure UPS policy."""
from __future__ import annotations

from firmware.model import UpsObs
from firmware.ups import parse_spec
from firmware.ups_policy import ups_events
from firmware.ups_policy import ups_intent

import pytest
from firmware.errors import ConfigError


def u(flags: str, runtime: float = 1800, reachable: bool = True) -> UpsObs:
    return UpsObs("u", reachable, frozenset(flags.split()), 50.0, runtime)


LOST = UpsObs("u", False, error="driver not connected")


@pytest.mark.parametrize("prev,cur,events", [
    (None, u("OB DISCHRG LB"), []),
    (u("OL"), u("OB DISCHRG"), ["ups-on-battery"]),
    (u("OB"), u("OB LB"), ["ups-low-battery"]),
    (u("OB", runtime=900), u("OB", runtime=100), ["ups-low-battery"]),
    (u("OB LB"), u("OL CHRG"), ["ups-power-restored"]),
    (u("OL"), LOST, ["ups-monitoring-lost"]),
    (LOST, LOST, []),
    (LOST, u("OL"), ["ups-monitoring-restored"]),
    # across a gap prev keeps the last reading's flags: what changed unseen is still reported
    (u("OL", reachable=False), u("OB LB"), ["ups-monitoring-restored", "ups-on-battery", "ups-low-battery"]),
    (u("OB", reachable=False), u("OB"), ["ups-monitoring-restored"]),
    (u("OL"), u("OL CHRG"), []),
])
def test_events_only_on_real_changes(prev, cur, events):
    assert ups_events(prev, cur, low_runtime_s=300) == events


def test_spec_parsing_and_errors():
    assert parse_spec("ups1@10.0.0.5") == ("ups1", "10.0.0.5", 3493)
    assert parse_spec("ups1@nut.example:3500") == ("ups1", "nut.example", 3500)
    with pytest.raises(ConfigError, match="ups@host"):
        parse_spec("10.0.0.5")


def intent(ups, candidates=("standby",), fresh=None, switchover=True):
    return ups_intent("master", ups, list(candidates), fresh or {}, 300.0, switchover)


def test_on_battery_alone_is_no_action():
    assert intent({"master": u("OB"), "standby": u("OL")}).kind == "none"


def test_low_primary_switches_to_a_standby_on_line():
    i = intent({"master": u("OB LB"), "standby": u("OL")})
    assert (i.kind, i.target) == ("switchover", "standby") and "master's UPS is low" in i.reason


def test_low_runtime_counts_as_low_battery():
    assert intent({"master": u("OB", runtime=120), "standby": u("OL")}).kind == "switchover"


def test_no_standby_on_line_means_backup_then_shutdown_primary_last():
    i = intent({"master": u("OB LB"), "standby": u("OB")})
    assert i.kind == "backup-shutdown" and i.backup == "master" and i.shutdown_order == ("standby", "master")
    assert intent({"master": u("OB LB"), "standby": u("OL")}, switchover=False).kind == "backup-shutdown"


def test_all_on_battery_backs_up_and_orders_by_freshness():
    i = intent({"master": u("OB"), "standby": u("OB"), "standby2": u("OB")},
               fresh={"master": 0, "standby": 0, "standby2": 5000})
    assert i.kind == "all-on-battery" and i.backup == "master"
    assert i.shutdown_order == ("standby2", "standby", "master")


def test_unknown_or_unreachable_data_never_acts():
    assert intent({"master": None, "standby": u("OL")}).kind == "none"
    assert intent({"master": LOST, "standby": u("OL")}).kind == "none"


def test_all_on_battery_and_a_standby_running_low_carries_out_the_order():
    i = intent({"master": u("OB"), "standby": u("OB LB")}, fresh={"master": 0, "standby": 100})
    assert i.kind == "backup-shutdown" and i.backup == "master" and i.shutdown_order == ("standby", "master")
    assert "standby runs low" in i.reason
