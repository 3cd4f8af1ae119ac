"""The config schema: every problem named with key, value and bound; cross-field timing
checks; typos are errors; check-config and the daemon refuse a bad file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware import config
from firmware.daemon import check_config
from firmware.errors import ConfigError
from tests.unit.sitekit import site_config

ROOT = Path(__file__).resolve().parents[2]


def problems(**sections) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        site_config(**sections)
    return exc.value.problems


def test_defaults_are_valid():
    cfg = site_config()
    assert cfg.timing.dead_time == 0.2 and cfg.policy.lag_limit_bytes == 0


def test_bound_and_type_errors_name_key_value_and_bound():
    got = problems(timing={"interval": 0.001, "hold_down": "long"})
    assert "timing.interval = 0.001: below the minimum 0.005" in got
    assert "timing.hold_down = 'long': must be float" in got


@pytest.mark.parametrize("key", ["hold_down", "init_dead", "dead_time", "interval"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_infinity_are_refused(key, value):
    # NaN compares false against every bound: without this check hold_down = nan would pass
    # and silently disable the hold-down
    assert f"timing.{key} = {value!r}: must be a finite number" in problems(timing={key: value})


def test_cross_field_errors_come_with_the_per_key_errors():
    got = problems(timing={"init_dead": 0.1}, site={"mode": "sleepy"})
    assert any(p.startswith("site.mode = 'sleepy'") for p in got)
    assert any(p.startswith("timing.init_dead = 0.1: must exceed timing.dead_time") for p in got)


def test_a_cross_check_on_a_bad_key_is_left_out():
    # dead_time is wrong itself: judging init_dead against its default would mislead
    got = problems(timing={"dead_time": "fast", "init_dead": 0.1})
    assert got == ["timing.dead_time = 'fast': must be float"]


def test_unknown_key_is_an_error_not_a_default():
    got = problems(timing={"dead_tme": 3.0})
    assert any(p.startswith("timing.dead_tme: unknown key") for p in got)


@pytest.mark.parametrize("timing,needle", [
    ({"interval": 0.1, "dead_time": 0.25, "warn_time": 0.2}, "must exceed timing.interval x timing.min_misses"),
    ({"dead_time": 5.0, "init_dead": 3.0, "warn_time": 1.0}, "timing.init_dead = 3.0: must exceed timing.dead_time"),
    ({"hold_down": 1.0, "dead_time": 2.0, "warn_time": 1.0, "init_dead": 5.0}, "timing.hold_down = 1.0"),
    ({"warn_time": 0.3}, "timing.warn_time = 0.3: must lie between"),
])
def test_cross_field_timing_checks(timing, needle):
    assert any(needle in p for p in problems(timing=timing))


def test_fencing_relay_needs_relay_and_readback_or_an_explicit_none():
    cfg = site_config()
    data = {"site": {"name": "s", "key_file": "/k"}, "vip": {"address": "192.0.2.1/24", "verify": "none"},
            "servers": [{"name": "a", "address": "192.0.2.2"}, {"name": "b", "address": "192.0.2.3"}]}
    with pytest.raises(ConfigError) as exc:
        config.parse(data)
    assert any("fence_relay and power_sense are required" in p for p in exc.value.problems)
    config.parse({**data, "policy": {"fencing": "none"}})  # said explicitly: accepted
    assert cfg.policy.fencing == "relay"


def test_mock_pins_only_on_the_rig():
    assert any("board.pin_factory = 'mock': only allowed with board.kind = 'hil'" in p
               for p in problems(board={"kind": "pi4", "pin_factory": "mock"}))


def test_check_config_lists_every_problem_and_fails(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nname = "Bad Name"\nkey_file = "/nonexistent"\n[timing]\ninterval = 99\n'
                   '[vip]\naddress = "nope"\n[[servers]]\nname = "a"\n')
    assert check_config(bad, as_json=False) == 1
    err = capsys.readouterr().err
    assert "site.name = 'Bad Name'" in err and "timing.interval = 99" in err and "error:" in err


def test_daemon_refuses_to_start_with_a_bad_safety_setting(tmp_path):
    key = tmp_path / "key"
    key.write_text("x" * 32)
    bad = tmp_path / "arbiter.toml"
    bad.write_text(f'[site]\nname = "s"\nkey_file = "{key}"\nstate_dir = "{tmp_path}"\n'
                   '[timing]\nhold_down = 0.5\n[vip]\naddress = "192.0.2.1/24"\nverify = "none"\n'
                   '[policy]\nfencing = "none"\n[[servers]]\nname = "a"\naddress = "192.0.2.2"\n'
                   '[[servers]]\nname = "b"\naddress = "192.0.2.3"\n')
    done = subprocess.run([sys.executable, "-m", "firmware.daemon", "--config", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1  # bad config
    assert "timing.hold_down = 0.5: below the minimum 1.0" in done.stderr and "not started" in done.stderr


def test_short_key_is_refused(tmp_path):
    key = tmp_path / "key"
    key.write_text("short")
    with pytest.raises(ConfigError, match="key is 5 bytes, minimum 16"):
        config.read_key(key)


def test_serial_line_must_carry_the_heartbeat():
    got = problems(timing={"interval": 0.02, "warn_time": 0.06, "dead_time": 0.1, "min_misses": 3})
    assert any(p.startswith("servers[0].baudrate = 115200: too slow for timing.interval = 0.02") for p in got)
    site_config()  # the defaults (0.04 s at 115200 baud) fit


def test_service_and_reachability_settings_are_bounded():
    got = problems(policy={"unhealthy_grace": 0.1, "reachability_grace": "soon"}, vip={"audit_interval": -1.0})
    assert "policy.unhealthy_grace = 0.1: below the minimum 0.5" in got
    assert "policy.reachability_grace = 'soon': must be float" in got
    assert "vip.audit_interval = -1.0: below the minimum 0.0" in got


def test_ping_targets_must_be_addresses():
    got = problems(ping={"targets": ["192.0.2.1", "gateway.example"]})
    assert got == ["ping.targets = ['192.0.2.1', 'gateway.example']: 'gateway.example' is not an IPv4 address"]


def test_sync_loss_policy_is_a_choice_with_a_bounded_grace():
    assert site_config().policy.sync_loss == "block"
    assert site_config(policy={"sync_loss": "degrade", "sync_loss_grace": 0.5}).policy.sync_loss_grace == 0.5
    assert any("policy.sync_loss = 'drop': must be one of block, degrade" in p
               for p in problems(policy={"sync_loss": "drop"}))
    assert any("policy.sync_loss_grace = 0.0: below the minimum 0.1" in p
               for p in problems(policy={"sync_loss_grace": 0.0}))


def _level2(fence: dict, **server: str) -> list[str]:
    data = {"site": {"name": "s", "key_file": "/k"}, "vip": {"address": "192.0.2.1/24", "verify": "none"},
            "fence": fence,
            "servers": [{"name": "a", "address": "192.0.2.2", "fence_relay": "relay1", "power_sense": "sense1",
                         **server},
                        {"name": "b", "address": "192.0.2.3", "fence_relay": "relay2", "power_sense": "sense2"}]}
    try:
        config.parse(data)
    except ConfigError as exc:
        return exc.problems
    return []


def test_fence_level2_needs_the_ups_and_a_user_allowed_the_command():
    creds = {"ups_username": "fencer", "ups_password_file": "/etc/arbiter/nut-fence.pw"}
    assert _level2(creds, ups="a-ups@10.0.0.5", fence_ups_command="outlet.2.load.off") == []
    assert any("servers[0].fence_ups_command = 'load.off': needs servers[0].ups" in p
               for p in _level2(creds, fence_ups_command="load.off"))
    assert any("needs fence.ups_username and fence.ups_password_file" in p
               for p in _level2({}, ups="a-ups@10.0.0.5", fence_ups_command="load.off"))
    assert any("servers[0].fence_ups_command = 'shutdown.return': must match" in p
               for p in _level2(creds, ups="a-ups@10.0.0.5", fence_ups_command="shutdown.return"))


def test_fencing_none_needs_a_self_fence_wait_longer_than_dead_time():
    assert any("timing.self_fence_wait = 0.5: must exceed timing.dead_time = 1.0" in p for p in problems(
        policy={"fencing": "none"}, timing={"self_fence_wait": 0.5, "dead_time": 1.0, "warn_time": 0.5,
                                            "init_dead": 5.0}))
