"""arbiter-flash: write order, read-back verification, .xz streaming, and the refusal table,
driven against a fake /proc and /sys/class/block tree with real device nodes (mknod), against
this machine's own root disk, and against a real loop device."""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.flash import HEAD, FlashError, Progress, System, check_target, flash, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def image(tmp_path):
    img = tmp_path / "arbiter.img"
    img.write_bytes(os.urandom(HEAD) + os.urandom(7 << 20))
    return img


def test_flash_to_a_file_and_verify(image, tmp_path, capsys):
    target = tmp_path / "card.img"
    assert main([str(image), str(target), "--to-file", "--yes", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verified"] and target.read_bytes() == image.read_bytes()
    assert target.stat().st_mode & 0o777 == 0o600  # an image may carry a site's secrets


def test_boot_sector_is_written_last(image, tmp_path):
    target = tmp_path / "card.img"
    seen = {}

    def damage_check(path: Path) -> None:
        seen["head"] = path.read_bytes()[:HEAD]

    flash(image, target, quiet=True, after_write=damage_check, to_file=True)
    assert seen["head"] == image.read_bytes()[:HEAD]
    # interrupted before the head: the head of a fresh target is still blank
    partial = tmp_path / "partial.img"
    with pytest.raises(ZeroDivisionError):
        flash(image, partial, quiet=True, after_write=lambda p: 1 / 0, to_file=True)
    assert partial.read_bytes()[:HEAD] == image.read_bytes()[:HEAD]


def test_a_corrupted_write_is_a_loud_failure(image, tmp_path):
    target = tmp_path / "card.img"

    def flip(path: Path) -> None:
        with open(path, "r+b") as f:
            f.seek(5 << 20)
            b = f.read(1)
            f.seek(5 << 20)
            f.write(bytes([b[0] ^ 0xFF]))

    with pytest.raises(FlashError, match="VERIFY FAILED"):
        flash(image, target, quiet=True, after_write=flip, to_file=True)


def test_without_yes_and_without_a_terminal_nothing_is_written(image, tmp_path):
    target = tmp_path / "card.img"
    done = subprocess.run([sys.executable, "-m", "host_tools.flash", str(image), str(target), "--to-file"],
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 2 and "--yes" in done.stderr and not target.exists()


def test_a_missing_device_is_refused_not_created(image, tmp_path, capsys):
    # the old flasher made a regular file at /dev/sda on a machine without one
    target = tmp_path / "sda"
    assert main([str(image), str(target), "--yes"]) == 2
    assert "no such device" in capsys.readouterr().err and not target.exists()


def test_refuses_the_disk_of_the_running_system():
    disk = next(d for d, point in System().mounted().items() if point == "/")
    with pytest.raises(FlashError, match="holds the running system"):
        check_target(Path("/dev") / disk, force=True)


class FakeMachine:
    """A /proc and /sys/class/block tree with device nodes, shaped as the kernel lays them out:
    class/block/NAME links into devices/..., partitions are subfolders of their disk with a
    `partition` file, stacked devices have `holders` and `slaves`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sys_block = root / "sys/class/block"
        self.sys_block.mkdir(parents=True)
        (root / "proc/self").mkdir(parents=True)
        (root / "dev").mkdir()
        self.minor = 0
        self.mounts: list[str] = []
        self.swap_lines: list[str] = []
        self.zfs: dict[str, list[str]] = {}

    def _node(self, name: str, folder: Path, size_mib: int) -> Path:
        self.minor += 1
        folder.mkdir(parents=True)
        (folder / "dev").write_text(f"240:{self.minor}\n")
        (folder / "size").write_text(f"{size_mib * 2048}\n")
        (folder / "holders").mkdir()
        (folder / "slaves").mkdir()
        (self.sys_block / name).symlink_to(os.path.relpath(folder, self.sys_block))
        os.mknod(self.root / "dev" / name, 0o600 | 0o060000, os.makedev(240, self.minor))
        return self.root / "dev" / name

    def disk(self, name: str, parts: int = 2, removable: bool = True, bus: str = "pci0000:00/ata1",
             size_mib: int = 32, model: str = "Card") -> Path:
        folder = self.root / "sys/devices" / bus / name
        node = self._node(name, folder, size_mib)
        (folder / "removable").write_text("1\n" if removable else "0\n")
        (folder / "device").mkdir()
        (folder / "device/model").write_text(model + "\n")
        for i in range(1, parts + 1):
            part = f"{name}p{i}" if name[-1].isdigit() else f"{name}{i}"
            self._node(part, folder / part, size_mib // (parts + 1))
            (folder / part / "partition").write_text(f"{i}\n")
        return node

    def stack(self, name: str, on: list[str], dm_name: str | None = None) -> Path:
        """A device-mapper or RAID device on top of others (LVM, LUKS, md)."""
        folder = self.root / "sys/devices/virtual/block" / name
        node = self._node(name, folder, 16)
        for below in on:
            (folder / "slaves" / below).symlink_to(os.path.relpath(self.sys_block / below, folder / "slaves"))
            holders = self.sys_block / below / "holders"
            (holders / name).symlink_to(os.path.relpath(folder, holders))
        if dm_name:
            (folder / "dm").mkdir()
            (folder / "dm/name").write_text(dm_name + "\n")
        return node

    def mount(self, name: str | None, point: str, fstype: str = "ext4", source: str | None = None) -> None:
        majmin = (self.sys_block / name / "dev").read_text().strip() if name else "0:77"
        self.mounts.append(f"{30 + len(self.mounts)} 1 {majmin} / {point} rw - {fstype} {source or name} rw")

    def swap(self, node: Path) -> None:
        self.swap_lines.append(f"{node}\tpartition\t1048572\t0\t-2")

    def system(self) -> System:
        (self.root / "proc/self/mountinfo").write_text("\n".join(self.mounts) + "\n")
        (self.root / "proc/swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n" + "\n".join(self.swap_lines))
        return System(proc=self.root / "proc", sys_block=self.sys_block, zpool=lambda pool: self.zfs.get(pool, []))


@pytest.fixture
def machine(tmp_path):
    """A laptop: root on /dev/root (sda2), /home on LVM over LUKS (sdb), a RAID member (sdc),
    swap (sdd), a second ZFS root pool (sde), btrfs data (sdf), plus candidate cards."""
    m = FakeMachine(tmp_path / "m")
    m.disk("sda", removable=False)
    m.mount("sda2", "/", source="/dev/root")
    m.disk("sdb", removable=False)
    luks = m.stack("dm-0", ["sdb2"], "luks-3f1c")
    m.stack("dm-1", ["dm-0"], "vg0-home")
    m.mount("dm-1", "/home", source="/dev/mapper/vg0-home")
    m.disk("sdc", removable=False)
    m.disk("sdg", removable=False)
    m.stack("md0", ["sdc1", "sdg1"])
    m.disk("sdd")
    m.swap(m.root / "dev/sdd2")
    m.disk("sde", removable=False)
    m.zfs["rpool"] = [str(m.root / "dev/sde1")]
    m.mount(None, "/srv", fstype="zfs", source="rpool/srv")
    m.disk("sdf")
    m.mount(None, "/data", fstype="btrfs", source=str(m.root / "dev/sdf1"))
    m.disk("sdh", removable=False)  # an internal disk nothing uses
    m.disk("sdi", bus="pci0000:00/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0/block")  # USB reader
    m.disk("mmcblk0", removable=False, bus="platform/mmc0/mmc0:aaaa/block")  # laptop SD slot says 0
    m.disk("sdj", size_mib=4)  # a card too small
    os.mknod(m.root / "dev/stray", 0o600 | 0o060000, os.makedev(241, 1))  # not in sysfs
    os.mknod(m.root / "dev/null", 0o600 | 0o020000, os.makedev(1, 3))
    (m.root / "dev/disk/by-uuid").mkdir(parents=True)
    (m.root / "dev/disk/by-uuid/1234-ABCD").symlink_to("../../sda2")
    (m.root / "dev/disk/by-id").mkdir()
    (m.root / "dev/disk/by-id/ata-Laptop_SSD").symlink_to("../../sda")
    (m.root / "plain.img").write_bytes(b"x")
    assert luks.exists()
    return m


REFUSALS = [
    # (target, options, what the refusal must say)
    ("missing", {}, "no such device. To write an image file instead, add --to-file"),
    ("plain.img", {}, "is a regular file, not a block device"),
    ("plain.img", {"to_file": True}, "the file exists"),
    ("dev/null", {}, "is not a block device"),
    ("dev/sdi", {"to_file": True}, "--to-file is for image files"),
    ("dev/stray", {}, "is not in"),
    ("dev/sdi1", {}, "is partition sdi1 of sdi; give the whole disk"),
    ("dev/disk/by-uuid/1234-ABCD", {}, "is partition sda2 of sda"),
    ("dev/sda", {"force": True}, "(sda) holds the running system (/)"),  # root mounted as /dev/root
    ("dev/disk/by-id/ata-Laptop_SSD", {"force": True}, "holds the running system"),
    ("dev/sdb", {"force": True}, "mounted filesystem at /home"),  # through LVM on LUKS
    ("dev/sde", {"force": True}, "mounted filesystem at /srv"),  # a ZFS pool's member
    ("dev/sdf", {"force": True}, "mounted filesystem at /data"),  # btrfs: no device number in mountinfo
    ("dev/sdc", {"force": True}, "held sdc1 by md0 (LVM, LUKS or RAID)"),
    ("dev/sdd", {}, "holds swap in use"),
    ("dev/sdj", {}, "has 4 MiB, the image needs 8 MiB"),
    ("dev/sdh", {}, "is not a removable disk"),
]


@pytest.mark.parametrize("target,options,message", REFUSALS, ids=[f"{t}{sorted(o)}" for t, o, _ in REFUSALS])
def test_refusal_table(machine, target, options, message):
    with pytest.raises(FlashError) as refused:
        check_target(machine.root / target, image_size=8 << 20, system=machine.system(), **options)
    assert message in str(refused.value)


def test_an_open_luks_volume_names_its_mapping(machine):
    machine.stack("dm-7", ["sdh1"], "luks-backup")
    with pytest.raises(FlashError, match=r"held sdh1 by dm-7 \(luks-backup\)"):
        check_target(machine.root / "dev/sdh", force=True, system=machine.system())


def test_a_root_on_zfs_is_found_through_its_pool(machine):
    machine.disk("sdk", removable=False)
    machine.zfs["zroot"] = [str(machine.root / "dev/sdk1")]
    machine.mounts.insert(0, "20 1 0:88 / / rw - zfs zroot/ROOT/debian rw")
    with pytest.raises(FlashError, match=r"\(sdk\) holds the running system"):
        check_target(machine.root / "dev/sdk", force=True, system=machine.system())


ACCEPTED = [
    ("dev/sdi", {}),  # a USB card reader
    ("dev/mmcblk0", {}),  # an SD slot, whatever its removable flag says
    ("dev/sdh", {"force": True}),  # a disk that does not say it is removable, when the technician insists
    ("new.img", {"to_file": True}),
]


@pytest.mark.parametrize("target,options", ACCEPTED, ids=[t for t, _ in ACCEPTED])
def test_what_the_table_lets_through(machine, target, options):
    checked = check_target(machine.root / target, image_size=8 << 20, system=machine.system(), **options)
    assert checked.path == machine.root / target


@pytest.fixture
def loop(image, tmp_path):
    """A real loop device the size of the image (loop devices work on the test machines)."""
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\0" * image.stat().st_size)
    attach = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if attach.returncode != 0:
        pytest.fail(f"losetup is needed for this test and failed: {attach.stderr.strip()}")
    dev = Path(attach.stdout.strip())
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", str(dev)])


def test_loop_device_is_written_and_verified_with_force_only(image, loop):
    with pytest.raises(FlashError, match="not a removable disk"):
        flash(image, loop, quiet=True)
    assert flash(image, loop, quiet=True, force=True)["verified"]


def test_a_device_claimed_by_someone_else_is_refused_by_the_kernel(image, loop):
    held = os.open(loop, os.O_RDONLY | os.O_EXCL)  # as a mount or a device-mapper table would
    try:
        with pytest.raises(FlashError, match="cannot open it exclusively"):
            flash(image, loop, quiet=True, force=True)
    finally:
        os.close(held)


def test_an_xz_image_is_streamed_and_verified(tmp_path):
    plain = os.urandom(HEAD) + bytes(range(256)) * (12 << 12)  # several 4 MiB chunks, quick to pack
    packed = tmp_path / "arbiter.img.xz"
    with lzma.open(packed, "wb", preset=0) as out:
        out.write(plain)
    result = flash(packed, tmp_path / "card.img", quiet=True, to_file=True)
    assert result["verified"] and (tmp_path / "card.img").read_bytes() == plain
    assert result["bytes"] == len(plain) and result["sha256"] == hashlib.sha256(plain).hexdigest()


def test_progress_shows_a_bar_and_the_throughput():
    line = Progress("writing", 100 << 20, quiet=True).line(50 << 20, 2.0)
    assert "[" + "#" * 15 + "." * 15 + "]" in line and " 50%" in line and "25.0 MiB/s" in line and "ETA 2 s" in line
