"""arbiter-provision: put what a rack needs on a card: the site's config and secrets, and the
way in for the operator.

Secrets: the config is validated with the daemon's own schema first; a bad one is refused
with every problem named. Then every secret file the config names (site.key_file,
ups.password_file, fence.ups_password_file, the SNMP key and community files) must be one
that first boot installs from this card: /etc/arbiter/site.key, /etc/arbiter/ups.password
(--ups-password), /etc/arbiter/fence-ups.password (--fence-ups-password) or
/etc/arbiter/snmp/NAME (--snmp-secret NAME=FILE). Files go to arbiter/ on the FAT boot
partition, inside an image file (mtools at the partition's offset, the image made 0600
before any secret goes in) or an existing mounted boot folder (0600 files). Secrets are never printed and never put on a command line: mcopy
copies them from a private (0600) temp file. arbiter-firstboot.service moves them to
/etc/arbiter (0600) and overwrites and deletes them on the card, also when the config then
fails its check.

The operator's way in uses Raspberry Pi OS's own first-run convention (Bookworm,
raspberrypi-sys-mods): custom.toml at the top of the boot partition sets the hostname,
renames the first user to --operator with the password locked, and enables SSH with
--ssh-key as its only way in (no password logins). Pi OS applies it on the card's very
first boot, when cmdline.txt still runs its firstboot; a card that booted already is
refused. NetworkManager does DHCP on the wired port by default; --address (with --gateway
and --dns) ships a NetworkManager connection with a static address instead, installed by
arbiter-firstboot.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from firmware import add_version, config
from firmware.errors import ConfigError
from host_tools.image import SECTOR, ImageError, partitions

ETC = "/etc/arbiter"
PI_FIRSTBOOT = "init=/usr/lib/raspberrypi-sys-mods/firstboot"  # in a fresh Pi OS card's cmdline.txt
HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


def secret_keys(cfg: config.Config) -> dict[str, str]:
    """Every `*_file` setting the config gives a value, by its dotted key (lists indexed)."""
    out: dict[str, str] = {}

    def walk(prefix: str, obj: object) -> None:
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(f"{key}.", value)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if dataclasses.is_dataclass(item):
                        walk(f"{key}[{i}].", item)
            elif f.name.endswith("_file") and isinstance(value, str) and value:
                out[key] = value

    walk("", cfg)
    return out


def check_secret_paths(named: dict[str, str], shipped: set[str]) -> list[str]:
    """Each secret file the config names must be one first boot installs from this card."""
    problems = []
    for key, value in named.items():
        if not value.startswith(f"{ETC}/"):
            problems.append(f"{key} = {value!r}: first boot installs secrets in {ETC}/ only (site.key, ups.password, "
                            f"fence-ups.password, snmp/NAME)")
        elif value.removeprefix(f"{ETC}/") not in shipped:
            problems.append(f"{key} = {value!r}: this card does not carry it; ship it with --ups-password, "
                            "--fence-ups-password or --snmp-secret NAME=FILE (site.key comes with --key-file)")
    return problems


def _read(option: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{option} {path}: cannot read it ({exc.strerror})"]) from exc


def secret_files(site_config: Path, key_file: Path, secrets: list[str], ups_password: Path | None,
                 fence_ups_password: Path | None) -> dict[str, bytes]:
    """What goes to arbiter/ on the card, by path below it (and below /etc/arbiter after first boot)."""
    # relative file names as they will resolve on the appliance; ConfigError names every problem
    cfg = config.load(site_config, base=Path(ETC))
    out = {"arbiter.toml": site_config.read_bytes(), "site.key": config.read_key(key_file) + b"\n"}
    if ups_password:
        out["ups.password"] = _read("--ups-password", ups_password)
    if fence_ups_password:
        out["fence-ups.password"] = _read("--fence-ups-password", fence_ups_password)
    for item in secrets:
        name, sep, path = item.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError([f"--snmp-secret {name!r}: must be NAME=FILE with NAME a plain word"])
        out[f"snmp/{name}"] = _read(f"--snmp-secret {name}=", Path(path))
    problems = check_secret_paths(secret_keys(cfg), set(out) - {"arbiter.toml"})
    if problems:
        raise ConfigError(problems)
    return out


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def custom_toml(hostname: str, operator: str, ssh_key: str) -> bytes:
    """Raspberry Pi OS's first-run settings (raspberrypi-sys-mods init_config, config_version 1)."""
    return (f"# Raspberry Pi OS first boot (raspberrypi-sys-mods): written by arbiter-provision\n"
            f"config_version = 1\n\n[system]\nhostname = {_toml_str(hostname)}\n\n"
            f"[user]\n# no password: locked; the operator comes in with the SSH key only\n"
            f"name = {_toml_str(operator)}\n\n"
            f"[ssh]\nenabled = true\npassword_authentication = false\n"
            f"authorized_keys = [{_toml_str(ssh_key)}]\n").encode()


