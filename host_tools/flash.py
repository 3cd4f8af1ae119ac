"""arbiter-flash: write the appliance's image to an SD card (or a file), then prove it.

The first MiB (partition table and boot sector) is written last, so a card pulled out half
way never looks bootable. Everything is fsync'd, the page cache for the target is dropped,
and the whole target is read back and compared by SHA-256 with the image, the way
rpi-imager verifies. Refuses a mounted device, a device with a mounted partition, and the
disk holding the running system.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

HEAD = 1 << 20  # written last
CHUNK = 4 << 20


class FlashError(Exception):
    """A refusal or a failed verification: the message says what and why."""


def _base_disk(dev: Path) -> str:
    """sda1 -> sda, mmcblk0p2 -> mmcblk0, nvme0n1p1 -> nvme0n1 (by sysfs, not by name)."""
    name = dev.resolve().name
    sys_class = Path("/sys/class/block") / name
    if (sys_class / "partition").exists():
        return sys_class.resolve().parent.name
    return name


def mounted_devices(mounts: Path = Path("/proc/mounts")) -> dict[str, str]:
    """Mounted block devices' base disks -> a mount point, from the mounts table."""
    out: dict[str, str] = {}
    for line in mounts.read_text().splitlines():
        src, point = line.split()[:2]
        if src.startswith("/dev/"):
            out.setdefault(_base_disk(Path(src)), point)
    return out


def check_target(target: Path, mounts: Path = Path("/proc/mounts")) -> None:
    if not target.exists() or not stat.S_ISBLK(target.stat().st_mode):
        return  # a regular file: an image copy, nothing to protect
    disk = _base_disk(target)
    used = mounted_devices(mounts)
    root = next((d for d, p in used.items() if p == "/"), None)
    if disk == root:
        raise FlashError(f"{target} is the disk holding the running system (/); refusing")
    if disk in used:
        raise FlashError(f"{target} (disk {disk}) has a mounted filesystem at {used[disk]}; unmount it first")


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
    def __init__(self, what: str, total: int, quiet: bool) -> None:
        self.what, self.total, self.quiet = what, total, quiet
        self.start = time.monotonic()
        self.shown = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if self.quiet or (now - self.shown < 0.5 and done < self.total):
            return
        self.shown = now
        rate = done / max(now - self.start, 1e-6)
        eta = (self.total - done) / rate if rate else 0
        print(f"\r{self.what}: {done >> 20}/{self.total >> 20} MiB, {rate / (1 << 20):.0f} MiB/s, "
              f"ETA {eta:.0f} s   ", end="", file=sys.stderr, flush=True)
        if done >= self.total:
            print(file=sys.stderr)


def flash(image: Path, target: Path, quiet: bool = False, after_write: Callable[[Path], None] | None = None,
          mounts: Path = Path("/proc/mounts")) -> dict[str, object]:
    """Write, fsync, read back, compare. ``after_write`` is a test seam (e.g. to damage a byte)."""
    check_target(target, mounts)
    size = image.stat().st_size
    t0 = time.monotonic()
    want = sha256_of(image, size)
    write_progress = Progress("writing", size, quiet)
    flags = os.O_WRONLY | (0 if target.exists() else os.O_CREAT)
    with open(image, "rb") as src:
        fd = os.open(target, flags, 0o644)
        try:
            src.seek(HEAD)
            pos = HEAD
            while pos < size:
                block = src.read(CHUNK)
                _write_all(fd, block, pos)
                pos += len(block)
                write_progress(pos - HEAD)
            os.fsync(fd)  # the rest is on the card before the boot sector can make it bootable
            src.seek(0)
            _write_all(fd, src.read(min(HEAD, size)), 0)  # the boot sector and table last
            write_progress(size)
            os.fsync(fd)
        finally:
            os.close(fd)
    written_s = time.monotonic() - t0
    if after_write is not None:
        after_write(target)
    t1 = time.monotonic()
    got = sha256_of(target, size, Progress("verifying", size, quiet))
    verify_s = time.monotonic() - t1
    result = {"image": str(image), "target": str(target), "bytes": size, "sha256": want, "target_sha256": got,
              "verified": got == want, "write_s": round(written_s, 2), "verify_s": round(verify_s, 2),
              "write_mib_s": round(size / (1 << 20) / max(written_s, 1e-6), 1)}
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

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arbiter-flash",
        description="Write the appliance image to an SD card or file, then read it all back and compare "
                    "SHA-256. Refuses mounted devices and the running system's disk.")
    parser.add_argument("image", type=Path)
    parser.add_argument("device", type=Path, help="block device (e.g. /dev/sdb) or a file")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not args.image.is_file():
        print(f"arbiter-flash: image {args.image}: no such file", file=sys.stderr)
        return 2
    try:
        check_target(args.device)
    except FlashError as exc:
        print(f"arbiter-flash: {exc}", file=sys.stderr)
        return 2
    if not args.yes:
        if not sys.stdin.isatty():
            print("arbiter-flash: no terminal to confirm on; add --yes", file=sys.stderr)
            return 2
        answer = input(f"Everything on {args.device} will be overwritten. Type 'yes' to go on: ")
        if answer.strip() != "yes":
            print("arbiter-flash: not confirmed; nothing written", file=sys.stderr)
            return 1
    try:
        result = flash(args.image, args.device, quiet=args.json)
    except FlashError as exc:
        print(f"arbiter-flash: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.device}: {result['bytes'] >> 20} MiB written at {result['write_mib_s']} MiB/s and "
              f"verified (sha256 {result['sha256']}) in {result['verify_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
