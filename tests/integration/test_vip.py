"""Virtual IP takeover in network namespaces: the client keeps reaching the address, arping
sees the new owner's MAC, and the appliance's ARP check tells one owner from two."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil.site import Site, cleanup_stale
from host_tools.vip import REFRESH_EVERY_S

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "tv"


@pytest.fixture
def site(tmp_path):
    cleanup_stale(PREFIX)
    s = Site(PREFIX, ["a", "b", "client"], tmp_path)
    s.build()
    for host in ("a", "b"):
        s.spawn(host, [sys.executable, "-m", "hil.probe", "serve", "--port", "7007", "--name", host], log_name=f"echo-{host}")
    try:
        yield s
    finally:
        s.teardown()


def in_ns(site: Site, host: str, code: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", site.netns(host), sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def vip(site: Site, host: str, op: str, burst: bool = False) -> None:
    """``burst``: stay alive for the whole gratuitous ARP burst (5 at 200 ms), as the agent does."""
    in_ns(site, host, f"import time; from host_tools.vip import VipManager; m = VipManager({site.vip!r}, 'eth0', 5, 0.2, 0);"
                      f" m.{op}(); print(m.held()); time.sleep({1.1 if burst else 0})")


def probe_macs(site: Site) -> set[str]:
    out = in_ns(site, "client", f"from firmware.arpcheck import probe; print(','.join(sorted(probe({site.vip.split('/')[0]!r}, 'eth0'))))")
    return set(filter(None, out.split(",")))


def answers(site: Site, seconds: float) -> dict[str, int]:
    code = (f"import socket, time, collections\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.02)\n"
            f"c = collections.Counter(); end = time.monotonic() + {seconds}\n"
            f"while time.monotonic() < end:\n"
            f"    try:\n        s.sendto(b'12345678', ({site.vip.split('/')[0]!r}, 7007)); c[s.recv(64)[8:].decode()] += 1\n"
            f"    except OSError:\n        c['lost'] += 1\n"
            f"print(dict(c))")
    return eval(in_ns(site, "client", code))  # noqa: S307 (our own dict literal)


def test_takeover_moves_the_address_and_the_arp_owner(site):
    vip(site, "a", "take")
    assert answers(site, 0.5).get("a", 0) > 10
    assert probe_macs(site) == {site.mac("a")}
    vip(site, "a", "release")
    vip(site, "b", "take")
    time.sleep(0.1)
    after = answers(site, 0.5)
    assert after.get("b", 0) > 10 and after.get("a", 0) == 0, after
    arping = subprocess.run(["ip", "netns", "exec", site.netns("client"), "arping", "-c", "2", "-w", "3", "-I", "eth0",
                             site.vip.split("/")[0]], capture_output=True, text=True)
    assert site.mac("b").lower() in arping.stdout.lower(), arping.stdout
    assert probe_macs(site) == {site.mac("b")}


def test_take_is_idempotent_and_two_holders_are_seen(site):
    vip(site, "a", "take")
    vip(site, "a", "take")
    vip(site, "b", "take")
    assert probe_macs(site) == {site.mac("a"), site.mac("b")}
    vip(site, "b", "release")
    vip(site, "b", "release")
    assert probe_macs(site) == {site.mac("a")}


def test_garp_updates_a_client_that_cached_the_old_owner(site):
    vip(site, "a", "take")
    answers(site, 0.2)  # the client now caches a's MAC for the address
    site.lan_pull("a")
    # b announces itself; one GARP inside the client's ARP locktime (1 s) is ignored, the burst is not
    t0 = time.monotonic()
    vip(site, "b", "take", burst=True)
    got = answers(site, 0.5)
    assert got.get("b", 0) > 10, got
    neigh = subprocess.run(["ip", "-n", site.netns("client"), "neigh", "show", site.vip.split("/")[0]],
                           capture_output=True, text=True).stdout
    assert re.search(site.mac("b"), neigh, re.I), neigh
    assert time.monotonic() - t0 < 3


def test_refresh_announcements_correct_a_stale_cache_after_the_burst(site):
    ip = site.vip.split("/")[0]
    holder = subprocess.Popen(
        ["ip", "netns", "exec", site.netns("a"), sys.executable, "-c",
         f"import time; from host_tools.vip import VipManager; m = VipManager({site.vip!r}, 'eth0', 1, 0.2, 30);"
         f" m.take(); time.sleep(12)"], cwd=ROOT)
    try:
        time.sleep(1.0)  # the one-frame burst is over
        # a cache poisoned after the burst (as a returning split-brain peer would leave it)
        subprocess.run(["ip", "-n", site.netns("client"), "neigh", "replace", ip, "lladdr", "02:de:ad:be:ef:01",
                        "dev", "eth0", "nud", "stale"], check=True)
        deadline = time.monotonic() + REFRESH_EVERY_S + 3
        neigh = ""
        while time.monotonic() < deadline:
            neigh = subprocess.run(["ip", "-n", site.netns("client"), "neigh", "show", ip],
                                   capture_output=True, text=True).stdout
            if re.search(site.mac("a"), neigh, re.I):
                break
            time.sleep(0.2)
        assert re.search(site.mac("a"), neigh, re.I), neigh
    finally:
        holder.kill()
        holder.wait()
