"""The first-boot script (board/systemd/arbiter-firstboot.sh), run for real on a tree of its
own: secrets installed 0600 and wiped from the card also when check-config fails (then the
status LED blinks and the journal line has priority err), and wiped by overwriting: a file
system image is loop-mounted and read raw afterwards. FAT cannot be mounted on the test
machines (no vfat module), so the raw read is done on ext4, which also rewrites in place."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "board/systemd/arbiter-firstboot.sh"


def appliance(root: Path, check_config_ok: bool = True) -> Path:
    """A root with a provisioned card (boot/firmware/arbiter), a stand-in arbiterd and an ACT LED."""
    fat = root / "boot/firmware/arbiter"
    (fat / "snmp").mkdir(parents=True)
    (fat / "arbiter.toml").write_text('[site]\nname = "billing-a"\n')
    (fat / "site.key").write_bytes(b"site-key-0123456789abcdef\n")
    (fat / "ups.password").write_text("nut-pw")
    (fat / "snmp/auth").write_text("v3-auth-passphrase")
    (fat / "network.nmconnection").write_text("[connection]\nid=arbiter-lan\n")
    venv = root / "opt/arbiter/venv/bin"
    venv.mkdir(parents=True)
    (venv / "arbiterd").write_text("#!/bin/sh\n" + ("exit 0\n" if check_config_ok else
                                                    "echo 'timing.interval = 0.001: below 0.01' >&2\nexit 2\n"))
    (venv / "arbiterd").chmod(0o755)
    led = root / "sys/class/leds/ACT"
    led.mkdir(parents=True)
    for f, v in (("trigger", "mmc0"), ("delay_on", "0"), ("delay_off", "0")):
        (led / f).write_text(v)
    return fat


def run_firstboot(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT)], env={**os.environ, "ARBITER_ROOT": str(root), "ARBITER_USER": "root"},
                          capture_output=True, text=True, timeout=60)


def test_secrets_move_to_etc_privately_and_leave_the_card(tmp_path):
    fat = appliance(tmp_path)
    done = run_firstboot(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    etc = tmp_path / "etc/arbiter"
    assert (etc / "site.key").read_bytes() == b"site-key-0123456789abcdef\n"
    assert (etc / "snmp/auth").read_text() == "v3-auth-passphrase" and (etc / "ups.password").read_text() == "nut-pw"
    for f in [etc / "arbiter.toml", etc / "site.key", etc / "ups.password", etc / "snmp/auth",
              tmp_path / "etc/NetworkManager/system-connections/arbiter-lan.nmconnection"]:
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert etc.stat().st_mode & 0o777 == 0o700
    assert not fat.exists()
    assert "<5>arbiter-firstboot: provisioned" in done.stdout
    assert (tmp_path / "sys/class/leds/ACT/trigger").read_text() == "mmc0"  # the LED left alone


def test_a_failed_check_config_still_wipes_the_card_and_shows_on_led_and_journal(tmp_path):
    fat = appliance(tmp_path, check_config_ok=False)
    done = run_firstboot(tmp_path)
    assert done.returncode == 1
    assert not fat.exists()  # the old unit's `sh -e` stopped before this
    assert "<3>arbiter-firstboot: provisioning failed: check-config of" in done.stdout
    assert "timing.interval = 0.001" in done.stderr  # the daemon's own words reach the journal too
    led = tmp_path / "sys/class/leds/ACT"
    assert [(led / f).read_text().strip() for f in ("trigger", "delay_on", "delay_off")] == ["timer", "100", "100"]


@pytest.fixture
def mounted_card(tmp_path):
    """A real file system on a loop device, mounted where the card's boot partition would be."""
    raw = tmp_path / "card.ext4"
    with open(raw, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(raw)], check=True)
    root = tmp_path / "root"
    point = root / "boot/firmware"
    point.mkdir(parents=True)
    mount = subprocess.run(["mount", "-o", "loop", str(raw), str(point)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.fail(f"a loop mount is needed for this test and failed: {mount.stderr.strip()}")
    try:
        yield root, raw
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_the_secrets_bytes_are_overwritten_on_the_medium(mounted_card):
    root, raw = mounted_card
    marker = f"SECRET-{uuid.uuid4().hex}".encode()
    control = f"PLAIN-RM-{uuid.uuid4().hex}".encode()
    fat = appliance(root)
    (fat / "site.key").write_bytes(marker * 200 + b"\n")
    (root / "boot/firmware/control").write_bytes(control * 200)
    os.sync()
    os.remove(root / "boot/firmware/control")  # deleted the usual way: its bytes stay on the medium
    done = run_firstboot(root)
    assert done.returncode == 0, done.stdout + done.stderr
    subprocess.run(["umount", str(root / "boot/firmware")], check=True)
    try:
        medium = raw.read_bytes()
        assert control in medium  # the raw read does find deleted bytes, so it would find the key's
        assert marker not in medium
    finally:
        subprocess.run(["mount", "-o", "loop", str(raw), str(root / "boot/firmware")], check=True)
