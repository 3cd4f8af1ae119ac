"""keepalived (VRRP) on the rig, for the side-by-side benchmark: the same site, the same
client probe, the same fault. Both servers start as BACKUP with different priorities and
nopreempt, so the one that comes back never takes the address back (no failback, as the
appliance does); the master starts with the address.
"""
from __future__ import annotations

import time
from pathlib import Path

from hil.site import Proc, Site, sh


def config(router_id: int, priority: int, advert_int: float, vip: str, name: str) -> str:
    return f"""global_defs {{
    router_id {name}
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 5
    vrrp_garp_interval 0.2
    script_user root
    enable_script_security
}}
vrrp_instance billing {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id {router_id}
    priority {priority}
    advert_int {advert_int:g}
    version 3
    virtual_ipaddress {{
        {vip} dev eth0
    }}
}}
"""


class Keepalived:
    def __init__(self, site: Site, servers: list[str], advert_int: float, workdir: Path) -> None:
        self.site, self.servers, self.advert_int, self.workdir = site, servers, advert_int, workdir
        self.procs: dict[str, Proc] = {}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(self.servers):
            conf = self.workdir / f"keepalived-{name}.conf"
            conf.write_text(config(51, 200 - 10 * i, self.advert_int, self.site.vip, name))
            self.procs[name] = self.site.spawn(
                name, ["keepalived", "-n", "-l", "-D", "-P", "-f", str(conf),
                       "-p", str(self.workdir / f"ka-{name}.pid"), "-r", str(self.workdir / f"ka-vrrp-{name}.pid")],
                log_name=f"keepalived-{name}")
            if i == 0:
                time.sleep(4 * self.advert_int + 0.5)  # the master wins the first election alone

    def holder(self) -> list[str]:
        ip = self.site.vip.split("/")[0]
        return [n for n in self.servers
                if ip in sh("ip", "-n", self.site.netns(n), "-4", "addr", "show", "eth0", check=False).stdout]

    def wait_holder(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.holder() == [name]:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
            proc.wait(5)
