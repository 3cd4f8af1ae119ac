"""The systemd units, the watchdog drop-in and the udev rule: real `systemd-analyze verify`
on the units (with the daemon's path pointed at a stub, the only change), and the settings
the appliance depends on."""
from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest

from firmware.daemon import check_watchdog
from firmware.errors import ConfigError
from hil.rig import Rig, RigOptions, unit_environment
from tests.unit.sitekit import site_config

UNITS = Path(__file__).resolve().parents[2] / "board" / "systemd"
UDEV = Path(__file__).resolve().parents[2] / "board" / "udev" / "99-arbiter.rules"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNITS / name)
    return parser


AGENT_UNIT = Path(__file__).resolve().parents[2] / "host_tools" / "systemd" / "arbiter-agent.service"


@pytest.mark.parametrize("path", [UNITS / "arbiterd.service", UNITS / "arbiter-install.service",
                                  UNITS / "arbiter-firstboot.service", AGENT_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_verify_is_clean(path, tmp_path):
    stub = tmp_path / "stub"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = path.read_text()
    for program in ("/opt/arbiter/venv/bin/arbiterd", "/opt/arbiter/install.sh", "/opt/arbiter/firstboot.sh",
                    "/opt/arbiter-agent/bin/arbiter-agent"):
        text = text.replace(program, str(stub))
    (tmp_path / path.name).write_text(text)
    # --man=no: the man pages Documentation= names are installed on the appliance, not here
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / path.name)], capture_output=True,
                          text=True)
    complaints = [ln for ln in (done.stdout + done.stderr).splitlines() if path.name in ln or "Unknown" in ln]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr


def test_daemon_unit_is_notify_with_a_watchdog_and_least_privilege():
    svc = unit("arbiterd.service")["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert int(svc["WatchdogSec"]) <= 15 and svc["Restart"] == "on-failure"
    assert svc["User"] != "root" and set(svc["AmbientCapabilities"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert svc["CapabilityBoundingSet"] == svc["AmbientCapabilities"]
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes"
    assert "check-config" in svc["ExecStartPre"]


def test_the_daemon_units_watchdog_fits_the_default_watchdog_timeout():
    """The start-up check (firmware.daemon.check_watchdog) passes with the shipped unit."""
    shipped = float(unit("arbiterd.service")["Service"]["WatchdogSec"])
    cfg = site_config()
    assert shipped <= cfg.timing.watchdog_timeout
    check_watchdog(cfg, shipped)
    with pytest.raises(ConfigError, match=r"timing.watchdog_timeout = 15: arbiterd runs with WatchdogSec = 20 s"):
        check_watchdog(cfg, 20.0)


def test_systemd_owns_the_hardware_watchdog_within_the_bcm2835_limit():
    manager = unit("10-arbiter-watchdog.conf")["Manager"]
    assert int(manager["RuntimeWatchdogSec"]) <= 15


def test_first_boot_moves_secrets_off_the_fat_partition_with_private_modes():
    svc = unit("arbiter-firstboot.service")
    assert svc["Unit"]["ConditionPathExists"] == "/boot/firmware/arbiter/arbiter.toml"
    assert svc["Service"]["ExecStart"] == "/opt/arbiter/firstboot.sh"
    start = (UNITS / "arbiter-firstboot.sh").read_text().replace('"$fat"', "/boot/firmware/arbiter")
    assert "-m 0600" in start and "rm -rf /boot/firmware/arbiter" in start and "check-config" in start


def test_udev_rule_names_serial_adapters_and_opens_gpio_to_its_group():
    rules = UDEV.read_text()
    assert 'SYMLINK+="arbiter-com-%b"' in rules and 'KERNEL=="gpiochip*", GROUP="gpio"' in rules
    # Debian 12's udev (systemd 252) has no `udevadm verify`; the rule is checked by content only


def exposure(path: Path) -> float:
    """The overall exposure `systemd-analyze security --offline` gives a unit file (0 best, 10 worst)."""
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
                          capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def test_daemon_unit_exposure_is_at_most_2_5():
    # Debian 12's systemd (252) has --offline; the score was 6.0 before the unit was hardened
    assert exposure(UNITS / "arbiterd.service") <= 2.5


def test_hardening_leaves_the_daemon_what_it_needs():
    svc = unit("arbiterd.service")["Service"]
    families = set(svc["RestrictAddressFamilies"].split())
    assert {"AF_PACKET", "AF_NETLINK", "AF_INET", "AF_UNIX"} <= families  # ARP, pyroute2, links, sd_notify
    allowed = {line.removeprefix("DeviceAllow=").split()[0]
               for line in (UNITS / "arbiterd.service").read_text().splitlines() if line.startswith("DeviceAllow=")}
    assert {"char-gpiochip", "char-bcm2835-gpiomem", "char-ttyS", "char-ttyAMA", "char-ttyUSB"} <= allowed
    assert svc["DevicePolicy"] == "closed"
    assert "ProcSubset" not in svc  # the state store reads /proc/sys/kernel/random/boot_id
    assert svc["WorkingDirectory"] in svc["ReadWritePaths"].split()  # lgpio's notification FIFOs


def test_the_daemon_has_one_malloc_arena_on_the_appliance_and_on_the_rig(tmp_path, monkeypatch):
    """The unit caps glibc's malloc arenas (issue 18's 40 MiB), and the rig, whose bench
    measures the daemon, starts it with the unit's Environment= as systemd does."""
    assert unit_environment(UNITS / "arbiterd.service") == {"LG_WD": "/run/arbiter", "MALLOC_ARENA_MAX": "1"}
    rig = Rig(RigOptions(), tmp_path)
    started: list[tuple[str, list[str], dict[str, str] | None]] = []
    monkeypatch.setattr(rig, "arbiter_config", lambda: {"site": {"name": "s"}})
    monkeypatch.setattr(rig.site, "spawn", lambda host, argv, env=None, log_name=None: started.append((host, argv, env)))
    rig._start_arbiter()
    assert [(host, argv[1:3], env) for host, argv, env in started] == \
        [("arbiter", ["-m", "firmware.daemon"], unit_environment(UNITS / "arbiterd.service"))]


def test_the_guard_is_restarted_however_often_it_fails():
    assert unit("arbiterd.service")["Unit"]["StartLimitIntervalSec"] == "0"


@pytest.mark.parametrize("name", ["arbiterd.service", "arbiter-install.service", "arbiter-firstboot.service"])
def test_units_point_to_the_man_pages(name):
    assert "man:arbiterd(8)" in unit(name)["Unit"]["Documentation"].split()


def test_agent_unit_keeps_retrying():
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(AGENT_UNIT)
    assert parser["Unit"]["StartLimitIntervalSec"] == "0" and parser["Service"]["Restart"] == "always"
    assert "--config /etc/arbiter/agent.toml" in parser["Service"]["ExecStart"]
