"""keepalived (VRRP) on the rig, for the side-by-side benchmark: the same site, the same
client probe, the same fault.

What is fair: every server starts as BACKUP with its own priority and ``nopreempt``, so a
server that comes back never takes the address back (the appliance does no automatic
failback either); the first server is started alone and wins the first election, as the
master holds the address when the appliance arrives. Gratuitous ARP is left at keepalived's
defaults (a burst of 5 on becoming master, 5 more 5 s later): a stock installation, not one
tuned for the rig.
"""
from __future__ import annotations

import time
from pathlib import Path

from hil.rig import PROBE_PORT, PY
from hil.site import DEFAULT_PREFIX, Proc, Site, check_prefix

ROUTER_ID = 51
TOP_PRIORITY = 200
PRIORITY_STEP = 10


def config(name: str, priority: int, advert_int: float, vip: str, version: int = 3,
           preempt: bool = False, router_id: int = ROUTER_ID) -> str:
    """One server's keepalived.conf: one VRRP instance on eth0 carrying the virtual IP."""
    no_failback = "" if preempt else "    nopreempt\n"
    return f"""global_defs {{
    router_id {name}
    script_user root
    enable_script_security
}}
vrrp_instance billing {{
    state BACKUP
{no_failback}    interface eth0
    virtual_router_id {router_id}
    priority {priority}
    advert_int {advert_int:g}
    version {version}
    virtual_ipaddress {{
        {vip} dev eth0
    }}
}}
"""


class Keepalived:
    """keepalived in each server's namespace: only its VRRP process (``-P``), in the
    foreground (``-n``), logging to the console (``-l -D``, not syslog: ``-G``), with pid
    files of its own so several instances share one machine."""

    def __init__(self, site: Site, servers: list[str], advert_int: float, workdir: Path | None = None,
                 *, vip: str | None = None, version: int = 3, preempt: bool = False) -> None:
        if version == 2 and advert_int != int(advert_int):
            raise ValueError(f"advert_int={advert_int:g}: VRRPv2 needs whole seconds; use version=3")
        self.site, self.servers, self.advert_int = site, servers, advert_int
        self.workdir = workdir or site.workdir / "keepalived"
        self.vip = vip or site.vip
        self.version, self.preempt = version, preempt
        self.procs: dict[str, Proc] = {}

    def start(self) -> None:
        """The first server alone first, until it holds the address; then the others."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(self.servers):
            self._start_one(name, TOP_PRIORITY - PRIORITY_STEP * i)
            if i == 0 and not self.wait_holder(name, 4 * self.advert_int + 5):
                raise TimeoutError(f"keepalived: {name} did not take {self.vip} within "
                                   f"{4 * self.advert_int + 5:g} s (holders {self.holder()})")

    def _start_one(self, name: str, priority: int) -> None:
        conf = self.workdir / f"keepalived-{name}.conf"
        conf.write_text(config(name, priority, self.advert_int, self.vip, self.version, self.preempt))
        pid, vrrp_pid = (self.site.run_dir / f"keepalived-{name}{s}.pid" for s in ("", "-vrrp"))
        self.procs[name] = self.site.spawn(
            name, ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(conf), "-p", str(pid), "-r", str(vrrp_pid)],
            log_name=f"keepalived-{name}")

    def holder(self) -> list[str]:
        """The servers that have the virtual IP on eth0 (two during a split brain)."""
        return [n for n in self.servers if self.vip in self.site.addresses(n)]

    def wait_holder(self, name: str, timeout: float, alone: bool = True) -> bool:
        """True once ``name`` holds the address and, if ``alone``, no other server does (a
        server cut off from the LAN keeps it: then wait with ``alone=False``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = self.holder()
            if held == [name] or (not alone and name in held):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM: keepalived removes the address it holds on the way out."""
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(5)
        self.procs = {}


def site_prefix(prefix: str) -> str:
    """keepalived's pair gets a prefix of its own, derived from the rig's (``ba`` -> ``bak``), so
    cleaning up one never touches the other, and two rigs' pairs never meet."""
    return check_prefix(f"{prefix}k")


def on_pair(workdir: Path, advert_int: float, prefix: str = DEFAULT_PREFIX) -> tuple[Site, Keepalived]:
    """A master and a standby with the rig's echo server, keepalived on both, the master
    holding the address, and a client host; the caller tears the site down."""
    site = Site(site_prefix(prefix), ["master", "standby", "client"], workdir)
    site.build()
    try:
        for name in ("master", "standby"):
            site.spawn(name, [PY, "-m", "hil.probe", "serve", "--port", str(PROBE_PORT), "--name", name],
                       log_name=f"echo-{name}")
        ka = Keepalived(site, ["master", "standby"], advert_int, workdir)
        ka.start()
        if not ka.wait_holder("master", 10 * advert_int + 5):
            raise RuntimeError(f"keepalived: master did not take the address (holders {ka.holder()})")
    except BaseException:
        site.teardown()
        raise
    return site, ka
