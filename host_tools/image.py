"""arbiter-image: build the appliance's SD card image without loop mounts.

Recipe (each step prints a progress line):
1. an empty image of --size MiB with an MBR table (sfdisk): partition 1 FAT32 (type c,
   bootable) from 1 MiB, partition 2 Linux (type 83) after it;
2. the boot partition built as its own file (mkfs.vfat) and filled with mtools from the
   base's boot files, plus an empty arbiter/ folder that arbiter-provision fills;
3. the root tree staged in a folder: the base's root, the firmware as a wheel in
   /opt/arbiter/wheels (plus any --wheelhouse wheels for its dependencies) with an installer,
   the systemd units enabled, the watchdog drop-in and the udev rule; then made into an ext4
   file with `mkfs.ext4 -d`;
4. both partition files written into the image at their offsets.

The base is either --base-dir DIR (folders boot/ and root/, as the tests make on the spot)
or --base IMAGE, a Raspberry Pi OS Lite image the technician supplies: its boot files are
copied out with mcopy and its root with `debugfs -R "rdump / DIR"` (run as root to keep
ownership), and the base's disk id is kept (Pi OS names its root PARTUUID=<disk id>-02).
The tests exercise that path with an earlier arbiter image standing in for Pi OS; a real Pi
OS image is not available on the build machines.

The image carries the firmware as wheels: arbiter-install.service builds the venv at first
boot, systemd-sysusers creates the ``arbiter`` user, arbiter-firstboot.service installs the
provisioned config and secrets, then arbiterd starts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOARD = ROOT / "board"
MIB = 1 << 20
SECTOR = 512


class ImageError(Exception):
    pass


def run(argv: list[str], what: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError(f"{what}: {' '.join(argv[:2])} exit {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout


def step(text: str) -> None:
    print(f"[image] {text}", file=sys.stderr, flush=True)


def partition_table(image: Path) -> dict:
    return json.loads(run(["sfdisk", "--json", str(image)], "read partition table"))["partitiontable"]


def partitions(image: Path) -> list[dict]:
    return partition_table(image)["partitions"]


def _copy_into(image: Path, part_file: Path, offset: int) -> None:
    with open(part_file, "rb") as src, open(image, "r+b") as dst:
        dst.seek(offset)
        shutil.copyfileobj(src, dst, 4 * MIB)


def _extract(image: Path, part: dict, out: Path) -> None:
    with open(image, "rb") as src, open(out, "wb") as dst:
        src.seek(part["start"] * SECTOR)
        left = part["size"] * SECTOR
        while left:
            block = src.read(min(4 * MIB, left))
            dst.write(block)
            left -= len(block)


def base_from_image(base: Path, into: Path) -> None:
    """Boot files and root tree out of a Raspberry Pi OS image (partition 1 FAT, 2 ext4)."""
    boot, root = partitions(base)[:2]
    (into / "boot").mkdir(parents=True)
    (into / "root").mkdir()
    run(["mcopy", "-s", "-n", "-i", f"{base}@@{boot['start'] * SECTOR}", "::/*", str(into / "boot")], "copy boot")
    rootfs = into / "root.ext4"
    _extract(base, root, rootfs)
    run(["debugfs", "-R", f"rdump / {into / 'root'}", str(rootfs)], "copy root")
    rootfs.unlink()


def stage_root(base_root: Path, stage: Path, wheelhouse: Path | None) -> Path:
    shutil.copytree(base_root, stage, symlinks=True)
    wheels = stage / "opt/arbiter/wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], "build the wheel")
    if wheelhouse:
        for w in wheelhouse.glob("*.whl"):
            shutil.copy2(w, wheels)
    (stage / "opt/arbiter/install.sh").write_text(
        "#!/bin/sh\n# First boot: the firmware's venv from the wheels shipped in this image.\nset -e\n"
        "python3 -m venv /opt/arbiter/venv\n"
        "/opt/arbiter/venv/bin/pip install --no-index --find-links /opt/arbiter/wheels 'billmaster-arbiter[pi]'\n")
    os.chmod(stage / "opt/arbiter/install.sh", 0o755)
    units = stage / "etc/systemd/system"
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("arbiterd.service", "arbiter-install.service", "arbiter-firstboot.service"):
        shutil.copy2(BOARD / "systemd" / unit, units / unit)
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{unit}")
    sysusers = stage / "usr/lib/sysusers.d"
    sysusers.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BOARD / "systemd/arbiter.sysusers", sysusers / "arbiter.conf")
    dropin = stage / "etc/systemd/system.conf.d"
    dropin.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BOARD / "systemd/10-arbiter-watchdog.conf", dropin)
    rules = stage / "etc/udev/rules.d"
    rules.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BOARD / "udev/99-arbiter.rules", rules)
    return next(wheels.glob("billmaster_arbiter-*.whl"))


def build(output: Path, size_mib: int, boot_mib: int, base_dir: Path | None, base_image: Path | None,
          wheelhouse: Path | None = None) -> dict[str, object]:
    if size_mib < boot_mib + 32:
        raise ImageError(f"--size {size_mib}: must be at least --boot-mib ({boot_mib}) + 32 MiB for the root")
    t0 = time.monotonic()
    label_id = ""
    with tempfile.TemporaryDirectory(prefix="arbiter-image-") as tmp_name:
        tmp = Path(tmp_name)
        if base_image is not None:
            # Pi OS finds its root as PARTUUID=<disk id>-02 (cmdline.txt, fstab): keep the id
            label_id = f"label-id: {partition_table(base_image)['id']}\n"
            step(f"reading the base image {base_image}")
            base_from_image(base_image, tmp / "base")
            base_dir = tmp / "base"
        assert base_dir is not None
        step(f"partition table: {size_mib} MiB, boot {boot_mib} MiB FAT32, root ext4")
        with open(output, "wb") as f:
            f.truncate(size_mib * MIB)
        boot_start, boot_sectors = MIB // SECTOR, boot_mib * MIB // SECTOR
        root_start = boot_start + boot_sectors
        subprocess.run(["sfdisk", "--quiet", str(output)], input=(
            f"label: dos\n{label_id}start={boot_start}, size={boot_sectors}, type=c, bootable\nstart={root_start}, type=83\n"),
            text=True, check=True, capture_output=True)
        root_sectors = partitions(output)[1]["size"]
        step("boot partition: FAT32 with the base's boot files")
        boot = tmp / "boot.fat"
        with open(boot, "wb") as f:
            f.truncate(boot_sectors * SECTOR)
        run(["mkfs.vfat", "-F", "32", "-n", "BOOT", str(boot)], "mkfs.vfat")
        files = [str(p) for p in (base_dir / "boot").iterdir()]
        if files:
            run(["mcopy", "-s", "-i", str(boot), *files, "::/"], "copy boot files")
        if not (base_dir / "boot" / "arbiter").is_dir():  # an earlier arbiter image as the base has it
            run(["mmd", "-i", str(boot), "::/arbiter"], "boot/arbiter")
        step("root partition: base tree, firmware wheel, units enabled, watchdog, udev")
        wheel = stage_root(base_dir / "root", tmp / "root", wheelhouse)
        rootfs = tmp / "root.ext4"
        run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(tmp / "root"), str(rootfs),
             f"{root_sectors * SECTOR // 1024}k"], "mkfs.ext4")
        step("writing both partitions into the image")
        _copy_into(output, boot, boot_start * SECTOR)
        _copy_into(output, rootfs, root_start * SECTOR)
    took = round(time.monotonic() - t0, 2)
    step(f"done: {output} in {took} s")
    return {"image": str(output), "size_mib": size_mib, "boot_offset": boot_start * SECTOR,
            "root_offset": root_start * SECTOR, "wheel": wheel.name, "seconds": took}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arbiter-image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--base-dir", type=Path, help="a base with boot/ and root/ folders")
    src.add_argument("--base", type=Path, help="a Raspberry Pi OS Lite image to start from")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--size", type=int, default=2048, help="image size in MiB (default %(default)s)")
    parser.add_argument("--boot-mib", type=int, default=256, help="boot partition in MiB (default %(default)s)")
    parser.add_argument("--wheelhouse", type=Path, help="dependency wheels for the appliance's architecture")
    parser.add_argument("--json", action="store_true", help="print a summary as JSON")
    args = parser.parse_args(argv)
    try:
        result = build(args.output, args.size, args.boot_mib, args.base_dir, args.base, args.wheelhouse)
    except (ImageError, subprocess.CalledProcessError) as exc:
        print(f"arbiter-image: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else f"{result['image']}: built in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
