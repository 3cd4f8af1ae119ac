"""arbiter-image: build the appliance's SD card image without loop mounts.

Recipe (each step prints a progress line):
1. an empty image of --size MiB with an MBR table (sfdisk): partition 1 FAT32 (type c,
   bootable) from 1 MiB, partition 2 Linux (type 83) after it;
2. the boot partition built as its own file (mkfs.vfat) and filled with mtools from the
   base's boot files, plus an empty arbiter/ folder that arbiter-provision fills;
3. the root tree staged in a folder: the base's root, /opt/arbiter/wheels with the firmware's
   wheel and a wheel of every dependency for the target (the [pi] extra included) with an
   offline installer, the systemd units enabled, the watchdog drop-in, the udev rule and the
   man pages (docs/man); then made into an ext4 file with `mkfs.ext4 -d`;
4. both partition files written into the image at their offsets.

The base is either --base-dir DIR (folders boot/ and root/, as the tests make on the spot)
or --base IMAGE, a Raspberry Pi OS Lite image the technician supplies: its boot files are
copied out with mcopy and its root with `debugfs -R "rdump / DIR"` (run as root to keep
ownership), and the base's disk id is kept (Pi OS names its root PARTUUID=<disk id>-02).
The tests exercise that path with an earlier arbiter image standing in for Pi OS; a real Pi
OS image is not available on the build machines.

The target (--arch, default aarch64; --python, the base's CPython, default 3.11 as in Debian 12
and Raspberry Pi OS Bookworm, glibc 2.36) decides the wheels: the set is resolved with
`pip download --only-binary=:all: --platform manylinux..._<arch> --python-version ...`, from
PyPI or, with --wheelhouse, from that folder only. A package without a wheel for the target
fails the build, naming the package; then the set is checked by resolving the first boot's
own `pip install --no-index` for the target (a dry run), so the appliance installs without a
network. A base that carries a Python says its version and architecture, and a target that
disagrees with them fails the build.

The image carries the firmware as wheels: arbiter-install.service builds the venv at first
boot, systemd-sysusers creates the ``arbiter`` user, arbiter-firstboot.service installs the
provisioned config and secrets, then arbiterd starts.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from firmware import add_version

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


ELF_MACHINES = {0xB7: "aarch64", 0x3E: "x86_64"}  # e_machine of the base's python3
EXTRAS = "pi"  # the board's GPIO libraries: lgpio, rpi-lgpio


@dataclass(frozen=True)
class Target:
    """The appliance's CPU and CPython, which every shipped wheel must fit."""

    arch: str = "aarch64"
    python: str = "3.11"
    glibc_minor: int = 36  # Debian 12 / Raspberry Pi OS Bookworm: glibc 2.36

    def __str__(self) -> str:
        return f"{self.arch}, CPython {self.python}, glibc 2.{self.glibc_minor}"

    def pip_args(self) -> list[str]:
        """pip's options that select wheels for this target instead of the build machine."""
        platforms = [f"manylinux_2_{m}_{self.arch}" for m in range(self.glibc_minor, 16, -1)]
        abi = "cp" + self.python.replace(".", "")
        return ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python, "--abi", abi,
                *(arg for p in [*platforms, f"manylinux2014_{self.arch}"] for arg in ("--platform", p))]


def check_base(root: Path, target: Target) -> None:
    """A base with a python3 tells its CPython version and CPU; the target must match them."""
    versions = sorted(p.name.removeprefix("python") for p in (root / "usr/lib").glob("python3.*")
                      if (p / "os.py").exists())
    if versions and target.python not in versions:
        raise ImageError(f"--python {target.python}: the base's CPython is {', '.join(versions)}")
    binary = root / "usr/bin" / f"python{target.python}"
    if binary.is_file():
        with open(binary, "rb") as f:
            head = f.read(20)
        machine = ELF_MACHINES.get(int.from_bytes(head[18:20], "little"), "unknown") if head[:4] == b"\x7fELF" else None
        if machine is not None and machine != target.arch:
            raise ImageError(f"--arch {target.arch}: the base's {binary.relative_to(root)} is built for {machine}")


