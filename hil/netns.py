"""Thin helpers over iproute2 and nftables for the rig's network namespaces.

Everything goes through the ``ip`` and ``nft`` commands (no netlink library), so what the rig
does can be replayed by hand from its log, and a failed command names itself and its stderr.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


class CommandError(RuntimeError):
    """A command of the rig that exited non-zero; the message names it and its stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)}: exit {returncode}: {stderr.strip()}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


def run(*argv: str, check: bool = True, input: str | None = None,
        timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run one command to completion; the timeout keeps a wedged ``ip`` from hanging a run."""
    done = subprocess.run(list(argv), check=False, capture_output=True, text=True, input=input,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise CommandError(list(argv), done.returncode, done.stderr)
    return done


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip -n NS ...``: the command acts inside the namespace without entering it."""
    return run("ip", "-n", ns, *args, check=check)


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``ns`` (``ip netns exec`` replaces itself, no fork)."""
    return ["ip", "netns", "exec", ns, *argv]


def names() -> list[str]:
    """Every named namespace on the machine (``ip netns list`` may append an id)."""
    listed = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def add(ns: str) -> None:
    run("ip", "netns", "add", ns)


def delete(ns: str) -> None:
    """Idempotent: a namespace that is already gone is not an error at teardown."""
    if ns in names():
        run("ip", "netns", "del", ns, check=False)


def pids(ns: str) -> list[int]:
    """Every process whose network namespace is ``ns``, however it got there."""
    if ns not in names():
        return []
    return [int(p) for p in run("ip", "netns", "pids", ns, check=False).stdout.split()]


def signal_pids(pids_: list[int], sig: int) -> None:
    """Signal each process; one that has already exited is no error."""
    for pid in pids_:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair created directly between two namespaces, so no interface name ever
    appears in the machine's own namespace (where it could clash with anyone's)."""
    ip(ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)


def link_set(ns: str, dev: str, up: bool) -> None:
    ip(ns, "link", "set", dev, "up" if up else "down")


def addresses(ns: str, dev: str) -> list[str]:
    """IPv4 addresses on ``dev`` as ``a.b.c.d/len``."""
    out = ip(ns, "-4", "-o", "addr", "show", "dev", dev, check=False).stdout
    return [f.split()[3] for f in out.splitlines() if len(f.split()) > 3]


def nft(ns: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Load an nft script inside the namespace (each namespace has its own ruleset)."""
    return run(*exec_argv(ns, ["nft", "-f", "-"]), input=script, check=check)


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (nobody may reap it here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pids_with_arg(fragment: str) -> list[int]:
    """Processes one of whose arguments contains ``fragment``: finds a stale run's helpers
    (socat) by the unique paths they were given, without matching anything by name."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(fragment.encode() in a for a in args):
            found.append(int(entry.name))
    return found

