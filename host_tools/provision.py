"""arbiter-provision: put a site's config, its HMAC key and SNMPv3 secrets on a card.

The config is validated with the daemon's own schema first; a bad one is refused with
every problem named. Files go to arbiter/ on the FAT boot partition, inside an image file
(mtools at the partition's offset) or a mounted boot folder. Secrets are never printed and
never put on a command line: mcopy copies them from a private (0600) temp file. FAT keeps
no file modes, so the first-boot unit moves them to /etc/arbiter with mode 0600 and deletes
them from the card; in a boot folder they are written 0600 directly.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from firmware import config
from firmware.errors import ConfigError
from host_tools.image import SECTOR, ImageError, partitions


def _files(site_config: Path, key_file: Path, secrets: list[str]) -> dict[str, bytes]:
    config.load(site_config)  # raises ConfigError naming every problem
    key = config.read_key(key_file)
    out = {"arbiter.toml": site_config.read_bytes(), "site.key": key + b"\n"}
    for item in secrets:
        name, sep, path = item.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError([f"--snmp-secret {name!r}: must be NAME=FILE with NAME a plain word"])
        try:
            out[f"snmp/{name}"] = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError([f"--snmp-secret {name}: cannot read its file ({exc.strerror})"]) from exc
    return out


def to_boot_dir(boot: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = boot / "arbiter" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(target, 0o600)


def to_image(image: Path, files: dict[str, bytes]) -> None:
    boot = partitions(image)[0]
    if boot.get("type") not in ("c", "b", "e"):
        raise ImageError(f"{image}: partition 1 is type {boot.get('type')}, not a FAT boot partition")
    target = f"{image}@@{boot['start'] * SECTOR}"
    for folder in ("::/arbiter", "::/arbiter/snmp"):
        subprocess.run(["mmd", "-i", target, folder], capture_output=True)  # may exist already
    with tempfile.TemporaryDirectory(prefix="arbiter-provision-") as tmp:
        os.chmod(tmp, 0o700)
        for rel, data in files.items():
            staged = Path(tmp) / rel.replace("/", "_")
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            done = subprocess.run(["mcopy", "-o", "-i", target, str(staged), f"::/arbiter/{rel}"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise ImageError(f"writing arbiter/{rel} into {image}: {done.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arbiter-provision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the site's arbiter.toml")
    parser.add_argument("--key-file", type=Path, required=True, help="the site's HMAC key")
    parser.add_argument("--snmp-secret", action="append", default=[], metavar="NAME=FILE",
                        help="an SNMPv3 secret file to ship (repeatable)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", type=Path, help="a built or flashed image file")
    where.add_argument("--boot-dir", type=Path, help="a mounted boot partition")
    args = parser.parse_args(argv)
    try:
        files = _files(args.config, args.key_file, args.snmp_secret)
        if args.image:
            to_image(args.image, files)
        else:
            to_boot_dir(args.boot_dir, files)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"arbiter-provision: config error: {p}", file=sys.stderr)
        print("arbiter-provision: nothing written", file=sys.stderr)
        return 2
    except ImageError as exc:
        print(f"arbiter-provision: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(f"arbiter/{rel}" for rel in files)
    print(f"provisioned {args.image or args.boot_dir}: {names} (secrets not shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
