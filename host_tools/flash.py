"""arbiter-flash: write the appliance's image to an SD card (or a file), then prove it.

A technician's laptop has the disk it runs from a few centimetres from the card reader, so
the target is checked before a byte is written, from what the kernel says about it
(sysfs, /proc), never from its name:

* block devices only; a path that does not exist is refused, and a file target needs
  --to-file (and must not exist yet);
* the whole disk, not one of its partitions;
* refused when the disk or a partition is held by another device (device mapper: LVM, LUKS;
  RAID), is swap (/proc/swaps), or carries a mounted filesystem: the mounts are matched by
  device number (/proc/self/mountinfo), so the root is found however it is named
  (/dev/root, /dev/disk/by-uuid/..., a LUKS or LVM volume on top of the disk) and a ZFS
  root is traced to its pool's devices with `zpool list`;
* refused when it is not removable (an SD slot, a USB reader) unless --force;
* opened with O_EXCL: the kernel refuses a device something else has claimed since.

The image may be a plain .img or an .img.xz, streamed through the decompressor. The first
MiB (partition table and boot sector) is written last, so a card pulled out half way never
looks bootable. Everything is fsync'd, the page cache for the target is dropped, and the
whole target is read back and compared by SHA-256 with what was written, the way rpi-imager
verifies.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from firmware import add_version

HEAD = 1 << 20  # written last
CHUNK = 4 << 20
SECTOR = 512


class FlashError(Exception):
    """A refusal or a failed verification: the message says what and why."""


def zpool_devices(pool: str) -> list[str]:
    """The device paths of an imported ZFS pool (`zpool list -vHP`); none when zpool is absent."""
    try:
        done = subprocess.run(["zpool", "list", "-vHP", pool], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [word for line in done.stdout.splitlines() for word in line.split()[:1] if word.startswith("/dev/")]


@dataclass(frozen=True)
class System:
    """Where the kernel's view of block devices is read from; tests point it at a fake tree."""

    proc: Path = Path("/proc")
    sys_block: Path = Path("/sys/class/block")
    zpool: Callable[[str], list[str]] = field(default=zpool_devices)

    def name_of(self, devnum: int) -> str | None:
        """sysfs name (sda, sda1, dm-0, mmcblk0p2) of a block device number."""
        want = f"{os.major(devnum)}:{os.minor(devnum)}"
        for entry in self.sys_block.iterdir():
            try:
                if (entry / "dev").read_text().strip() == want:
                    return entry.name
            except OSError:
                continue
        return None

    def disk_of(self, name: str) -> str:
        """sda1 -> sda, mmcblk0p2 -> mmcblk0 (by the sysfs tree, not by the name)."""
        entry = self.sys_block / name
        return entry.resolve().parent.name if (entry / "partition").exists() else name

    def parts_of(self, disk: str) -> list[str]:
        """The disk and its partitions."""
        here = (self.sys_block / disk).resolve()
        return [disk] + sorted(p.name for p in here.iterdir() if (p / "partition").exists())

    def below(self, name: str) -> set[str]:
        """The whole disks a device sits on, through device-mapper and RAID slaves."""
        slaves = self.sys_block / name / "slaves"
        under = [s.name for s in slaves.iterdir()] if slaves.is_dir() else []
        if not under:
            return {self.disk_of(name)}
        return set().union(*(self.below(s) for s in under))

    def devnum_of(self, path: Path) -> int | None:
        """A block device's number; for any other existing file, the device its filesystem is on."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_rdev if stat.S_ISBLK(st.st_mode) else st.st_dev

    def disks_of_path(self, path: Path) -> set[str]:
        devnum = self.devnum_of(path)
        name = self.name_of(devnum) if devnum is not None else None
        return self.below(name) if name else set()

    def mounted(self) -> dict[str, str]:
        """Whole disk -> a mount point on it, for every mounted filesystem, root first."""
        out: dict[str, str] = {}
        lines = (self.proc / "self/mountinfo").read_text().splitlines()
        for line in sorted(lines, key=lambda ln: ln.split()[4] != "/"):
            fields = line.split()
            majmin, point = fields[2], fields[4]
            fstype, source = fields[fields.index("-") + 1:][:2]
            major, minor = (int(x) for x in majmin.split(":"))
            disks: set[str] = set()
            if major:
                name = self.name_of(os.makedev(major, minor))
                disks = self.below(name) if name else set()
            elif fstype == "zfs":
                for dev in self.zpool(source.split("/")[0]):
                    disks |= self.disks_of_path(Path(dev))
            elif source.startswith("/"):  # btrfs shows an anonymous device number; its source names the disk
                disks = self.disks_of_path(Path(source))
            for disk in disks:
                out.setdefault(disk, point)
        return out

    def swaps(self) -> dict[str, str]:
        """Whole disk -> the swap area on it (a partition, a volume or a swap file)."""
        out: dict[str, str] = {}
        for line in (self.proc / "swaps").read_text().splitlines()[1:]:
            area = line.split()[0].replace("\\040", " ")
            for disk in self.disks_of_path(Path(area)):
                out.setdefault(disk, area)
        return out

    def holders(self, disk: str) -> list[str]:
        """Devices stacked on the disk or its partitions, named as the admin knows them."""
        found = []
        for part in self.parts_of(disk):
            folder = self.sys_block / part / "holders"
            for holder in sorted(folder.iterdir()) if folder.is_dir() else []:
                dm_name = self.sys_block / holder.name / "dm/name"
                shown = f"{holder.name} ({dm_name.read_text().strip()})" if dm_name.exists() else holder.name
                found.append(f"{part} by {shown}")
        return found

    def removable(self, disk: str) -> bool:
        """The removable flag, or a USB card reader, or an SD/MMC slot (often flagged 0)."""
        entry = self.sys_block / disk
        flag = (entry / "removable").read_text().strip() if (entry / "removable").exists() else "0"
        return flag == "1" or "/usb" in str(entry.resolve()) or disk.startswith("mmcblk")

    def size(self, disk: str) -> int:
        return int((self.sys_block / disk / "size").read_text()) * SECTOR


@dataclass(frozen=True)
class Target:
    path: Path
    disk: str | None  # None: a new file (--to-file)
    size: int | None


def check_target(target: Path, *, to_file: bool = False, force: bool = False, image_size: int | None = None,
                 system: System = System()) -> Target:
    """The refusal table: returns what may be written, or raises FlashError saying why not."""
    if not os.path.lexists(target):
        if to_file:
            return Target(target, None, None)
        raise FlashError(f"{target}: no such device. To write an image file instead, add --to-file")
    st = os.stat(target)
    if stat.S_ISREG(st.st_mode):
        if to_file:
            raise FlashError(f"{target}: the file exists; --to-file writes a new file only, remove it first")
        raise FlashError(f"{target} is a regular file, not a block device; to write a file, add --to-file "
                         "with a path that does not exist yet")
    if not stat.S_ISBLK(st.st_mode):
        raise FlashError(f"{target} is not a block device")
    if to_file:
        raise FlashError(f"{target} is a block device; --to-file is for image files")
    name = system.name_of(st.st_rdev)
    if name is None:
        raise FlashError(f"{target}: block device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} is not in "
                         f"{system.sys_block}; refusing what cannot be checked")
    disk = system.disk_of(name)
    if disk != name:
        raise FlashError(f"{target} is partition {name} of {disk}; give the whole disk (/dev/{disk})")
    used = system.mounted()
    if used.get(disk) == "/":
        raise FlashError(f"{target} ({disk}) holds the running system (/); refusing")
    if disk in used:
        raise FlashError(f"{target} ({disk}) has a mounted filesystem at {used[disk]}; unmount it first")
    holders = system.holders(disk)
    if holders:
        raise FlashError(f"{target} ({disk}) is in use: held {', '.join(holders)} (LVM, LUKS or RAID); "
                         "close those first")
    swaps = system.swaps()
    if disk in swaps:
        raise FlashError(f"{target} ({disk}) holds swap in use ({swaps[disk]}); swapoff it first")
    size = system.size(disk)
    if image_size is not None and size < image_size:
        raise FlashError(f"{target} ({disk}) has {size >> 20} MiB, the image needs {image_size >> 20} MiB")
    if not force and not system.removable(disk):
        raise FlashError(f"{target} ({disk}) is not a removable disk (not an SD slot or a USB reader); "
                         "if it really is the card, add --force")
    return Target(target, disk, size)


def image_size(image: Path) -> int:
    """Bytes the image expands to: the file's size, or the total `xz --robot --list` reports."""
    if image.suffix != ".xz":
        return image.stat().st_size
    done = subprocess.run(["xz", "--robot", "--list", str(image)], capture_output=True, text=True)
    totals = [line.split("\t") for line in done.stdout.splitlines() if line.startswith("totals\t")]
    if done.returncode != 0 or not totals:
        raise FlashError(f"{image}: not a readable .xz file ({done.stderr.strip()})")
    return int(totals[0][4])


