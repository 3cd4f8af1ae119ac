"""The rig's site in real network namespaces: reachability, faults that cut exactly what they
name, serial cables, power and hangs, keepalived's client-visible outage across a LAN pull,
and a teardown that leaves nothing behind on every way out."""
from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil import netns
from hil.keepalived import Keepalived
from hil.site import Site, cleanup_stale

ROOT = Path(__file__).resolve().parents[2]
PORT = 7007
HOSTS = ["master", "standby", "arbiter", "client"]


def fresh_prefix() -> str:
    return "hs" + secrets.token_hex(2)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(fresh_prefix(), HOSTS, tmp_path_factory.mktemp("site"))
    with s:
        for host in HOSTS:
            echo(s, host)
        for host in HOSTS:
            wait_echo(s, host)
        yield s
    assert not leftovers(s.prefix)


def echo(site: Site, host: str) -> None:
    site.spawn(host, [sys.executable, "-m", "hil.probe", "serve", "--port", str(PORT), "--name", host],
               log_name=f"echo-{host}")


def wait_echo(site: Site, host: str) -> None:
    """An echo just spawned needs a moment (namespace entry, interpreter start) to listen."""
    src = "client" if host != "client" else "master"
    deadline = time.monotonic() + 15
    while answers(site, src, [host]) != {host: host}:
        assert time.monotonic() < deadline, f"{host}: echo never answered"


