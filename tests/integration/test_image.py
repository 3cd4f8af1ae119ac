"""The image recipe, built from a small base made on the spot and read back with the real
tools (sfdisk, mtools, debugfs); then provisioning into it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.image import SECTOR, build, partition_table, partitions
from host_tools.provision import main as provision

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image")
    (tmp / "base/boot").mkdir(parents=True)
    (tmp / "base/root/etc").mkdir(parents=True)
    (tmp / "base/boot/config.txt").write_text("arm_64bit=1\n")
    (tmp / "base/root/etc/hostname").write_text("arbiter\n")
    result = build(tmp / "arbiter.img", 96, 40, tmp / "base", None)
    return tmp / "arbiter.img", result


def debugfs(img: Path, cmd: str, tmp: Path) -> str:
    root = partitions(img)[1]
    part = tmp / "root.ext4"
    with open(img, "rb") as src, open(part, "wb") as dst:
        src.seek(root["start"] * SECTOR)
        dst.write(src.read(root["size"] * SECTOR))
    return subprocess.run(["debugfs", "-R", cmd, str(part)], capture_output=True, text=True).stdout


def test_partition_table(image):
    img, result = image
    boot, root = partitions(img)
    assert boot["type"] == "c" and boot.get("bootable") and boot["start"] * SECTOR == 1 << 20
    assert root["type"] == "83" and root["start"] * SECTOR == result["root_offset"]


def test_boot_partition_has_the_base_files_and_an_arbiter_folder(image):
    img, result = image
    listing = subprocess.run(["mdir", "-i", f"{img}@@{result['boot_offset']}", "::/"], capture_output=True,
                             text=True).stdout
    assert "config" in listing and "arbiter" in listing


def test_root_has_firmware_units_enabled_watchdog_and_udev(image, tmp_path):
    img, result = image
    wants = debugfs(img, "ls -l /etc/systemd/system/multi-user.target.wants", tmp_path)
    assert all(u in wants for u in ("arbiterd.service", "arbiter-install.service", "arbiter-firstboot.service"))
    assert "u arbiter" in debugfs(img, "cat /usr/lib/sysusers.d/arbiter.conf", tmp_path)
    assert "pip install --no-index" in debugfs(img, "cat /opt/arbiter/install.sh", tmp_path)
    assert result["wheel"] in debugfs(img, "ls /opt/arbiter/wheels", tmp_path)
    assert "RuntimeWatchdogSec=15" in debugfs(img, "cat /etc/systemd/system.conf.d/10-arbiter-watchdog.conf", tmp_path)
    assert "arbiter-com" in debugfs(img, "cat /etc/udev/rules.d/99-arbiter.rules", tmp_path)
    assert "arbiter" in debugfs(img, "cat /etc/hostname", tmp_path)


def site_files(tmp: Path, bad: bool = False) -> tuple[Path, Path, bytes]:
    key = b"k3y-" + bytes(range(65, 65 + 28))
    (tmp / "site.key").write_bytes(key)
    servers = "".join(f'[[servers]]\nname = "{n}"\naddress = "192.0.2.{i}"\nfence_relay = "relay{i}"\n'
                      f'power_sense = "sense{i}"\nmac = "02:00:00:00:00:0{i}"\n' for i, n in ((1, "master"), (2, "standby")))
    interval = "0.001" if bad else "0.04"
    (tmp / "arbiter.toml").write_text(f'[site]\nname = "billing-a"\nkey_file = "/etc/arbiter/site.key"\n'
                                      f'[timing]\ninterval = {interval}\n[vip]\naddress = "192.0.2.100/24"\n' + servers)
    return tmp / "arbiter.toml", tmp / "site.key", key


def test_provision_writes_config_and_secrets_and_never_prints_them(image, tmp_path):
    img, result = image
    conf, key_file, key = site_files(tmp_path)
    (tmp_path / "authkey").write_text("v3-auth-secret-value")
    done = subprocess.run([sys.executable, "-m", "host_tools.provision", "--config", str(conf), "--key-file",
                           str(key_file), "--snmp-secret", f"manager1={tmp_path / 'authkey'}", "--image", str(img)],
                          cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert key not in done.stdout + done.stderr and b"v3-auth-secret" not in done.stdout + done.stderr
    target = f"{img}@@{result['boot_offset']}"
    read = lambda p: subprocess.run(["mtype", "-i", target, p], capture_output=True).stdout  # noqa: E731
    assert b'name = "billing-a"' in read("::/arbiter/arbiter.toml")
    assert read("::/arbiter/site.key").strip() == key
    assert read("::/arbiter/snmp/manager1") == b"v3-auth-secret-value"


def test_provision_to_a_boot_folder_makes_secrets_private(tmp_path):
    conf, key_file, _ = site_files(tmp_path)
    boot = tmp_path / "boot"
    boot.mkdir()
    assert provision(["--config", str(conf), "--key-file", str(key_file), "--boot-dir", str(boot)]) == 0
    assert (boot / "arbiter/site.key").stat().st_mode & 0o777 == 0o600


def test_bad_config_is_refused_with_the_key_named(tmp_path, capsys):
    conf, key_file, _ = site_files(tmp_path, bad=True)
    boot = tmp_path / "boot"
    boot.mkdir()
    assert provision(["--config", str(conf), "--key-file", str(key_file), "--boot-dir", str(boot)]) == 2
    assert "timing.interval = 0.001" in capsys.readouterr().err and not (boot / "arbiter").exists()


def test_an_image_built_on_a_base_image_keeps_its_files_and_disk_id(image, tmp_path):
    # the --base path, here with our own image standing in for Raspberry Pi OS Lite: its
    # cmdline.txt and fstab name the root as PARTUUID=<disk id>-02, so the id must not change
    base, _ = image
    build(tmp_path / "again.img", 96, 40, None, base)
    assert partition_table(tmp_path / "again.img")["id"] == partition_table(base)["id"]
    assert "arbiter" in debugfs(tmp_path / "again.img", "cat /etc/hostname", tmp_path)
    boot = partitions(tmp_path / "again.img")[0]
    listing = subprocess.run(["mdir", "-b", "-i", f"{tmp_path / 'again.img'}@@{boot['start'] * SECTOR}", "::/"],
                             capture_output=True, text=True).stdout
    assert "config.txt" in listing
