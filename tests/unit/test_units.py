"""The systemd units, the watchdog drop-in and the udev rule: real `systemd-analyze verify`
on the units (with the daemon's path pointed at a stub, the only change), and the settings
the appliance depends on."""
from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "board" / "systemd"
UDEV = Path(__file__).resolve().parents[2] / "board" / "udev" / "99-arbiter.rules"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNITS / name)
    return parser


@pytest.mark.parametrize("name", ["arbiterd.service", "arbiter-install.service", "arbiter-firstboot.service"])
def test_systemd_analyze_verify_is_clean(name, tmp_path):
    stub = tmp_path / "arbiterd"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = (UNITS / name).read_text().replace("/opt/arbiter/venv/bin/arbiterd", str(stub)).replace(
        "/opt/arbiter/install.sh", str(stub))
    (tmp_path / name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True)
    complaints = [ln for ln in (done.stdout + done.stderr).splitlines() if name in ln or "Unknown" in ln]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr


def test_daemon_unit_is_notify_with_a_watchdog_and_least_privilege():
    svc = unit("arbiterd.service")["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert int(svc["WatchdogSec"]) <= 15 and svc["Restart"] == "on-failure"
    assert svc["User"] != "root" and set(svc["AmbientCapabilities"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert svc["CapabilityBoundingSet"] == svc["AmbientCapabilities"]
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes"
    assert "check-config" in svc["ExecStartPre"]


def test_systemd_owns_the_hardware_watchdog_within_the_bcm2835_limit():
    manager = unit("10-arbiter-watchdog.conf")["Manager"]
    assert int(manager["RuntimeWatchdogSec"]) <= 15


def test_first_boot_moves_secrets_off_the_fat_partition_with_private_modes():
    svc = unit("arbiter-firstboot.service")
    assert svc["Unit"]["ConditionPathExists"] == "/boot/firmware/arbiter/arbiter.toml"
    start = svc["Service"]["ExecStart"]
    assert "-m 0600" in start and "rm -rf /boot/firmware/arbiter" in start and "check-config" in start


def test_udev_rule_names_serial_adapters_and_opens_gpio_to_its_group():
    rules = UDEV.read_text()
    assert 'SYMLINK+="arbiter-com-%b"' in rules and 'KERNEL=="gpiochip*", GROUP="gpio"' in rules
    # Debian 12's udev (systemd 252) has no `udevadm verify`; the rule is checked by content only