def nm_connection(address: str, gateway: str, dns: list[str]) -> bytes:
    """A NetworkManager keyfile (Bookworm's network stack) for a static address on eth0."""
    servers = "".join(f"{d};" for d in dns)
    return ("[connection]\nid=arbiter-lan\ntype=ethernet\ninterface-name=eth0\nautoconnect=true\n"
            "autoconnect-priority=100\n\n"
            f"[ipv4]\nmethod=manual\naddress1={address},{gateway}\n" + (f"dns={servers}\n" if dns else "")
            + "\n[ipv6]\nmethod=disabled\n").encode()


def access_files(hostname: str | None, operator: str, ssh_key_file: Path | None, address: str | None,
                 gateway: str | None, dns: list[str]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(files at the top of the boot partition, files in arbiter/) for the operator's way in."""
    problems = []
    top: dict[str, bytes] = {}
    mine: dict[str, bytes] = {}
    if hostname is not None or ssh_key_file is not None:
        key = _read("--ssh-key", ssh_key_file).decode(errors="replace").strip() if ssh_key_file else ""
        if not HOSTNAME.fullmatch(hostname or ""):
            problems.append(f"--hostname {hostname!r}: lower-case letters, digits and '-', at most 63 characters")
        if "PRIVATE KEY" in key:
            problems.append(f"--ssh-key {ssh_key_file}: this is a private key; give the .pub file")
        elif key.split(" ")[0] not in SSH_KEY_TYPES or len(key.splitlines()) != 1:
            problems.append(f"--ssh-key {ssh_key_file}: not one OpenSSH public key line ({', '.join(SSH_KEY_TYPES[:3])}...)")
        if not operator.isidentifier() or operator != operator.lower() or operator in ("root", "arbiter"):
            problems.append(f"--operator {operator!r}: a lower-case login name other than root and arbiter")
        top["custom.toml"] = custom_toml(hostname or "", operator, key)
    if address is not None:
        try:
            iface = ipaddress.IPv4Interface(address)
            if "/" not in address or gateway is None or ipaddress.IPv4Address(gateway) not in iface.network:
                raise ValueError
            for d in dns:
                ipaddress.IPv4Address(d)
        except ValueError:
            problems.append(f"--address {address!r} --gateway {gateway!r} --dns {dns!r}: an IPv4 address with its "
                            "prefix, a gateway inside that network, IPv4 name servers")
        else:
            mine["network.nmconnection"] = nm_connection(str(iface), str(gateway), dns)
    if problems:
        raise ConfigError(problems)
    return top, mine


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def boot_has_pi_firstboot(cmdline: str) -> bool:
    return PI_FIRSTBOOT in cmdline


def to_boot_dir(boot: Path, top: dict[str, bytes], files: dict[str, bytes]) -> None:
    if not boot.is_dir():
        raise ImageError(f"--boot-dir {boot}: no such folder; mount the card's boot partition and name its folder")
    if top and not boot_has_pi_firstboot((boot / "cmdline.txt").read_text() if (boot / "cmdline.txt").exists() else ""):
        raise ImageError(f"{boot}/cmdline.txt does not run Raspberry Pi OS's firstboot ({PI_FIRSTBOOT}): "
                         "custom.toml would be ignored; flash a fresh image first")
    for rel, data in top.items():
        _write_private(boot / rel, data)
    for rel, data in files.items():
        target = boot / "arbiter" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_private(target, data)


def to_image(image: Path, top: dict[str, bytes], files: dict[str, bytes]) -> None:
    boot = partitions(image)[0]
    if boot.get("type") not in ("c", "b", "e"):
        raise ImageError(f"{image}: partition 1 is type {boot.get('type')}, not a FAT boot partition")
    os.chmod(image, 0o600)  # before a secret goes in: the image is as secret as its key
    target = f"{image}@@{boot['start'] * SECTOR}"
    if top:
        cmdline = subprocess.run(["mtype", "-i", target, "::/cmdline.txt"], capture_output=True, text=True).stdout
        if not boot_has_pi_firstboot(cmdline):
            raise ImageError(f"{image}: cmdline.txt does not run Raspberry Pi OS's firstboot ({PI_FIRSTBOOT}): "
                             "custom.toml would be ignored; build the image from a fresh Pi OS base")
    for folder in ("::/arbiter", "::/arbiter/snmp"):
        subprocess.run(["mmd", "-i", target, folder], capture_output=True)  # may exist already
    with tempfile.TemporaryDirectory(prefix="arbiter-provision-") as tmp:
        os.chmod(tmp, 0o700)
        for rel, data in [*top.items(), *((f"arbiter/{r}", d) for r, d in files.items())]:
            staged = Path(tmp) / rel.replace("/", "_")
            _write_private(staged, data)
            done = subprocess.run(["mcopy", "-o", "-i", target, str(staged), f"::/{rel}"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise ImageError(f"writing {rel} into {image}: {done.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arbiter-provision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    parser.add_argument("--config", type=Path, required=True, help="the site's arbiter.toml")
    parser.add_argument("--key-file", type=Path, required=True, help=f"the site's HMAC key (-> {ETC}/site.key)")
    parser.add_argument("--ups-password", type=Path, help=f"the NUT user's password file (-> {ETC}/ups.password)")
    parser.add_argument("--fence-ups-password", type=Path,
                        help=f"the fencing NUT user's password file (-> {ETC}/fence-ups.password)")
    parser.add_argument("--snmp-secret", action="append", default=[], metavar="NAME=FILE",
                        help=f"an SNMP secret file (-> {ETC}/snmp/NAME; repeatable)")
    parser.add_argument("--hostname", help="the appliance's host name (Pi OS custom.toml)")
    parser.add_argument("--operator", default="operator", help="the operator's login (default %(default)s)")
    parser.add_argument("--ssh-key", type=Path, help="the operator's SSH public key (.pub): the only way in")
    net = parser.add_mutually_exclusive_group()
    net.add_argument("--dhcp", action="store_true", help="address by DHCP on eth0 (the default)")
    net.add_argument("--address", help="a static address with prefix on eth0, e.g. 192.0.2.20/24")
    parser.add_argument("--gateway", help="with --address: the default gateway")
    parser.add_argument("--dns", action="append", default=[], help="with --address: a name server (repeatable)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", type=Path, help="a built image file")
    where.add_argument("--boot-dir", type=Path, help="the card's mounted boot partition (must exist)")
    args = parser.parse_args(argv)
    if (args.hostname is None) != (args.ssh_key is None):
        parser.error("--hostname and --ssh-key go together: the operator needs both to reach the appliance")
    try:
        files = secret_files(args.config, args.key_file, args.snmp_secret, args.ups_password, args.fence_ups_password)
        top, network = access_files(args.hostname, args.operator, args.ssh_key, args.address, args.gateway, args.dns)
        files.update(network)
        if args.image:
            to_image(args.image, top, files)
        else:
            to_boot_dir(args.boot_dir, top, files)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"arbiter-provision: config error: {p}", file=sys.stderr)
        print("arbiter-provision: nothing written", file=sys.stderr)
        return 2
    except ImageError as exc:
        print(f"arbiter-provision: {exc}", file=sys.stderr)
        return 1
    names = ", ".join([*top, *(f"arbiter/{rel}" for rel in files)])
    print(f"provisioned {args.image or args.boot_dir}: {names} (secrets not shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
