"""The real daemon with two real agents over socat ptys and UDP on loopback.

Kill the primary's agent: the standby is told to promote soon after the dead time (the
fence comes first). Pull only the serial cable: a link-down event, no failover. The rig's
GPIO bridge stands in for the relay board; this test plays the power supply.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from board.hil_bridge import HilGpio
from firmware.control import request
from firmware.protocol import derive_key
from hil import toml_out
from tests.integration.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
DEAD, INTERVAL = 0.2, 0.04


class Site:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = tmp / "key"
        self.key.write_text(secrets.token_hex(32))
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = {"master": free_port(), "standby": free_port(), "http": free_port()}
        self.gpio = HilGpio(tmp / "gpio")
        self.stop = threading.Event()

    def cable(self, name: str) -> None:
        a, b = self.tmp / f"tty-{name}-a", self.tmp / f"tty-{name}-b"
        self.procs[f"socat-{name}"] = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"], stderr=subprocess.DEVNULL)
        while not (a.exists() and b.exists()):
            time.sleep(0.01)

    def agent(self, name: str, role: str) -> None:
        role_file = self.tmp / f"role-{name}.json"
        role_file.write_text(json.dumps({"role": role, "in_sync": True, "lag_bytes": 0}))
        conf = self.tmp / f"agent-{name}.toml"
        conf.write_text(toml_out.dumps({
            "agent": {"name": name, "key_file": str(self.agent_key(name)), "listen": "127.0.0.1", "port": self.ports[name],
                      "serial": str(self.tmp / f"tty-{name}-b"),
                      "state_file": str(self.tmp / f"agent-{name}-state.json")},
            "replication": {"adapter": "command", "status": f"cat {role_file}",
                            "promote": f"{sys.executable} -m hil.role {role_file} primary"},
            "hooks": {"take_ip": f"sh -c 'date +%s.%N > {self.tmp / ('took-' + name)}'"},
        }))
        self.procs[f"agent-{name}"] = subprocess.Popen([sys.executable, "-m", "host_tools.agent", "--config", str(conf)],
                                                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def agent_key(self, name: str) -> Path:
        path = self.tmp / f"{name}.key"
        path.write_bytes(derive_key(self.key.read_bytes(), name))
        return path

    def arbiter(self) -> None:
        servers = [{"name": n, "address": "127.0.0.1", "port": self.ports[n], "serial": str(self.tmp / f"tty-{n}-a"),
                    "fence_relay": f"relay{i}", "power_sense": f"sense{i}"} for i, n in enumerate(("master", "standby"), 1)]
        conf = self.tmp / "arbiter.toml"
        conf.write_text(toml_out.dumps({
            "site": {"name": "loop", "key_file": str(self.key), "state_dir": str(self.tmp / "state"),
                     "socket": str(self.tmp / "ctl.sock")},
            "board": {"kind": "hil", "pin_factory": "mock", "hil_gpio_dir": str(self.tmp / "gpio")},
            "timing": {"interval": INTERVAL, "dead_time": DEAD, "warn_time": 0.12, "init_dead": 1.5},
            "vip": {"address": "192.0.2.100/24", "verify": "none"},
            "http": {"address": "127.0.0.1", "port": self.ports["http"]},
            "servers": servers,
        }))
        for i in (1, 2):
            self.gpio.set_input(f"sense{i}", True)
        self.start_arbiter()
        threading.Thread(target=self.power_supply, daemon=True).start()

    def start_arbiter(self) -> None:
        with open(self.tmp / "arbiterd.log", "ab") as log:
            self.procs["arbiter"] = subprocess.Popen(
                [sys.executable, "-m", "firmware.daemon", "--config", str(self.tmp / "arbiter.toml")],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def power_supply(self) -> None:
        """The master's power follows its relay; the readback follows the power."""
        while not self.stop.wait(0.002):
            if self.gpio.output("relay1"):
                self.gpio.set_input("sense1", False)

    def status(self) -> dict:
        return request(str(self.tmp / "ctl.sock"), {"cmd": "status"})

    def wait(self, check, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.status()
                if check(last):
                    return last
            except Exception as exc:  # not up yet
                last = str(exc)
            time.sleep(0.01)
        raise AssertionError(f"{what}: {last}")

    def close(self) -> None:
        self.stop.set()
        for p in self.procs.values():
            p.kill()
            p.wait()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    try:
        for name, role in (("master", "primary"), ("standby", "standby")):
            s.cable(name)
            s.agent(name, role)
        s.arbiter()
        s.wait(lambda st: st["phase"] == "normal" and st["primary"] == "master" and all(
            link["state"] == "up" for srv in st["servers"] for link in srv["links"].values()), 15, "site ready")
        yield s
    finally:
        s.close()


def test_killed_primary_agent_leads_to_fence_then_promote(site):
    time.sleep(0.5)
    t0 = time.time()
    site.procs["agent-master"].kill()
    st = site.wait(lambda st: st["primary"] == "standby" and st["phase"] == "normal", 10, "failover")
    took = float((site.tmp / "took-standby").read_text())
    elapsed = took - t0
    print(f"kill -> standby holds the address: {elapsed:.3f} s")
    assert elapsed < DEAD + INTERVAL + 0.4, f"{elapsed:.3f} s"
    assert next(s for s in st["servers"] if s["name"] == "master")["fenced"]
    log = (site.tmp / "arbiterd.log").read_text()
    assert log.index("Fence#") < log.index("Promote#") < log.index("TakeIp#")
    last = st["last_failover"]
    assert st["failovers"] == 1 and last["completed"] and last["target"] == "standby"
    assert 0 < last["detection_s"] < DEAD + 2 * INTERVAL + 0.1 and last["fence_s"] is not None
    assert last["total_s"] < elapsed + 1.0 and st["version"] != "unknown"


def test_pulled_serial_cable_is_a_warning_not_a_failover(site):
    site.procs["socat-master"].kill()
    time.sleep(1.5)
    st = site.status()
    master = next(s for s in st["servers"] if s["name"] == "master")
    assert st["primary"] == "master" and st["phase"] == "normal"
    assert master["links"]["serial"]["state"] == "dead" and master["links"]["lan"]["state"] == "up"
    events = request(str(site.tmp / "ctl.sock"), {"cmd": "events", "n": 50})["events"]
    assert "serial" in [e["channel"] for e in events if e["event"] == "link-down" and e["server"] == "master"]
    assert not any(e["event"].startswith("failover") for e in events)


def test_reload_validates_first_and_keeps_the_old_config(site):
    import signal
    conf = site.tmp / "arbiter.toml"
    good = conf.read_text()
    conf.write_text(good.replace("dead_time = 0.2", "dead_time = 0.001"))
    site.procs["arbiter"].send_signal(signal.SIGHUP)
    time.sleep(0.5)
    events = request(str(site.tmp / "ctl.sock"), {"cmd": "events", "n": 50})["events"]
    rejected = [e for e in events if e["event"] == "config-rejected"]
    assert rejected and "timing.dead_time = 0.001" in rejected[-1]["text"]
    assert site.status()["phase"] == "normal" and site.procs["arbiter"].poll() is None
    conf.write_text(good.replace('name = "loop"', 'name = "loop2"').replace("init_dead = 1.5", "init_dead = 2.0"))
    site.procs["arbiter"].send_signal(signal.SIGHUP)
    time.sleep(0.5)
    events = request(str(site.tmp / "ctl.sock"), {"cmd": "events", "n": 50})["events"]
    reloaded = [e for e in events if e["event"] == "config-reloaded"]
    # timing applies at once; the site's name is built into the alert senders: next restart
    assert reloaded and reloaded[-1]["text"] == "applied: timing, policy, fence, vip; at the next restart: site"
    assert site.status()["site"] == "loop"


def test_orders_are_answered_with_the_daemons_verdict_and_journaled(site, capsys):
    from firmware.cli import main
    sock = str(site.tmp / "ctl.sock")
    assert main(["--socket", sock, "power-on", "standby", "--yes"]) == 1
    assert "refused: power-on standby: refused, it is not fenced" in capsys.readouterr().err
    assert main(["--socket", sock, "switchover", "--to", "master"]) == 1
    assert "switchover to master: refused" in capsys.readouterr().err
    assert main(["--socket", sock, "maintenance", "on"]) == 0
    assert "accepted: maintenance on: observe only" in capsys.readouterr().out
    orders = [e for e in request(sock, {"cmd": "history", "n": 500})["history"] if e.get("kind") == "order"]
    assert [(o["cmd"], o["accepted"]) for o in orders] == [("power-on", False), ("switchover", False),
                                                          ("maintenance", True)]
    assert orders[0]["operator"]["uid"] == os.getuid() and orders[0]["operator"]["pid"] > 0
    assert main(["--socket", sock, "history", "--since", "1m"]) == 0
    assert "maintenance by uid" in capsys.readouterr().out
    assert main(["--socket", sock, "status", "--check"]) == 1  # maintenance: observe only
    assert "ARBITER WARNING" in capsys.readouterr().out
    assert main(["--socket", sock, "why", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["phase"] == "normal"


def test_status_page_in_chromium_shows_the_new_primary_within_2_s(site):
    from hil.browser import Browser
    url = f"http://127.0.0.1:{site.ports['http']}/"
    with Browser() as browser:
        browser.open(url)
        assert browser.wait_text("primary", "master", 5.0) is not None
        assert browser.primary_card() == "master" and browser.text("phase") == "normal"
        site.procs["agent-master"].kill()
        site.wait(lambda st: st["primary"] == "standby" and st["phase"] == "normal", 10, "failover")
        done = time.monotonic()
        shown = browser.wait_text("primary", "standby", 2.0)
        assert shown is not None and shown - done < 2.0
        assert browser.wait_text("phase", "normal", 2.0) is not None and browser.primary_card() == "standby"
        assert "failover to standby" in browser.text("history") or "Promote" in browser.text("history")
