"""A whole site on one Linux machine: one network namespace per host on a bridged LAN (the
bridge lives in its own namespace, so nothing touches the machine's own network), serial
cables as socat pty pairs, processes per host, and the faults the scenarios inject.

    prefix-lan:  br0 --p0-- eth0 prefix-master   192.0.2.11  02:ba:00:00:00:0b
                     --p1-- eth0 prefix-standby  192.0.2.12  02:ba:00:00:00:0c
                     --p2-- eth0 prefix-arbiter  ...
    arbiter <== WORKDIR/hil-PREFIX-run/tty-SERVER-{arbiter,server} ==> each server

Two places model two different faults: ``lan_pull`` downs the bridge port (the cable or the
switch port), ``power_cut`` downs the host's own eth0 (a dark NIC) after killing everything.

Teardown always runs: on leaving the context, on an exception, on SIGINT/SIGTERM/SIGHUP
(their handlers raise, so the context unwinds) and at exit. ``cleanup_stale`` removes what a
run killed with SIGKILL left behind.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from hil import netns
from hil.lifecycle import Built

DEFAULT_PREFIX = "ba"  # the rig's namespace prefix; another prefix lets a second rig run beside it
SUBNET = "192.0.2"  # TEST-NET-1: documentation addresses, used only inside our namespaces
VIP = f"{SUBNET}.100/24"
DEFAULT_HOSTS = ("master", "standby", "arbiter", "client")
NOT_SERVERS = frozenset({"arbiter", "client", "gw"})  # gw: the clients' gateway, a ping target
MAX_HOSTS = 80  # host addresses .11 to .90 stay below the virtual IP
NAME_RE = re.compile(r"[a-z][a-z0-9]{0,11}")
LOSS_TABLE = "hil_loss"
CUT_TABLE = "hil_cut"
REPO = Path(__file__).resolve().parent.parent
TEARDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _run_dir_fragment(prefix: str) -> str:
    """The path part that names a site's runtime files: unique per prefix, so a later run
    finds a killed run's socat processes by their arguments."""
    return f"hil-{prefix}-run/"


def cleanup_stale(prefix: str) -> None:
    """Remove a previous run's namespaces, their processes and its serial cables."""
    for ns in netns.names():
        if ns.startswith(f"{prefix}-"):
            netns.signal_pids(netns.pids(ns), signal.SIGKILL)
            netns.delete(ns)
    netns.signal_pids(netns.pids_with_arg(_run_dir_fragment(prefix)), signal.SIGKILL)


@dataclass(frozen=True)
class Proc:
    """One process started on a host, leader of its own process group, so a signal reaches
    whatever it forked as well."""
    host: str
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the group and reap the leader, so no zombie outlives the site."""
        self.send_signal(signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass  # stuck in the kernel (D state): the namespace teardown still goes on

    def wait(self, timeout: float) -> int | None:
        """Exit code; a process that does not end in time is killed rather than waited for."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.popen.poll()