def answers(site: Site, src: str, dsts: list[str], timeout: float = 0.3) -> dict[str, str | None]:
    """Who answers each destination's address from ``src`` (one process for all of them)."""
    targets = {d: site.ip(d) for d in dsts}
    code = (f"import json; from hil.probe import ask\n"
            f"print(json.dumps({{d: ask(ip, {PORT}, {timeout}) for d, ip in {targets!r}.items()}}))")
    done = subprocess.run(netns.exec_argv(site.netns(src), [sys.executable, "-c", code]), cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def others(host: str) -> list[str]:
    return [h for h in HOSTS if h != host]


def leftovers(prefix: str) -> list[str]:
    return [ns for ns in netns.names() if ns.startswith(f"{prefix}-")]


def run_probe(site: Site, target: str, seconds: float, name: str, interval: float = 0.01) -> dict:
    out = site.workdir / f"{name}.json"
    proc = site.spawn("client", [sys.executable, "-m", "hil.probe", "client", "--target", target, "--port", str(PORT),
                                 "--interval", str(interval), "--out", str(out)], log_name=name)
    time.sleep(seconds)
    proc.terminate()
    assert proc.wait(10) == 0
    return json.loads(out.read_text())


# ---------------------------------------------------------------------- the LAN


def test_every_host_reaches_every_other_with_its_own_address_and_mac(site):
    for src in HOSTS:
        assert answers(site, src, others(src)) == {d: d for d in others(src)}
    link = netns.ip(site.netns("master"), "link", "show", "eth0").stdout
    assert site.mac("master") in link and site.addresses("master") == [f"{site.ip('master')}/24"]
    assert len({site.mac(h) for h in HOSTS}) == len(HOSTS)


def test_partition_cuts_only_the_named_pair_and_heal_keeps_other_faults(site):
    site.partition("arbiter", "master")
    try:
        assert answers(site, "arbiter", others("arbiter")) == {"master": None, "standby": "standby", "client": "client"}
        assert answers(site, "master", others("master")) == {"standby": "standby", "arbiter": None, "client": "client"}
        assert answers(site, "client", ["master", "arbiter"]) == {"master": "master", "arbiter": "arbiter"}
        site.loss("master", 100)
        site.heal("arbiter", "master")
        assert answers(site, "arbiter", ["master", "standby"]) == {"master": None, "standby": "standby"}
        site.loss("master", 0)
        assert answers(site, "arbiter", ["master"]) == {"master": "master"}
    finally:
        site.clear_faults()


def test_loss_drops_about_the_share_asked_for(site):
    site.loss("master", 20)
    try:
        result = run_probe(site, site.ip("master"), 2.0, "probe-loss", interval=0.005)
    finally:
        site.clear_faults()
    share = result["answered"] / result["sent"]
    assert result["sent"] > 250
    assert 0.52 < share < 0.76, f"20 % each way should answer 64 %, got {share:.0%}"  # 0.8 * 0.8
    assert answers(site, "client", ["master"]) == {"master": "master"}


def test_lan_pull_cuts_the_host_off_and_plug_restores_it(site):
    site.lan_pull("standby")
    try:
        assert answers(site, "client", ["standby", "master"]) == {"standby": None, "master": "master"}
    finally:
        site.lan_plug("standby")
    assert answers(site, "client", ["standby"], timeout=2.0) == {"standby": "standby"}


# ---------------------------------------------------------------------- serial cables


def test_serial_cable_carries_bytes_and_can_be_pulled_and_plugged(site):
    assert_cable_works(site, "master")
    site.pull_serial("master")
    assert not site.serial_path("master", "arbiter").exists()
    assert not site.serial_path("master", "server").exists()
    assert_cable_works(site, "standby")  # the other cable does not care
    site.plug_serial("master")
    assert_cable_works(site, "master")


def assert_cable_works(site: Site, server: str) -> None:
    fds = [os.open(site.serial_path(server, side), os.O_RDWR | os.O_NOCTTY) for side in ("arbiter", "server")]
    try:
        for src, dst in (fds, fds[::-1]):
            os.write(src, b"poll\n")
            assert select.select([dst], [], [], 2.0)[0], f"{server}: nothing came through the cable"
            assert os.read(dst, 64) == b"poll\n"
    finally:
        for fd in fds:
            os.close(fd)


# ---------------------------------------------------------------------- processes and power


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def reach_state(pids: list[int], states: str) -> bool:
    """Signals are delivered when the target next runs: give it a moment."""
    deadline = time.monotonic() + 2.0
    while not all(state(p) in states for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_hang_resume_crash_power_cut_and_power_on(site):
    sleepers = [site.spawn("standby", ["sleep", "60"], log_name="sleep") for _ in range(2)]
    site.hang("standby")
    assert reach_state([p.pid for p in sleepers], "T")
    assert answers(site, "client", ["standby"]) == {"standby": None}  # frozen echo: silent
    site.resume("standby")
    assert reach_state([p.pid for p in sleepers], "SR")
    site.crash("standby", sleepers[0])
    assert not sleepers[0].alive() and sleepers[1].alive()
    site.add_address("standby", "192.0.2.200/24")
    site.power_cut("standby")
    assert not sleepers[1].alive() and site.host_pids("standby") == []
    assert answers(site, "client", ["standby"]) == {"standby": None}
    site.power_on("standby")
    assert site.addresses("standby") == [f"{site.ip('standby')}/24"]  # the run-time address is gone
    echo(site, "standby")
    wait_echo(site, "standby")


# ---------------------------------------------------------------------- keepalived


@pytest.mark.parametrize(("advert_int", "low", "high"), [(1.0, 2.0, 4.0), (0.1, 0.1, 1.0)])
def test_keepalived_outage_across_a_lan_pull_of_the_holder(site, advert_int, low, high):
    """VRRP's dead interval is 3 adverts plus a skew: about 3 s at advert 1, 0.3 s at 0.1."""
    ka = Keepalived(site, ["master", "standby"], advert_int)
    vip_ip = site.vip.split("/")[0]
    out = site.workdir / f"probe-ka{advert_int:g}.json"
    probe = site.spawn("client", [sys.executable, "-m", "hil.probe", "client", "--target", vip_ip, "--port", str(PORT),
                                  "--interval", "0.01", "--arp", "--out", str(out)], log_name=f"probe-ka{advert_int:g}")
    try:
        ka.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        site.lan_pull("master")
        assert ka.wait_holder("standby", 4 * advert_int + 3, alone=False)
        time.sleep(0.5)
    finally:
        probe.terminate()
        probe.wait(10)
        ka.stop()
        site.lan_plug("master")
    result = json.loads(out.read_text())
    outage = max(o["duration"] for o in result["outages"] if o["end"] >= t0)
    print(f"keepalived advert_int {advert_int:g}: outage {outage:.3f} s")
    assert low < outage < high
    assert [h["host"] for h in result["hosts"]][-2:] == ["master", "standby"]
    assert result["split_brain"] is False  # the cut-off master holds it too, but nobody hears it
    assert ka.holder() == []


# ---------------------------------------------------------------------- teardown

CHILD = """
import json, sys, time
from pathlib import Path
from hil.site import Site
site = Site(sys.argv[1], ["master", "arbiter"], Path(sys.argv[2]))
site.build()
for h in ("master", "arbiter"):
    site.spawn(h, ["sleep", "60"], log_name="sleep")
print(json.dumps(site.all_pids()), flush=True)
try:
    time.sleep(60)
finally:
    site.teardown()
"""


def start_child(prefix: str, workdir: Path) -> tuple[subprocess.Popen[str], list[int]]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, prefix, str(workdir)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = child.stdout.readline() if child.stdout else ""
    assert line, "the child site did not build"
    return child, json.loads(line)


def assert_gone(prefix: str, pids: list[int], workdir: Path) -> None:
    assert leftovers(prefix) == []
    assert [p for p in pids if netns.process_alive(p)] == []
    assert not (workdir / f"hil-{prefix}-run").exists()
    assert (workdir / "logs" / "sleep.log").exists()  # logs stay for the report


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_tears_the_site_down(tmp_path, sig):
    prefix = fresh_prefix()
    child, pids = start_child(prefix, tmp_path)
    try:
        assert len(leftovers(prefix)) == 3 and len(pids) == 3 and all(netns.process_alive(p) for p in pids)
        child.send_signal(sig)
        child.wait(20)
        assert_gone(prefix, pids, tmp_path)
    finally:
        child.kill()
        child.wait(5)
        cleanup_stale(prefix)


def test_cleanup_stale_removes_what_a_killed_run_left(tmp_path):
    prefix = fresh_prefix()
    child, pids = start_child(prefix, tmp_path)
    try:
        child.kill()
        child.wait(5)
        assert len(leftovers(prefix)) == 3 and all(netns.process_alive(p) for p in pids)
        cleanup_stale(prefix)
        assert leftovers(prefix) == [] and [p for p in pids if netns.process_alive(p)] == []
    finally:
        cleanup_stale(prefix)


def test_an_exception_inside_the_context_tears_down(tmp_path):
    prefix = fresh_prefix()
    with pytest.raises(RuntimeError, match="boom"), Site(prefix, ["master", "client"], tmp_path) as s:
        s.spawn("master", ["sleep", "60"], log_name="sleep")
        pids = s.all_pids()
        assert len(pids) == 2  # sleep and the master's cable
        raise RuntimeError("boom")
    assert_gone(prefix, pids, tmp_path)
