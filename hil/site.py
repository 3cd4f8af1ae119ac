"""A whole site on one Linux machine: one network namespace per host on a bridged LAN (the
bridge lives in its own namespace, so nothing touches the machine's own network), serial
cables as socat pty pairs, processes per host, and the faults the scenarios inject.

Teardown always runs: on leaving the context, on an exception, on SIGINT/SIGTERM and at
exit. ``cleanup_stale`` removes what a killed run left behind.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "192.0.2"  # TEST-NET-1: documentation addresses, used only inside our namespaces
VIP = f"{SUBNET}.100/24"


def sh(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, input=input)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def cleanup_stale(prefix: str) -> None:
    listed = sh("ip", "netns", "list", check=False).stdout.split("\n")
    for line in listed:
        ns = line.split(" ")[0]
        if ns.startswith(f"{prefix}-"):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
    sh("pkill", "-f", f"socat .*hil-{prefix}-tty", check=False)


@dataclass
class Proc:
    host: str
    name: str
    popen: subprocess.Popen

    def kill(self) -> None:
        _signal_group(self.popen, signal.SIGKILL)

    def terminate(self) -> None:
        _signal_group(self.popen, signal.SIGTERM)

    def send_signal(self, sig: int) -> None:
        _signal_group(self.popen, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.popen.wait(5)


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Site:
    prefix: str
    hosts: list[str]
    workdir: Path
    procs: dict[str, list[Proc]] = field(default_factory=dict)
    _socat: dict[str, subprocess.Popen] = field(default_factory=dict)
    _built: bool = False

    vip = VIP

    # ------------------------------------------------------------------ naming

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def lan(self) -> str:
        return f"{self.prefix}-lan"

    def ip(self, host: str) -> str:
        return f"{SUBNET}.{11 + self.hosts.index(host)}"

    def mac(self, host: str) -> str:
        return f"02:ba:00:00:00:{11 + self.hosts.index(host):02x}"

    def _port(self, host: str) -> str:
        return f"p{self.hosts.index(host)}"

    def serial_path(self, server: str, side: str) -> Path:
        return self.workdir / f"hil-{self.prefix}-tty-{server}-{side}"

    # ------------------------------------------------------------------ build and teardown

    def __enter__(self) -> Site:
        self.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def build(self) -> None:
        cleanup_stale(self.prefix)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        atexit.register(self.teardown)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise_exit)
        self._built = True
        sh("ip", "netns", "add", self.lan)
        sh("ip", "-n", self.lan, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.lan, "link", "set", "br0", "up")
        for host in self.hosts:
            self._add_host(host)
        for host in self.hosts:
            if host not in ("arbiter", "client"):
                self.plug_serial(host)

    def _add_host(self, host: str) -> None:
        ns, port = self.netns(host), self._port(host)
        tmp = f"{self.prefix}{port}h"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", tmp, "type", "veth", "peer", "name", port, "netns", self.lan)
        sh("ip", "link", "set", tmp, "netns", ns)
        sh("ip", "-n", ns, "link", "set", tmp, "name", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "address", self.mac(host))
        sh("ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.lan, "link", "set", port, "master", "br0")
        sh("ip", "-n", self.lan, "link", "set", port, "up")

    def teardown(self) -> None:
        if not self._built:
            return
        self._built = False
        for procs in self.procs.values():
            for p in procs:
                p.kill()
        for host in list(self._socat):
            self.pull_serial(host)
        for host in self.hosts:
            sh("ip", "netns", "del", self.netns(host), check=False)
        sh("ip", "netns", "del", self.lan, check=False)
        cleanup_stale(self.prefix)

    # ------------------------------------------------------------------ processes

    def spawn(self, host: str, argv: list[str], env: dict[str, str] | None = None,
              log_name: str | None = None) -> Proc:
        name = log_name or Path(argv[0]).name
        log = open(self.workdir / "logs" / f"{name}.log", "ab")
        popen = subprocess.Popen(["ip", "netns", "exec", self.netns(host), *argv], stdout=log,
                                 stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                 start_new_session=True, cwd=str(Path(__file__).resolve().parent.parent))
        log.close()
        proc = Proc(host, name, popen)
        self.procs.setdefault(host, []).append(proc)
        return proc

    def kill_all(self, host: str) -> None:
        """Every process of the host dies at once (a crash); its link stays up."""
        for p in self.procs.pop(host, []):
            p.kill()
        for pid in sh("ip", "netns", "pids", self.netns(host), check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _signal_host(self, host: str, sig: int) -> None:
        for pid in sh("ip", "netns", "pids", self.netns(host), check=False).stdout.split():
            try:
                os.kill(int(pid), sig)
            except ProcessLookupError:
                pass

    def hang(self, host: str) -> None:
        self._signal_host(host, signal.SIGSTOP)

    def resume(self, host: str) -> None:
        self._signal_host(host, signal.SIGCONT)

    def add_address(self, host: str, address: str) -> None:
        sh("ip", "-n", self.netns(host), "addr", "add", address, "dev", "eth0")

    # ------------------------------------------------------------------ faults

    def power_cut(self, host: str) -> None:
        """What the fence relay does: everything on the host dies and its NIC goes dark."""
        self.kill_all(host)
        self.lan_pull(host)

    def power_on(self, host: str) -> None:
        """The host boots: addresses added at run time (a virtual IP) are gone."""
        sh("ip", "-n", self.netns(host), "addr", "flush", "dev", "eth0")
        sh("ip", "-n", self.netns(host), "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
        self.lan_plug(host)

    def lan_pull(self, host: str) -> None:
        sh("ip", "-n", self.lan, "link", "set", self._port(host), "down")

    def lan_plug(self, host: str) -> None:
        sh("ip", "-n", self.lan, "link", "set", self._port(host), "up")

    def pull_serial(self, server: str) -> None:
        popen = self._socat.pop(server, None)
        if popen is not None:
            popen.kill()
            popen.wait(5)

    def plug_serial(self, server: str) -> None:
        a, b = self.serial_path(server, "arbiter"), self.serial_path(server, "server")
        self._socat[server] = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"socat did not create {a} and {b}")
            time.sleep(0.01)

    def _nft(self, host: str, script: str) -> None:
        sh("ip", "netns", "exec", self.netns(host), "nft", "-f", "-", input=script)

    def _table(self, host: str) -> None:
        self._nft(host, "table inet hil {\n chain input { type filter hook input priority 0; }\n"
                        " chain output { type filter hook output priority 0; }\n}\n")

    def loss(self, host: str, percent: int) -> None:
        """Drop a random share of the host's LAN packets, both ways."""
        self._table(host)
        for chain, dev in (("input", "iifname"), ("output", "oifname")):
            self._nft(host, f'add rule inet hil {chain} {dev} "eth0" numgen random mod 100 < {percent} drop\n')

    def partition(self, a: str, b: str) -> None:
        """a and b stop hearing each other on the LAN; both still reach everyone else."""
        self._table(a)
        self._nft(a, f"add rule inet hil input ip saddr {self.ip(b)} drop\n"
                     f"add rule inet hil output ip daddr {self.ip(b)} drop\n")

    def heal(self, a: str, b: str) -> None:
        sh("ip", "netns", "exec", self.netns(a), "nft", "delete", "table", "inet", "hil", check=False)

    def clear_faults(self) -> None:
        for host in self.hosts:
            sh("ip", "netns", "exec", self.netns(host), "nft", "delete", "table", "inet", "hil", check=False)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