class Site(Built):
    """The namespaces, links, cables and processes of one rig run. Build once, tear down once."""

    vip = VIP

    def __init__(self, prefix: str, hosts: Sequence[str] = DEFAULT_HOSTS,
                 workdir: Path | None = None) -> None:
        _check_names(prefix, list(hosts))
        self.prefix = prefix
        self.hosts = list(hosts)
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"hil-{prefix}-"))
        self.procs: dict[str, list[Proc]] = {}
        self._socat: dict[str, subprocess.Popen[bytes]] = {}
        self._built = False
        self._lock = threading.Lock()
        self._old_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ naming

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{self._known(host)}"

    @property
    def lan(self) -> str:
        return f"{self.prefix}-lan"

    @property
    def servers(self) -> list[str]:
        return [h for h in self.hosts if h not in NOT_SERVERS]

    @property
    def run_dir(self) -> Path:
        """Runtime files (pty links, pid files): removed at teardown, unlike logs/."""
        return self.workdir / _run_dir_fragment(self.prefix).rstrip("/")

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def ip(self, host: str) -> str:
        return f"{SUBNET}.{11 + self.hosts.index(self._known(host))}"

    def mac(self, host: str) -> str:
        return f"02:ba:00:00:00:{11 + self.hosts.index(self._known(host)):02x}"

    def serial_path(self, server: str, side: str) -> Path:
        """``side`` is "arbiter" (the appliance's end) or "server" (the server's COM port)."""
        if side not in ("arbiter", "server") or server not in self.servers:
            raise ValueError(f"serial_path: server={server!r} side={side!r}: "
                             f"need one of {self.servers} and 'arbiter' or 'server'")
        return self.run_dir / f"tty-{server}-{side}"

    def _port(self, host: str) -> str:
        return f"p{self.hosts.index(host)}"

    def _known(self, host: str) -> str:
        if host not in self.hosts:
            raise ValueError(f"host={host!r}: not on this site (hosts: {', '.join(self.hosts)})")
        return host

    # ------------------------------------------------------------------ build and teardown

    def build(self) -> None:
        """Leftovers of a crashed run with the same prefix go first; teardown is armed before
        the first namespace exists, so a failure half way leaves nothing behind."""
        cleanup_stale(self.prefix)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._built = True
        atexit.register(self.teardown)
        self._install_handlers()
        netns.add(self.lan)
        netns.ip(self.lan, "link", "add", "br0", "type", "bridge")
        netns.link_set(self.lan, "br0", True)
        for host in self.hosts:
            self._add_host(host)
        for server in self.servers:
            self.plug_serial(server)

    def _add_host(self, host: str) -> None:
        ns, port = self.netns(host), self._port(host)
        netns.add(ns)
        netns.veth(self.lan, port, ns, "eth0")
        netns.ip(ns, "link", "set", "eth0", "address", self.mac(host))
        netns.ip(ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
        netns.link_set(ns, "eth0", True)
        netns.link_set(ns, "lo", True)
        netns.ip(self.lan, "link", "set", port, "master", "br0")
        netns.link_set(self.lan, port, True)

    def close(self) -> None:
        self.teardown()

    def teardown(self) -> None:
        """Idempotent and uninterruptible by the signals it handles: a second Ctrl-C while
        tearing down must not leave half a site."""
        with self._lock:
            if not self._built:
                return
            self._built = False
            self._ignore_teardown_signals()
            try:
                self._destroy()
            finally:
                self._restore_handlers()
                atexit.unregister(self.teardown)

    def _destroy(self) -> None:
        for host in self.hosts:
            self.kill_all(host)
        for server in list(self._socat):
            self.pull_serial(server)
        for host in self.hosts:
            netns.delete(self.netns(host))
        netns.delete(self.lan)
        cleanup_stale(self.prefix)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; atexit still covers this site
        for sig in TEARDOWN_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, _raise_for_signal)

    def _ignore_teardown_signals(self) -> None:
        if self._old_handlers and threading.current_thread() is threading.main_thread():
            for sig in TEARDOWN_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, old in self._old_handlers.items():
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old_handlers = {}

    # ------------------------------------------------------------------ processes

    def spawn(self, host: str, argv: list[str], env: dict[str, str] | None = None,
              log_name: str | None = None) -> Proc:
        """Run ``argv`` in the host's namespace, in its own process group, from the repository
        root (so ``python -m hil...`` works), output appended to logs/<log_name>.log."""
        name = log_name or Path(argv[0]).name
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(netns.exec_argv(self.netns(host), argv), stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, start_new_session=True,
                                     cwd=str(REPO))
        proc = Proc(host, name, popen, log)
        self.procs.setdefault(host, []).append(proc)
        return proc

    def host_pids(self, host: str) -> list[int]:
        """Every live process of the host: the tracked ones and whatever else entered its
        namespace (daemons that fork and detach, other components' servers)."""
        tracked = [p.pid for p in self.procs.get(host, []) if p.alive()]
        return sorted(set(tracked) | set(netns.pids(self.netns(host))))

    def all_pids(self) -> list[int]:
        """Every live process the site owns, serial cables included: what teardown must end."""
        cables = [p.pid for p in self._socat.values() if p.poll() is None]
        return sorted({pid for host in self.hosts for pid in self.host_pids(host)} | set(cables))

    def kill_all(self, host: str) -> None:
        """Every process of the host dies at once; its link stays as it is."""
        procs = self.procs.pop(host, [])
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        netns.signal_pids(netns.pids(self.netns(host)), signal.SIGKILL)
        for proc in procs:
            proc.kill()  # reaps the leader

    def crash(self, host: str, proc: Proc) -> None:
        """One process dies (SIGKILL to its group); the rest of the host goes on."""
        proc.kill()
        if proc in self.procs.get(host, []):
            self.procs[host].remove(proc)

    def hang(self, host: str) -> None:
        """Every process of the host freezes (SIGSTOP): alive, holding its sockets, silent."""
        netns.signal_pids(self.host_pids(host), signal.SIGSTOP)

    def resume(self, host: str) -> None:
        netns.signal_pids(self.host_pids(host), signal.SIGCONT)

    def add_address(self, host: str, address: str) -> None:
        netns.ip(self.netns(host), "addr", "add", address, "dev", "eth0")

    def del_address(self, host: str, address: str) -> None:
        netns.ip(self.netns(host), "addr", "del", address, "dev", "eth0")

    def addresses(self, host: str) -> list[str]:
        return netns.addresses(self.netns(host), "eth0")

    # ------------------------------------------------------------------ power

    def power_cut(self, host: str) -> None:
        """What the fence relay does: the NIC goes dark first (nothing leaves after the cut),
        then everything on the host dies."""
        netns.link_set(self.netns(host), "eth0", False)
        self.kill_all(host)

    def power_on(self, host: str) -> None:
        """The host boots: addresses added at run time (a virtual IP) are gone, the NIC comes
        up with its own address only. Its processes are the caller's to start again."""
        ns = self.netns(host)
        netns.ip(ns, "addr", "flush", "dev", "eth0")
        netns.ip(ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
        netns.link_set(ns, "eth0", True)

    # ------------------------------------------------------------------ LAN faults

    def lan_pull(self, host: str) -> None:
        """The cable is out: the bridge port goes down, the host still believes in its link."""
        netns.link_set(self.lan, self._port(self._known(host)), False)

    def lan_plug(self, host: str) -> None:
        netns.link_set(self.lan, self._port(self._known(host)), True)

    def loss(self, host: str, percent: int) -> None:
        """Drop a random ``percent`` of the host's packets on eth0, both ways; 0 ends it."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss percent={percent}: must be within 0..100")
        script = f"table inet {LOSS_TABLE} {{}}\ndelete table inet {LOSS_TABLE}\n"
        odds = "" if percent == 100 else f"numgen random mod 100 < {percent} "  # nft caps at 99
        if percent:
            script += (f"table inet {LOSS_TABLE} {{\n"
                       f" chain input {{ type filter hook input priority -10; "
                       f"iifname \"eth0\" {odds}drop; }}\n"
                       f" chain output {{ type filter hook output priority -10; "
                       f"oifname \"eth0\" {odds}drop; }}\n}}\n")
        netns.nft(self.netns(host), script)

    def partition(self, a: str, b: str) -> None:
        """a and b stop hearing each other (their own addresses, both ways, in both hosts);
        both still reach everyone else, the virtual IP included."""
        for here, there in ((a, b), (b, a)):
            self._cut_table(here)
            netns.nft(self.netns(here), f"add element inet {CUT_TABLE} peers {{ {self.ip(there)} }}\n")

    def heal(self, a: str, b: str) -> None:
        for here, there in ((a, b), (b, a)):
            self._cut_table(here)
            netns.nft(self.netns(here), f"delete element inet {CUT_TABLE} peers {{ {self.ip(there)} }}\n",
                      check=False)

    def _cut_table(self, host: str) -> None:
        """Created once per host: declaring it again would add its rules a second time."""
        if self._has_table(host, CUT_TABLE):
            return
        netns.nft(self.netns(host), (
            f"table inet {CUT_TABLE} {{\n set peers {{ type ipv4_addr; }}\n"
            f" chain input {{ type filter hook input priority -20; ip saddr @peers drop; }}\n"
            f" chain output {{ type filter hook output priority -20; ip daddr @peers drop; }}\n}}\n"))

    def _has_table(self, host: str, table: str) -> bool:
        listed = netns.run(*netns.exec_argv(self.netns(host), ["nft", "list", "tables"]), check=False)
        return f"table inet {table}" in listed.stdout.splitlines()

    def clear_faults(self) -> None:
        """Loss and partitions gone, every LAN cable and serial cable plugged. Power and hangs
        are left alone: they are states the caller ends with power_on and resume."""
        for host in self.hosts:
            netns.nft(self.netns(host), "".join(f"table inet {t} {{}}\ndelete table inet {t}\n"
                                                for t in (LOSS_TABLE, CUT_TABLE)))
            self.lan_plug(host)
        for server in self.servers:
            if server not in self._socat:
                self.plug_serial(server)

    # ------------------------------------------------------------------ serial cables

    def pull_serial(self, server: str) -> None:
        """The cable is out: socat dies and both device links go, so an open fails."""
        popen = self._socat.pop(server, None)
        if popen is not None:
            popen.kill()
            popen.wait(5)
        for side in ("arbiter", "server"):
            self.serial_path(server, side).unlink(missing_ok=True)

    def plug_serial(self, server: str) -> None:
        """A fresh pty pair under the same link names (the device nodes behind them change,
        as when a USB serial adapter is plugged again)."""
        if server in self._socat:
            return
        a, b = self.serial_path(server, "arbiter"), self.serial_path(server, "server")
        for link in (a, b):
            link.unlink(missing_ok=True)
        self._socat[server] = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)
        _wait_for(lambda: a.exists() and b.exists(), 5.0, f"socat links {a} and {b}")


def check_prefix(prefix: str) -> str:
    """A prefix ends up in namespace names, paths and cgroup names: plain and short."""
    if not NAME_RE.fullmatch(prefix):
        raise ValueError(f"prefix={prefix!r}: must match {NAME_RE.pattern}")
    return prefix


def _check_names(prefix: str, hosts: list[str]) -> None:
    """Names end up in namespace names, paths and nft scripts: keep them plain and short."""
    check_prefix(prefix)
    bad = [h for h in hosts if not NAME_RE.fullmatch(h) or h == "lan"]
    if bad or len(set(hosts)) != len(hosts) or not 0 < len(hosts) <= MAX_HOSTS:
        raise ValueError(f"hosts={hosts!r}: need 1..{MAX_HOSTS} distinct names matching "
                         f"{NAME_RE.pattern}, not 'lan'")


def _wait_for(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not there within {timeout:g} s")
        time.sleep(0.01)


def _raise_for_signal(signum: int, frame: FrameType | None) -> None:
    """SIGINT unwinds as Ctrl-C does; SIGTERM/SIGHUP as an exit, so ``finally`` blocks and
    context managers tear the site down."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)