def _blocks(src: BinaryIO) -> Iterator[bytes]:
    while block := src.read(CHUNK):
        yield block


def open_image(image: Path) -> BinaryIO:
    """The image's bytes as a stream; an .img.xz is decompressed on the fly, never to disk."""
    return lzma.open(image, "rb") if image.suffix == ".xz" else open(image, "rb")


def sha256_of(path: Path, size: int, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        fd = f.fileno()
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read the medium, not the cache
        done = 0
        while done < size:
            block = f.read(min(CHUNK, size - done))
            if not block:
                break
            h.update(block)
            done += len(block)
            if progress:
                progress(done)
    return h.hexdigest()


class Progress:
    """A bar with bytes done, throughput and time left, redrawn at most twice a second."""

    WIDTH = 30

    def __init__(self, what: str, total: int, quiet: bool) -> None:
        self.what, self.total, self.quiet = what, total, quiet
        self.start = time.monotonic()
        self.shown = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if self.quiet or (now - self.shown < 0.5 and done < self.total):
            return
        self.shown = now
        print("\r" + self.line(done, now - self.start), end="", file=sys.stderr, flush=True)
        if done >= self.total:
            print(file=sys.stderr)

    def line(self, done: int, elapsed: float) -> str:
        rate = done / max(elapsed, 1e-6)
        eta = (self.total - done) / rate if rate else 0.0
        filled = self.WIDTH * done // max(self.total, 1)
        return (f"{self.what:9} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {100 * done // max(self.total, 1):3d}% "
                f"{done >> 20}/{self.total >> 20} MiB {rate / (1 << 20):.1f} MiB/s ETA {eta:.0f} s ")


def _open_target(target: Target) -> int:
    """O_EXCL: on a block device the kernel refuses it while mounted or claimed; a file must be new."""
    if target.disk is None:
        return os.open(target.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        return os.open(target.path, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        raise FlashError(f"{target.path}: cannot open it exclusively ({exc.strerror}); something is using it") from exc


def flash(image: Path, target: Path, quiet: bool = False, after_write: Callable[[Path], None] | None = None,
          *, to_file: bool = False, force: bool = False, system: System = System()) -> dict[str, object]:
    """Check, write, fsync, read back, compare. ``after_write`` is a test seam (e.g. to damage a byte)."""
    size = image_size(image)
    checked = check_target(target, to_file=to_file, force=force, image_size=size, system=system)
    t0 = time.monotonic()
    h = hashlib.sha256()
    write_progress = Progress("writing", size, quiet)
    with open_image(image) as src:
        head = src.read(HEAD)
        h.update(head)
        fd = _open_target(checked)
        try:
            pos = len(head)
            for block in _blocks(src):
                h.update(block)
                _write_all(fd, block, pos)
                pos += len(block)
                write_progress(pos - len(head))
            if pos != size:
                raise FlashError(f"{image}: {pos} bytes read, {size} expected; the image file is damaged")
            os.fsync(fd)  # the rest is on the card before the boot sector can make it bootable
            _write_all(fd, head, 0)  # the boot sector and table last
            write_progress(size)
            os.fsync(fd)
        finally:
            os.close(fd)
    want = h.hexdigest()
    written_s = time.monotonic() - t0
    if after_write is not None:
        after_write(target)
    t1 = time.monotonic()
    got = sha256_of(target, size, Progress("verifying", size, quiet))
    verify_s = time.monotonic() - t1
    result = {"image": str(image), "target": str(target), "disk": checked.disk, "bytes": size, "sha256": want,
              "target_sha256": got, "verified": got == want, "write_s": round(written_s, 2),
              "verify_s": round(verify_s, 2), "write_mib_s": round(size / (1 << 20) / max(written_s, 1e-6), 1),
              "verify_mib_s": round(size / (1 << 20) / max(verify_s, 1e-6), 1)}
    if got != want:
        raise FlashError(f"VERIFY FAILED: {target} reads back as sha256 {got}, the image is {want}. "
                         "Do not use this card; flash it again or replace it.\n" + json.dumps(result))
    return result


def _write_all(fd: int, data: bytes, pos: int) -> None:
    """pwrite may write less than asked (a full device, a signal): go on, or fail loudly."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        if n == 0:
            raise OSError(f"no progress writing at byte {pos}")
        view, pos = view[n:], pos + n


def describe(target: Target, system: System = System()) -> str:
    """What the technician is about to overwrite, in the words of the device itself."""
    if target.disk is None:
        return f"a new file {target.path}"
    model = system.sys_block / target.disk / "device/model"
    shown = model.read_text().strip() if model.exists() else "unknown model"
    return f"{target.path} ({target.disk}, {shown}, {(target.size or 0) / 1e9:.1f} GB)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arbiter-flash", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    parser.add_argument("image", type=Path, help="the image: .img, or .img.xz (streamed)")
    parser.add_argument("device", type=Path, help="the card's whole block device (e.g. /dev/sdb, /dev/mmcblk0)")
    parser.add_argument("--to-file", action="store_true", help="write a new image file instead of a device")
    parser.add_argument("--force", action="store_true", help="accept a disk that does not say it is removable")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not args.image.is_file():
        print(f"arbiter-flash: image {args.image}: no such file", file=sys.stderr)
        return 2
    try:
        target = check_target(args.device, to_file=args.to_file, force=args.force, image_size=image_size(args.image))
    except FlashError as exc:
        print(f"arbiter-flash: {exc}", file=sys.stderr)
        return 2
    if not args.yes:
        if not sys.stdin.isatty():
            print("arbiter-flash: no terminal to confirm on; add --yes", file=sys.stderr)
            return 2
        answer = input(f"Everything on {describe(target)} will be overwritten. Type 'yes' to go on: ")
        if answer.strip() != "yes":
            print("arbiter-flash: not confirmed; nothing written", file=sys.stderr)
            return 1
    try:
        result = flash(args.image, args.device, quiet=args.json, to_file=args.to_file, force=args.force)
    except FlashError as exc:
        print(f"arbiter-flash: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.device}: {result['bytes'] >> 20} MiB written at {result['write_mib_s']} MiB/s and "
              f"verified at {result['verify_mib_s']} MiB/s (sha256 {result['sha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
