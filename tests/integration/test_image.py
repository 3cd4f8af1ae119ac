"""The image recipe, built from a small base made on the spot and read back with the real
tools (sfdisk, mtools, debugfs); its wheels installed offline into a fresh venv; the aarch64
set resolved from the package index; then provisioning into it."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.image import SECTOR, ImageError, Target, build, check_base, partition_table, partitions, resolve_wheels
from host_tools.provision import PI_FIRSTBOOT
from host_tools.provision import main as provision

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image")
    (tmp / "base/boot").mkdir(parents=True)
    (tmp / "base/root/etc").mkdir(parents=True)
    (tmp / "base/boot/config.txt").write_text("arm_64bit=1\n")
    (tmp / "base/boot/cmdline.txt").write_text(f"console=serial0,115200 root=PARTUUID=1234abcd-02 {PI_FIRSTBOOT}\n")
    (tmp / "base/root/etc/hostname").write_text("arbiter\n")
    # built for this machine's CPU, so that its wheels can be installed and run here
    result = build(tmp / "arbiter.img", 96, 40, tmp / "base", None, target=Target(platform.machine()))
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
    assert "shred" in debugfs(img, "cat /opt/arbiter/firstboot.sh", tmp_path)
    for page in (ROOT / "docs/man").glob("*.[1-8]"):  # Documentation= in the units points at them
        assert page.name in debugfs(img, f"ls /usr/share/man/man{page.suffix[1:]}", tmp_path)
    assert result["wheel"] in debugfs(img, "ls /opt/arbiter/wheels", tmp_path)
    assert "RuntimeWatchdogSec=15" in debugfs(img, "cat /etc/systemd/system.conf.d/10-arbiter-watchdog.conf", tmp_path)
    assert "arbiter-com" in debugfs(img, "cat /etc/udev/rules.d/99-arbiter.rules", tmp_path)
    assert "arbiter" in debugfs(img, "cat /etc/hostname", tmp_path)


def test_the_image_installs_offline_from_its_own_wheels(image, tmp_path):
    # the first boot's installer, run from the image's own /opt/arbiter with no index and no
    # pip config of this machine: the [pi] extra's GPIO libraries come with the firmware
    img, result = image
    root = partitions(img)[1]
    part = tmp_path / "root.ext4"
    with open(img, "rb") as src, open(part, "wb") as dst:
        src.seek(root["start"] * SECTOR)
        dst.write(src.read(root["size"] * SECTOR))
    subprocess.run(["debugfs", "-R", f"rdump /opt/arbiter {tmp_path}", str(part)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    done = subprocess.run([str(tmp_path / "arbiter/install.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    venv = tmp_path / "arbiter/venv/bin"
    # RPi.GPIO (rpi-lgpio) refuses to import off a Pi: found, not imported
    probe = subprocess.run([str(venv / "python"), "-c", "import importlib.util, lgpio, gpiozero.pins.lgpio, "
                            "firmware.daemon; assert importlib.util.find_spec('RPi.GPIO')"], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    conf, key_file, _ = site_files(tmp_path)
    conf.write_text(conf.read_text().replace("/etc/arbiter/site.key", str(key_file)))
    check = subprocess.run([str(venv / "arbiterd"), "check-config", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert result["wheels"] == len(list((tmp_path / "arbiter/wheels").glob("*.whl"))) == len(result["installs"])
    assert {"lgpio", "rpi-lgpio", "cryptography"} <= set(result["installs"])


@pytest.fixture(scope="module")
def aarch64_wheels(tmp_path_factory):
    """The appliance's set for a Pi, resolved from the package index with binaries only."""
    tmp = tmp_path_factory.mktemp("aarch64")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)
    project = next(wheels.glob("billmaster_arbiter-*.whl"))
    return project, wheels, resolve_wheels(project, wheels, Target("aarch64"), None)


def test_the_pi_set_is_all_aarch64_or_pure_python_wheels(aarch64_wheels):
    _, wheels, installs = aarch64_wheels
    names = sorted(w.name for w in wheels.iterdir())
    assert all(n.endswith(".whl") for n in names), names  # --only-binary: no sdist slipped in
    platforms = {n: n[:-4].split("-")[-1] for n in names}
    assert all(p == "any" or p.endswith("_aarch64") for p in platforms.values()), platforms
    assert any(n.startswith("lgpio-") and p.endswith("_aarch64") for n, p in platforms.items())
    assert {"lgpio", "rpi-lgpio", "gpiozero", "cryptography"} <= set(installs)


def test_a_wheel_missing_from_the_wheelhouse_fails_the_build_naming_it(aarch64_wheels, tmp_path):
    project, wheels, _ = aarch64_wheels
    house = tmp_path / "house"
    shutil.copytree(wheels, house)
    offline = tmp_path / "offline"
    assert "lgpio" in resolve_wheels(project, offline, Target("aarch64"), house)  # complete: builds offline
    next(house.glob("pysnmp-*.whl")).unlink()
    with pytest.raises(ImageError, match=r"no wheel of pysnmp\S* for the target \(aarch64, CPython 3.11"):
        resolve_wheels(project, tmp_path / "again", Target("aarch64"), house)


def test_a_base_that_disagrees_with_the_target_is_refused(tmp_path):
    (tmp_path / "usr/lib/python3.13").mkdir(parents=True)
    (tmp_path / "usr/lib/python3.13/os.py").write_text("")
    with pytest.raises(ImageError, match="--python 3.11: the base's CPython is 3.13"):
        check_base(tmp_path, Target("aarch64", "3.11"))
    (tmp_path / "usr/lib/python3.11").mkdir()
    (tmp_path / "usr/lib/python3.11/os.py").write_text("")
    (tmp_path / "usr/bin").mkdir()
    shutil.copy(Path(sys.executable).resolve(), tmp_path / "usr/bin/python3.11")  # this machine's CPU
    other = "aarch64" if platform.machine() == "x86_64" else "x86_64"
    with pytest.raises(ImageError, match=f"--arch {other}: the base's usr/bin/python3.11 is built for "
                                         f"{platform.machine()}"):
        check_base(tmp_path, Target(other))
    check_base(tmp_path, Target(platform.machine()))


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


def test_provisioning_makes_the_image_private_and_gives_the_operator_a_way_in(image, tmp_path):
    img, result = image
    img.chmod(0o644)
    conf, key_file, _ = site_files(tmp_path)
    (tmp_path / "id.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO2b7zY2CkXoUq1c3a0sF3n0hW9kq3b1g5n8 t@l\n")
    assert provision(["--config", str(conf), "--key-file", str(key_file), "--hostname", "arb-rack2", "--ssh-key",
                      str(tmp_path / "id.pub"), "--image", str(img)]) == 0
    assert img.stat().st_mode & 0o777 == 0o600  # it holds the site key now
    custom = subprocess.run(["mtype", "-i", f"{img}@@{result['boot_offset']}", "::/custom.toml"],
                            capture_output=True, text=True).stdout
    assert 'hostname = "arb-rack2"' in custom and "password_authentication = false" in custom


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
