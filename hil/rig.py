"""A running site on the HIL rig: the servers' agents, the appliance, NUT, the trap receiver,
optionally PostgreSQL with its billing load, and the client probe, on top of hil.site.Site.

The appliance's board is the rig's ("hil" kind, gpiozero mock pins behind a file bridge);
a watcher thread turns relay outputs into physics: a server whose fence relay opens loses
its power (processes killed, link down) and its power-sense input drops; a relay that
closes again brings it back (link up, agent restarted).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from board.hil_bridge import HilGpio
from firmware.control import request
from firmware.errors import ArbiterError
from firmware.realtime import Realtime
from firmware.protocol import derive_key
from host_tools.agent import LISTENING as AGENT_LISTENING
from hil import toml_out
from hil.lifecycle import Built
from hil.monitor import read_changes
from hil.nut import FENCE_USER
from hil.site import DEFAULT_PREFIX, REPO, Site

log = logging.getLogger("hil")

PROBE_PORT = 7007
AGENT_PORT = 5405
TRAP_PORT = 1162
NUT_PORT = 3493
PY = sys.executable
HTTP_PORT = 8080
SNMP_PORT = 1161
COMMUNITY = "rig-monitor"
DAEMON_UNIT = REPO / "board" / "systemd" / "arbiterd.service"
HEARTBEAT_S = 1.0
UNOBSERVED_AFTER_S = 2.0
PHYSICS_PRIORITY = 50  # above the appliance's and the agents' real-time threads: hardware does not wait


@dataclass(frozen=True)
class RigOptions:
    standbys: int = 1
    database: bool = False
    ups: bool = True
    snmp: bool = True
    arbiter: dict[str, dict[str, Any]] = field(default_factory=dict)  # config section overrides
    lagging: tuple[str, ...] = ()  # stand-in database: these standbys report a replication lag
    ping: bool = False  # a gateway host on the clients' side, probed as the ping target by all
    priorities: tuple[tuple[str, int], ...] = ()  # (server, servers[].priority) instead of the rig's own
    agent: dict[str, Any] = field(default_factory=dict)  # [agent] overrides for every server's agent
    fence_level2: bool = False  # every server's UPS outlet is a level 2 fence (load.off through upsd)
    stuck_relays: tuple[str, ...] = ()  # these servers' relay contacts are welded: opening them cuts nothing
    monitoring: bool = False  # the appliance's HTTP and SNMP status, a fast heartbeat trap, agents' alert traps
    browser: bool = False  # with monitoring: a monitoring station with chromium, started before the appliance
    prefix: str = DEFAULT_PREFIX  # namespaces <prefix>-<host>: rigs with different prefixes run side by side
    wal_segsize_mb: int | None = None  # the database's WAL segments (initdb --wal-segsize); None: PostgreSQL's 16 MB


def unit_environment(unit: Path = DAEMON_UNIT) -> dict[str, str]:
    """The variables a unit's ``Environment=`` lines set: the rig starts arbiterd with those of
    its shipped unit, as systemd does on the appliance (MALLOC_ARENA_MAX changes what the
    bench measures)."""
    env: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            env.update(word.split("=", 1) for word in shlex.split(line.removeprefix("Environment=")))
    return env


def server_names(opts: RigOptions) -> list[str]:
    return ["master", "standby"] + [f"standby{i}" for i in range(2, opts.standbys + 1)]


class Rig(Built):
    def __init__(self, opts: RigOptions, workdir: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        self.servers = server_names(opts)
        self.site = Site(opts.prefix, self.servers + ["arbiter", "client"] + (["gw"] if opts.ping else []), workdir)
        self.gpio_dir = workdir / "gpio"
        self.gpio = HilGpio(self.gpio_dir)
        self.key_file = workdir / "site.key"
        self.sock = str(workdir / "arbiter.sock")
        self.events: list[tuple[float, str, str]] = []  # (monotonic, what, server)
        self._powered = {s: True for s in self.servers}
        self._stop = threading.Event()
        self._physics_thread: threading.Thread | None = None
        self._procs: dict[str, Any] = {}
        self.nut = None
        self.traps = None
        self.pg = None
        self._probe_out = workdir / "probe.json"
        self.billing_summary: dict[str, Any] = {}  # hil.billing's summary, once stop_billing has run

    # ------------------------------------------------------------------ building

    def build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.site.build()
        self.key_file.write_bytes(secrets.token_hex(32).encode())
        os.chmod(self.key_file, 0o600)
        for i, name in enumerate(self.servers, start=1):
            self.gpio.set_input(f"sense{i}", True)
        if self.opts.snmp:
            self._start_traps()
        if self.opts.ups:
            self._start_nut()
        if self.opts.database:
            self._start_database()
        for name in self.servers:
            self._start_server(name)
        self._wait_agents_up()
        # the site is in service before the appliance arrives: the master holds the address
        self.site.add_address("master", self.site.vip)
        if self.opts.browser:
            self._start_browser()
        self._start_arbiter()
        self._physics_thread = threading.Thread(target=self._physics, name="rig-physics", daemon=True)
        self._physics_thread.start()
        self.start_probe()

    def start_probe(self, out: str = "probe.json") -> None:
        """The client's probe of the virtual IP (every 10 ms, ARP who-has every 100 ms) until
        stop_probe; a new one per failover gives each its own outage and split-brain figures."""
        self._probe_out = self.workdir / out
        self._procs["probe"] = self.site.spawn(
            "client", [PY, "-m", "hil.probe", "client", "--target", self.vip_ip, "--port", str(PROBE_PORT),
                       "--interval", "0.01", "--arp", "--out", str(self._probe_out)],
            log_name="probe")

    @property
    def arbiter_pid(self) -> int:
        return self._procs["arbiter"].popen.pid

    @property
    def vip_ip(self) -> str:
        return self.site.vip.split("/")[0]

    def _start_traps(self) -> None:
        from hil.snmptrapd import TrapReceiver
        self.traps = TrapReceiver(self.workdir / "snmptrapd", TRAP_PORT, netns=self.site.netns("arbiter"),
                                  host="0.0.0.0")  # the agents' own traps come over the LAN
        self.traps.start()

    def _start_nut(self) -> None:
        from hil.nut import NutSite
        self.nut = NutSite(self.workdir / "nut", [f"{s}-ups" for s in self.servers], NUT_PORT,
                           listen="127.0.0.1", netns=self.site.netns("arbiter"))
        self.nut.__enter__()

    def _start_database(self) -> None:
        from hil.postgres import NodeSpec, PgCluster
        roles = ["primary", "sync"] + ["async"] * (len(self.servers) - 2)
        nodes = [NodeSpec(name, self.site.ip(name), 5432, self.site.netns(name), role)
                 for name, role in zip(self.servers, roles)]
        self.pg = PgCluster(self.workdir / "pg", nodes, listen_all=True, wal_segsize_mb=self.opts.wal_segsize_mb)
        self.pg.__enter__()

    def start_billing(self, rate_hz: float = 50.0) -> None:
        # a billing client that bounds its waits on a dead server, as a production one should: a
        # connection attempt by hil.billing's own deadline, a statement in flight by these options
        dsn = (f"host={self.vip_ip} port=5432 user=postgres dbname=postgres "
               "tcp_user_timeout=1000 keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2")
        self._procs["billing"] = self.site.spawn(
            "client", [PY, "-m", "hil.billing", "--dsn", dsn, "--ledger", str(self.workdir / "ledger.txt"),
                       "--rate", str(rate_hz)], log_name="billing")

    def stop_billing(self) -> tuple[int, int, float | None]:
        """(acknowledged, lost, longest gap) checked against the primary the appliance names."""
        from hil.billing import verify
        proc = self._procs.pop("billing")
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        summary_file = self.workdir / "ledger.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        self.billing_summary = summary
        primary = self.status()["primary"]
        acked, lost, _ = verify(self.pg.dsn(primary), self.workdir / "ledger.txt")  # type: ignore[union-attr]
        return acked, lost, summary.get("longest_gap_s")

    def _start_server(self, name: str) -> None:
        conf = self.workdir / f"agent-{name}.toml"
        conf.write_text(toml_out.dumps(self.agent_config(name)))
        self.site.spawn(name, [PY, "-m", "host_tools.agent", "--config", str(conf)], log_name=f"agent-{name}")
        self.site.spawn(name, [PY, "-m", "hil.probe", "serve", "--port", str(PROBE_PORT), "--name", name],
                        log_name=f"echo-{name}")

    def _wait_agents_up(self, timeout: float = 60.0) -> None:
        """Every agent answers before the appliance starts: ten agents starting at once keep two
        cores busy for seconds, long enough for a started appliance to find the master silent."""
        deadline = time.monotonic() + timeout
        for name in self.servers:
            while f"{name}: answering on" not in self.agent_log(name):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"agent of {name} not answering within {timeout:g} s (logs/agent-{name}.log)")
                time.sleep(0.05)

    def agent_config(self, name: str) -> dict[str, Any]:
        role_file = self.workdir / f"role-{name}.json"
        if not role_file.exists():
            role = "primary" if name == "master" else "standby"
            lag = 8 << 20 if name in self.opts.lagging else 0
            role_file.write_text(json.dumps({"role": role, "in_sync": not lag, "lag_bytes": lag,
                                             "lag_s": 3.0 if lag else 0.0}))
        peers = [{"name": p, "key_file": self.agent_key(name, p), "address": self.site.ip(p), "port": AGENT_PORT}
                 for p in self.servers if p != name]
        if self.opts.database:
            replication = {"adapter": "postgres", **self.pg.adapter_settings(name)}  # type: ignore[union-attr]
        else:
            replication = {"adapter": "command", "status": f"cat {role_file}",
                           "promote": f"{PY} -m hil.role {role_file} primary",
                           "demote": f"{PY} -m hil.role {role_file} standby",
                           "rejoin": f"{PY} -m hil.role {role_file} standby"}
        return {
            "agent": self._agent_base(name),
            "peers": peers,
            "replication": replication,
            "vip": {"address": self.site.vip, "interface": "eth0"},
            **self._ping_section(),
        } | self._watched_section(name)

    def _watched_section(self, name: str) -> dict[str, Any]:
        """With monitoring: the agent's unobserved alert as a v2c trap to the rig's snmptrapd."""
        if not self.opts.monitoring:
            return {}
        # its own persistent dir: snmptrap rewrites snmpapp.conf there, and agents sending at once into
        # the machine's /var/lib/snmp leave it damaged for every later net-snmp command
        send = (f"SNMP_PERSISTENT_DIR={self.workdir / ('snmp-' + name)} "
                f"snmptrap -v2c -c public {self.site.ip('arbiter')}:{TRAP_PORT} '' "
                '"$ARBITER_ENTERPRISE.0.$ARBITER_EVENT_NUMBER" "$ARBITER_ENTERPRISE.1.3.0" s "$ARBITER_SERVER" '
                '"$ARBITER_ENTERPRISE.1.5.0" s "$ARBITER_TEXT"')
        return {"agent": {**self._agent_base(name), "unobserved_after": UNOBSERVED_AFTER_S,
                          "alert_hook": f"sh -c {shlex.quote(send)}"}}

    def _ping_section(self) -> dict[str, Any]:
        """The gateway as the one ping target, probed at the shipped interval and timeout."""
        return {"ping": {"targets": [self.site.ip("gw")]}} if self.opts.ping else {}

    def _agent_base(self, name: str) -> dict[str, Any]:
        return {"name": name, "key_file": self.agent_key(name), "arbiter": "arbiter", "listen": "0.0.0.0",
                "port": AGENT_PORT, "serial": str(self.site.serial_path(name, "server")),
                "state_file": str(self.workdir / f"agent-{name}-state.json"), **self.opts.agent}

    def agent_key(self, name: str, peer: str | None = None) -> str:
        """The file with a server's own key (or a pair's), as `arbiterd derive-key` prints it."""
        path = self.workdir / "keys" / (f"{name}-{peer}.key" if peer else f"{name}.key")
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(derive_key(self.key_file.read_bytes().rstrip(b"\n"), name, peer) + b"\n")
        os.chmod(path, 0o600)
        return str(path)

    def arbiter_config(self) -> dict[str, Any]:
        servers = []
        for i, name in enumerate(self.servers, start=1):
            srv = {"name": name, "address": self.site.ip(name), "port": AGENT_PORT,
                   "serial": str(self.site.serial_path(name, "arbiter")), "mac": self.site.mac(name),
                   "fence_relay": f"relay{i}", "power_sense": f"sense{i}",
                   "priority": dict(self.opts.priorities).get(name, 100 - i)}
            if self.opts.ups:
                srv["ups"] = f"{name}-ups@127.0.0.1:{NUT_PORT}"
            if self.opts.fence_level2:
                srv["fence_ups_command"] = "load.off"
            servers.append(srv)
        cfg: dict[str, Any] = {
            "site": {"name": "hil-site", "key_file": str(self.key_file),
                     "state_dir": str(self.workdir / "arbiter-state"), "socket": self.sock},
            "board": {"kind": "hil", "pin_factory": "mock", "alarm_relay": "alarm", "ack_button": "ack_button",
                      "hil_gpio_dir": str(self.gpio_dir)},
            "vip": {"address": self.site.vip, "interface": "eth0"},
            "ups": {"poll_interval": 0.5},
            "alerts": {"managers": [{"host": "127.0.0.1", "port": TRAP_PORT}] if self.opts.snmp else [],
                       "min_repeat_s": 5.0},
            "servers": servers,
            **self._ping_section(),
        }
        if self.opts.fence_level2 and self.nut is not None:
            cfg["fence"] = {"ups_username": FENCE_USER, "ups_password_file": str(self.nut.fence_password_file)}
        if self.opts.monitoring:
            community = self.workdir / "snmp-community"
            community.write_text(COMMUNITY + "\n")
            cfg["http"] = {"address": self.site.ip("arbiter"), "port": HTTP_PORT}
            cfg["snmp"] = {"address": self.site.ip("arbiter"), "port": SNMP_PORT, "community_file": str(community)}
            cfg["alerts"]["heartbeat_interval"] = HEARTBEAT_S
        for section, values in self.opts.arbiter.items():
            cfg.setdefault(section, {}).update(values)
        return cfg

    def start_monitor(self, browser: bool, screenshot: Path | None = None, interval: float = 0.05) -> Path:
        """The monitoring station on the client host (hil.monitor); its change log's path. It
        runs at nice 10: on a site it is another machine, and here its chromium must not starve
        the appliance it watches (a 0.2 s dead time on two shared cores)."""
        out = self.monitor_changes
        arbiter = self.site.ip("arbiter")
        argv = ["nice", "-n", "10", PY, "-m", "hil.monitor", "--http", f"http://{arbiter}:{HTTP_PORT}", "--snmp", f"{arbiter}:{SNMP_PORT}",
                "--community", COMMUNITY, "--out", str(out), "--interval", str(interval)]
        if browser:
            argv += ["--browser"] + (["--screenshot", str(screenshot)] if screenshot else [])
        self._procs["monitor"] = self.site.spawn("client", argv, env={"SE_AVOID_STATS": "true"}, log_name="monitor")
        return out

    @property
    def monitor_changes(self) -> Path:
        return self.workdir / "monitor.jsonl"

    @property
    def screenshot(self) -> Path:
        """Where the monitor saves the status page as it stops (RigOptions.browser)."""
        return self.workdir / "status-page.png"

    def _start_browser(self, timeout: float = 120.0) -> None:
        """The monitoring station with chromium, up before the appliance starts: chromium's
        start-up takes seconds of both cores here, and on a site the station is another machine."""
        self.start_monitor(browser=True, screenshot=self.screenshot)
        deadline = time.monotonic() + timeout
        while not any(c["source"] == "browser" for c in read_changes(self.monitor_changes)):
            if time.monotonic() > deadline or not self._procs["monitor"].alive():
                raise RuntimeError(f"chromium not started within {timeout:g} s (logs/monitor.log)")
            time.sleep(0.2)

    def stop_monitor(self) -> None:
        """SIGTERM to the monitor alone (its chromium and chromedriver are in its process group
        and must live until it has saved its screenshot and closed them); the group if it hangs."""
        proc = self._procs.pop("monitor")
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        finally:
            proc.send_signal(signal.SIGKILL)

    def freeze_arbiter(self, frozen: bool) -> None:
        """SIGSTOP or SIGCONT to arbiterd and all its threads: alive, holding its sockets, silent."""
        self._procs["arbiter"].send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)
        self.events.append((time.monotonic(), "arbiter-frozen" if frozen else "arbiter-thawed", ""))

    def _start_arbiter(self) -> None:
        conf = self.workdir / "arbiter.toml"
        conf.write_text(toml_out.dumps(self.arbiter_config()))
        self._procs["arbiter"] = self.site.spawn(
            "arbiter", [PY, "-m", "firmware.daemon", "--config", str(conf)], env=unit_environment(),
            log_name="arbiterd")

    def restart_arbiter(self, kill: bool = True) -> None:
        proc = self._procs["arbiter"]
        proc.kill() if kill else proc.terminate()
        proc.wait(5)
        self.events.append((time.monotonic(), "arbiter-restart", ""))
        self._start_arbiter()

    def restart_agent(self, name: str, timeout: float = 15.0) -> None:
        """Kill a server's agent (SIGKILL, as a crash would), start it again with the same
        config, and return once the new one says it listens. The appliance may still count
        the server alive from the old agent's last replies, so its status cannot tell."""
        started = self.agent_log(name).count(AGENT_LISTENING)
        for proc in self.site.procs.get(name, []):
            if proc.name == f"agent-{name}" and proc.alive():
                proc.kill()
        self.site.spawn(name, [PY, "-m", "host_tools.agent", "--config", str(self.workdir / f"agent-{name}.toml")],
                        log_name=f"agent-{name}")
        deadline = time.monotonic() + timeout
        while self.agent_log(name).count(AGENT_LISTENING) <= started:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}'s agent: not listening within {timeout:g} s of its restart")
            time.sleep(0.01)

    def agent_run_log(self, server: str) -> str:
        """The log of the server's running agent: its log file holds every earlier run too."""
        text = self.agent_log(server)
        at = text.rfind(AGENT_LISTENING)
        return text if at < 0 else text[text.rfind("\n", 0, at) + 1:]

    # ------------------------------------------------------------------ the rogue host (hil.rogue)

    def sniff(self, host: str = "arbiter") -> tuple[Any, Path]:
        """Start recording the heartbeat datagrams ``host`` sends and receives."""
        out = self.workdir / f"sniff-{host}-{len(self.site.procs.get(host, []))}.jsonl"
        return self.site.spawn(host, [PY, "-m", "hil.rogue", "sniff", "--out", str(out), "--port", str(AGENT_PORT)],
                               log_name="rogue-sniff"), out

    def captured(self, sniffer: tuple[Any, Path]) -> list[dict[str, Any]]:
        proc, out = sniffer
        proc.terminate()
        proc.wait(5)
        if not out.exists():
            return []
        return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]

    def rogue_send(self, plan: list[dict[str, Any]], listen: float = 1.0, host: str = "client") -> dict[str, int]:
        """Send a plan from ``host`` (hil.rogue send): forged sources and the host's own."""
        n = len(self.site.procs.get(host, []))
        plan_file, out = self.workdir / f"rogue-plan-{n}.json", self.workdir / f"rogue-sent-{n}.json"
        plan_file.write_text(json.dumps(plan))
        proc = self.site.spawn(host, [PY, "-m", "hil.rogue", "send", "--plan", str(plan_file), "--out", str(out),
                                      "--listen", str(listen)], log_name="rogue-send")
        proc.wait(60.0 + len(plan) * 0.01)
        return json.loads(out.read_text())

    def rogue_flood(self, target: str, sources: list[str], seconds: float, host: str = "client") -> Any:
        """Start flooding ``target`` (IP:PORT) from forged ``sources`` (hil.rogue flood)."""
        out = self.workdir / "rogue-flood.json"
        return self.site.spawn(host, [PY, "-m", "hil.rogue", "flood", "--target", target, "--seconds", str(seconds),
                                      "--out", str(out), *(a for src in sources for a in ("--source", src))],
                               log_name="rogue-flood")

    def flood_figures(self, flood: Any) -> dict[str, Any]:
        flood.wait(10.0)
        out = self.workdir / "rogue-flood.json"
        return json.loads(out.read_text()) if out.exists() else {}

    # ------------------------------------------------------------------ physics

    def _physics(self) -> None:
        """Relay outputs become power: the fence relay of server i is relay<i>. A relay acts
        at once whatever the load, so this thread runs real-time (what it starts does not): on a
        loaded rig a normal one took over timing.fence_timeout to cut a server's power."""
        Realtime(PHYSICS_PRIORITY, "the rig's physics").enter()
        relay = {name: False for name in self.servers}
        next_outlet_look = 0.0
        while not self._stop.is_set():
            for i, name in enumerate(self.servers, start=1):
                cut = self.gpio.output(f"relay{i}")
                if cut == relay[name] or self._stop.is_set():  # the teardown's own relay changes: no power
                    continue
                relay[name] = cut
                self.events.append((time.monotonic(), "relay-cut" if cut else "relay-closed", name))
                if name in self.opts.stuck_relays:
                    continue  # welded contacts: the server keeps its power, the sense input says so
                try:
                    if cut and self._powered[name]:
                        self.cut_power(name)
                    elif not cut and not self._powered[name]:
                        self.restore_power(name)
                except Exception:  # the rig's physics must go on whatever one server did
                    log.exception("rig: power change of %s failed", name)
            if self.nut is not None and time.monotonic() >= next_outlet_look:
                next_outlet_look = time.monotonic() + 0.02
                self._ups_outlets()
            self._stop.wait(0.002)

    def _ups_outlets(self) -> None:
        """The UPSes' outlet relays: a load.off that upsd accepted cuts that server's power, and
        the UPS then reads OFF (see hil.nut on why the rig plays this part, not dummy-ups)."""
        for _user, command, ups in self.nut.new_instcmds():  # type: ignore[union-attr]
            name = ups.removesuffix("-ups")
            if command != "load.off" or name not in self.servers:
                continue
            self.events.append((time.monotonic(), "ups-outlet-off", name))
            try:
                if self._powered[name]:
                    self.cut_power(name)
                self.nut.set(ups, status="OFF")  # type: ignore[union-attr]
            except Exception:  # the rig's physics must go on whatever one server did
                log.exception("rig: UPS outlet of %s failed", name)

    def cut_power(self, name: str) -> None:
        self._powered[name] = False
        self.site.power_cut(name)
        if self.pg is not None:
            self.pg.kill(name)
        self.gpio.set_input(f"sense{self.servers.index(name) + 1}", False)

    def restore_power(self, name: str) -> None:
        self._powered[name] = True
        self.gpio.set_input(f"sense{self.servers.index(name) + 1}", True)
        self.site.power_on(name)
        self._start_server(name)  # the agent first: it must answer even if the database does not
        if self.pg is not None:
            try:
                self.pg.start(name)
            except RuntimeError as exc:  # the boot and the agent's rejoin (which stops it) race, as on a server
                log.info("rig: %s powered on, its database did not finish starting: %s", name,
                         str(exc).splitlines()[0])

    # ------------------------------------------------------------------ observing

    def status(self) -> dict[str, Any]:
        return request(self.sock, {"cmd": "status"}, timeout=2.0)

    def command(self, payload: dict[str, Any]) -> dict[str, Any]:
        return request(self.sock, payload, timeout=5.0)

    def wait_for(self, check, timeout: float, what: str, step: float = 0.02) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.status()
                if check(last):
                    return last
            except (OSError, RuntimeError, ValueError, ArbiterError) as exc:
                last = str(exc)
            time.sleep(step)
        raise TimeoutError(f"{what}: not within {timeout:g} s (last status: {json.dumps(last)[:600]})")

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        def ready(st: dict[str, Any]) -> bool:
            return (st.get("phase") == "normal" and st.get("primary") == "master"
                    and all(s["alive"] for s in st["servers"])
                    and all(link["state"] == "up" for s in st["servers"] for link in s["links"].values()))
        return self.wait_for(ready, timeout, "site ready")

    def first(self, what: str, server: str = "", after: float = 0.0) -> float | None:
        return next((t for t, w, s in self.events if w == what and (not server or s == server) and t >= after),
                    None)

    def journal(self) -> list[dict[str, Any]]:
        path = self.workdir / "arbiter-state" / "journal.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def agent_log(self, server: str) -> str:
        path = self.workdir / "logs" / f"agent-{server}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_probe(self) -> dict[str, Any]:
        proc = self._procs.pop("probe")
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        return json.loads(self._probe_out.read_text())

    def alerts(self) -> list[str]:
        if self.traps is None:
            return []
        return [r["event"] for r in self.traps.received()]

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Every part is stopped whatever another one did, and the site (namespaces, processes,
        ptys) is torn down last even if a second Ctrl-C lands in the middle."""
        self._stop.set()
        if self._physics_thread is not None:
            self._physics_thread.join(timeout=70.0)  # a power change under way ends first (pg_ctl start -t 60)
        try:
            try:
                self._stop_watchers()
            except Exception:  # teardown goes on whatever one part did
                log.exception("teardown")
            for part in (self.nut, self.pg, self.traps):
                if part is not None:
                    try:
                        part.__exit__(None, None, None)
                    except Exception:  # teardown goes on whatever one part did
                        log.exception("teardown")
        finally:
            self.site.teardown()

    def _stop_watchers(self) -> None:
        """The appliance and the agents stop before what they watch: PostgreSQL or upsd stopped
        under them would end every run with alerts of the teardown's own making
        (service-degraded, ups-monitoring-lost) in the logs and the journal."""
        arbiter = self._procs.get("arbiter")
        agents = [p for s in self.servers for p in self.site.procs.get(s, []) if p.name == f"agent-{s}"]
        for proc in ([arbiter] if arbiter is not None else []) + agents:
            proc.kill()