def _pip(args: list[str], isolated: bool) -> subprocess.CompletedProcess[str]:
    """pip for the target; ``isolated``: nothing from this machine's pip config or PIP_* settings
    (an extra find-links there would hide a wheel missing from the image)."""
    env = {k: v for k, v in os.environ.items() if not (isolated and k.startswith("PIP_"))}
    if isolated:
        env["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)


def resolve_wheels(project_wheel: Path, wheels: Path, target: Target, wheelhouse: Path | None) -> list[str]:
    """Every dependency's wheel for the target into ``wheels``, from the index or only from
    ``wheelhouse``; the build fails naming a package that has none. Returns what installs."""
    source = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    done = _pip(["download", "-q", "-d", str(wheels), *source, *target.pip_args(), f"{project_wheel}[{EXTRAS}]"],
                isolated=wheelhouse is not None)
    if done.returncode != 0:
        missing = re.findall(r"No matching distribution found for (\S+)", done.stderr)
        if missing:
            raise ImageError(f"no wheel of {missing[0]} for the target ({target}) "
                             f"{'in ' + str(wheelhouse) if wheelhouse else 'on the package index'}; "
                             "the appliance installs offline, so every package needs a wheel for it")
        raise ImageError(f"resolving the wheels for {target}: {done.stderr.strip()[-600:]}")
    # the first boot's own install, resolved for the target with nothing but these wheels
    offline = _pip(["install", "--dry-run", "--ignore-installed", "--no-index", "--find-links", str(wheels),
                    *target.pip_args(), "--report", "-", "-q", f"billmaster-arbiter[{EXTRAS}]"], isolated=True)
    if offline.returncode != 0:
        raise ImageError(f"the image's wheels do not install offline on {target}: {offline.stderr.strip()[-600:]}")
    return sorted(item["metadata"]["name"] for item in json.loads(offline.stdout)["install"])


def stage_root(base_root: Path, stage: Path, wheelhouse: Path | None, target: Target) -> tuple[Path, list[str]]:
    check_base(base_root, target)
    shutil.copytree(base_root, stage, symlinks=True)
    wheels = stage / "opt/arbiter/wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], "build the wheel")
    project_wheel = next(wheels.glob("billmaster_arbiter-*.whl"))
    installs = resolve_wheels(project_wheel, wheels, target, wheelhouse)
    (stage / "opt/arbiter/install.sh").write_text(
        "#!/bin/sh\n# First boot: the firmware's venv from the wheels shipped in this image, offline.\nset -e\n"
        'here=$(dirname "$(readlink -f "$0")")\n'
        "# the base's pip.conf may name an index (Raspberry Pi OS names piwheels): none is used\n"
        "export PIP_CONFIG_FILE=/dev/null\n"
        'python3 -m venv "$here"/venv\n'
        f'"$here"/venv/bin/pip install --no-index --find-links "$here"/wheels \'billmaster-arbiter[{EXTRAS}]\'\n')
    os.chmod(stage / "opt/arbiter/install.sh", 0o755)
    shutil.copy2(BOARD / "systemd/arbiter-firstboot.sh", stage / "opt/arbiter/firstboot.sh")
    os.chmod(stage / "opt/arbiter/firstboot.sh", 0o755)
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
    for page in sorted((ROOT / "docs/man").glob("*.[1-8]")):  # the units' Documentation= names them
        section = stage / f"usr/share/man/man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy2(page, section / page.name)
    rules = stage / "etc/udev/rules.d"
    rules.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BOARD / "udev/99-arbiter.rules", rules)
    return project_wheel, installs


def build(output: Path, size_mib: int, boot_mib: int, base_dir: Path | None, base_image: Path | None,
          wheelhouse: Path | None = None, target: Target = Target()) -> dict[str, object]:
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
        step(f"root partition: base tree, wheels for {target}, units enabled, watchdog, udev")
        wheel, installs = stage_root(base_dir / "root", tmp / "root", wheelhouse, target)
        wheel_count = len(list((tmp / "root/opt/arbiter/wheels").glob("*.whl")))
        rootfs = tmp / "root.ext4"
        run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(tmp / "root"), str(rootfs),
             f"{root_sectors * SECTOR // 1024}k"], "mkfs.ext4")
        step("writing both partitions into the image")
        _copy_into(output, boot, boot_start * SECTOR)
        _copy_into(output, rootfs, root_start * SECTOR)
    took = round(time.monotonic() - t0, 2)
    step(f"done: {output} in {took} s")
    return {"image": str(output), "size_mib": size_mib, "boot_offset": boot_start * SECTOR,
            "root_offset": root_start * SECTOR, "wheel": wheel.name, "arch": target.arch, "python": target.python,
            "wheels": wheel_count, "installs": installs, "seconds": took}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arbiter-image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--base-dir", type=Path, help="a base with boot/ and root/ folders")
    src.add_argument("--base", type=Path, help="a Raspberry Pi OS Lite image to start from")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--size", type=int, default=2048, help="image size in MiB (default %(default)s)")
    parser.add_argument("--boot-mib", type=int, default=256, help="boot partition in MiB (default %(default)s)")
    parser.add_argument("--arch", choices=sorted(set(ELF_MACHINES.values())), default=Target.arch,
                        help="the appliance's CPU, which every wheel must fit (default %(default)s: Pi 3, 4, 5, CM4)")
    parser.add_argument("--python", default=Target.python,
                        help="the base's CPython version (default %(default)s: Debian 12, Pi OS Bookworm)")
    parser.add_argument("--wheelhouse", type=Path,
                        help="resolve the wheels from this folder only, without the package index (offline build)")
    parser.add_argument("--json", action="store_true", help="print a summary as JSON")
    args = parser.parse_args(argv)
    try:
        result = build(args.output, args.size, args.boot_mib, args.base_dir, args.base, args.wheelhouse,
                       Target(args.arch, args.python))
    except (ImageError, subprocess.CalledProcessError) as exc:
        args.output.unlink(missing_ok=True)  # half an image must not be flashed by mistake
        print(f"arbiter-image: {exc}; no image written", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else
          f"{result['image']}: built for {args.arch} in {result['seconds']} s, {result['wheels']} wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
