"""The server agent's configuration schema (TOML), built like the appliance's."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.config import (Config, Fencing, Ping, build_section, ipv6_problem, ping_target_problems, resolve_paths,
                             setting)
from firmware.errors import ConfigError
from firmware.realtime import MAX_PRIORITY, REALTIME_PRIORITY


@dataclass(frozen=True, kw_only=True)
class AgentSection:
    name: str = setting(pattern=r"^[a-z][a-z0-9-]{0,31}$", doc="this server's name, as the appliance knows it")
    key_file: str = setting(path=True,
                            doc="this server's own key: `arbiterd derive-key NAME` on the appliance prints it")
    arbiter: str = setting("arbiter", doc="node id of the appliance whose commands are obeyed")
    listen: str = setting("0.0.0.0", doc="IPv4 address the agent answers on (UDP)")
    port: int = setting(5405, lo=1, hi=65535, doc="UDP port the agent answers on")
    serial: str = setting("", doc="the COM port wired to the appliance; empty: LAN only")
    baudrate: int = setting(115200, lo=1200, hi=4000000, unit="baud", doc="the COM port's speed (8N1)")
    health_command: str = setting("", doc="exit 0 = the service is healthy; empty: the replication adapter's "
                                          "own check decides (PostgreSQL: a new connection and a query), and "
                                          "without one the service counts as healthy")
    health_interval: float = setting(0.1, lo=0.05, hi=600.0, unit="s", doc="time between two health checks")
    health_timeout: float = setting(1.0, lo=0.05, hi=60.0, unit="s",
                                    doc="a health check not done within this fails: a hung service is a "
                                        "failed one (the failing spell is counted from the check's start, "
                                        "so a longer timeout does not lengthen a failover)")
    status_interval: float = setting(0.05, lo=0.01, hi=60.0, unit="s", doc="how often replication state is read")
    state_file: str = setting(path=True,
                              doc="remembers the boot counter and executed command ids across restarts; kept in"
                                  " two files beside it written in turn (NAME.a.json, NAME.b.json), the file itself"
                                  " read only when neither exists")
    peer_interval: float = setting(0.04, lo=0.005, hi=10.0, unit="s", doc="time between polls of the [[peers]]")
    realtime_priority: int = setting(REALTIME_PRIORITY, lo=0, hi=MAX_PRIORITY,
                                     doc="SCHED_RR priority of the agent's threads, so a busy server cannot delay a"
                                         " reply past the appliance's dead time; what they start (commands, the"
                                         " database) runs at normal priority (0: normal scheduling; refused by"
                                         " the kernel: a warning)")
    peer_dead_time: float = setting(0.2, lo=0.02, hi=120.0, unit="s",
                                    doc="no reply from the primary's agent this long: it is not heard")
    command_timeout: float = setting(60.0, lo=0.1, hi=3600.0, unit="s", doc="longest run of a hook")
    unobserved_after: float = setting(10.0, lo=0.0, hi=3600.0, unit="s",
                                      doc="no valid poll from the appliance for this long: raise agent-unobserved"
                                          " (the appliance is dead, hung or cut off: nobody watches this server);"
                                          " agent-observed when polls come back (0: never). Counted from the"
                                          " agent's start as well: a server that boots while nothing polls it"
                                          " raises it too, since an appliance that never comes back must not"
                                          " go unnoticed")
    alert_hook: str = setting("", doc="command run for the agent's own alerts, with ARBITER_EVENT, ARBITER_SEVERITY,"
                                      " ARBITER_SERVER, ARBITER_TEXT, ARBITER_EVENT_NUMBER and ARBITER_ENTERPRISE in"
                                      " its environment (e.g. snmptrap to the manager); empty: the log only")
    enterprise_oid: str = setting("1.3.6.1.4.1.64400", pattern=r"^1\.3\.6\.1\.4\.1\.\d+$",
                                  doc="the site's enterprise arc, as alerts.enterprise_oid on the appliance: the"
                                      " alert hook's trap OID is ARBITER_ENTERPRISE.0.ARBITER_EVENT_NUMBER")
    isolation_timeout: float = setting(0.0, lo=0.0, hi=600.0, unit="s",
                                       doc="a primary that has heard neither the appliance (any channel) nor any"
                                           " peer for this long stops its database (self-fencing; 0: never)."
                                           " Required while the appliance runs with policy.fencing = none; see"
                                           " check-config --site")
    self_fence_timeout: float = setting(5.0, lo=0.5, hi=120.0, unit="s",
                                        doc="the database must be stopped within this once self-fencing starts")


@dataclass(frozen=True, kw_only=True)
class Peer:
    name: str = setting(pattern=r"^[a-z][a-z0-9-]{0,31}$", doc="the peer server's name, as the appliance knows it")
    key_file: str = setting(path=True, doc="the key this server shares with the peer: `arbiterd derive-key NAME PEER`")
    address: str = setting(doc="the peer's agent: IPv4 address or host name")
    port: int = setting(5405, lo=1, hi=65535, doc="its UDP port")


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """Commands for the appliance's orders, run without a shell with ARBITER_OP,
    ARBITER_COMMAND_ID and ARBITER_ARGS (JSON) in their environment."""

    promote: str = setting("", doc="promote this server; set, it replaces the [replication] adapter's promote")
    demote: str = setting("", doc="demote this server (planned switchover); replaces the adapter's demote")
    take_ip: str = setting("", doc="take the virtual IP; used only while vip.address is empty")
    release_ip: str = setting("", doc="release the virtual IP; used only while vip.address is empty")
    backup: str = setting("", doc="start a backup (UPS running low); empty: the order is refused")
    shutdown: str = setting("", doc="shut the server down in order (UPS running low); empty: refused")
    rejoin: str = setting("", doc="rejoin as a standby of the primary named in ARBITER_ARGS; replaces the"
                                  " adapter's rejoin")
    sync_degrade: str = setting("", doc="stop waiting for the lost synchronous standby (policy.sync_loss ="
                                        " degrade); replaces the adapter's")
    sync_restore: str = setting("", doc="wait for the standbys named in ARBITER_ARGS again; replaces the"
                                        " adapter's")
    rebuild: str = setting("", doc="rebuild this old primary from the primary named in ARBITER_ARGS"
                                   " (pg_basebackup); replaces the adapter's")


@dataclass(frozen=True, kw_only=True)
class VipSection:
    address: str = setting("", doc="virtual IPv4 address with prefix; empty: take_ip/release_ip use hooks")
    interface: str = setting("eth0", doc="the interface that carries it")
    garp_count: int = setting(5, lo=1, hi=100, doc="gratuitous ARPs sent on a takeover")
    garp_interval: float = setting(0.2, lo=0.01, hi=10.0, unit="s", doc="time between those")
    refresh_s: float = setting(30.0, lo=0.0, hi=3600.0, unit="s",
                               doc="after the burst, announce again every 2 s for this long (stale ARP caches)")


@dataclass(frozen=True)
class AgentConfig:
    agent: AgentSection
    peers: tuple[Peer, ...]
    hooks: Hooks
    vip: VipSection
    ping: Ping = field(default_factory=Ping)
    replication: dict[str, Any] = field(default_factory=dict)


def parse(data: dict[str, Any]) -> AgentConfig:
    problems: list[str] = []
    for unknown in sorted(set(data) - {"agent", "peers", "hooks", "vip", "ping", "replication"}):
        problems.append(f"{unknown}: unknown section (known: agent, peers, hooks, vip, ping, replication)")
    agent = build_section(AgentSection, "agent", data.get("agent", {}), problems)
    hooks = build_section(Hooks, "hooks", data.get("hooks", {}), problems)
    vip = build_section(VipSection, "vip", data.get("vip", {}), problems)
    ping = build_section(Ping, "ping", data.get("ping", {}), problems)
    if ping is not None:
        problems += ping_target_problems("ping.targets", ping.targets)
    peers_raw = data.get("peers", [])
    if not isinstance(peers_raw, list):
        problems.append("peers: must be an array of tables ([[peers]])")
        peers_raw = []
    peers = tuple(p for i, raw in enumerate(peers_raw)
                  if (p := build_section(Peer, f"peers[{i}]", raw, problems)) is not None)
    if agent is not None:
        names = [agent.arbiter, agent.name, *(p.name for p in peers)]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"agent.name, agent.arbiter and peers[].name must differ: {dup!r} is used twice")
    replication = data.get("replication", {})
    if not isinstance(replication, dict):
        problems.append("replication: must be a table")
    if agent is not None:
        problems += filter(None, [ipv6_problem("agent.listen", agent.listen, "the agent answers on IPv4 UDP")])
    problems += filter(None, [ipv6_problem(f"peers[{i}].address", p.address, "peers are polled over IPv4 UDP")
                              for i, p in enumerate(peers)])
    if vip is not None:
        problems += filter(None, [ipv6_problem("vip.address", vip.address, "takeovers are announced with ARP")])
    if problems or agent is None or hooks is None or vip is None or ping is None:
        raise ConfigError(problems or ["agent config: incomplete"])
    return AgentConfig(agent, peers, hooks, vip, ping, replication)


def self_fence_margin(agent: AgentSection, site: Config) -> float:
    """Seconds between the latest moment an isolated primary's database is down and the
    earliest moment the appliance may promote another server under policy.fencing = none.

    Patroni's rule (``loop_wait + 2 * retry_timeout <= ttl``: the leader demotes itself before
    its lease can expire) transposed: the agent's clock starts when it last heard the
    appliance, which is no later than when the appliance last heard the agent; it notices
    isolation within one check (agent.peer_interval) after agent.isolation_timeout and then
    has agent.self_fence_timeout to stop the database; the appliance may promote once the
    primary has been silent for timing.self_fence_wait, its own view late by up to two polls
    (timing.interval: the last reply may have been sent just after a poll that was lost).
    """
    done = agent.isolation_timeout + agent.peer_interval + agent.self_fence_timeout + 2 * site.timing.interval
    return site.timing.self_fence_wait - done


def site_problems(agent: AgentSection, site: Config, site_path: str) -> list[str]:
    """Cross-checks against the appliance's config: self-fencing is required without a fence
    relay, and must be complete before the appliance can promote."""
    if site.policy.fencing is not Fencing.NONE:
        return []
    if agent.isolation_timeout == 0:
        return [f"agent.isolation_timeout = 0: required while policy.fencing = 'none' in {site_path} (an isolated"
                " primary must stop its own database before the appliance promotes another)"]
    margin = self_fence_margin(agent, site)
    if margin <= 0:
        return [f"agent.isolation_timeout = {agent.isolation_timeout:g}: agent.isolation_timeout +"
                f" agent.peer_interval + agent.self_fence_timeout + 2 x timing.interval ="
                f" {site.timing.self_fence_wait - margin:g} s must stay below timing.self_fence_wait ="
                f" {site.timing.self_fence_wait:g} s of {site_path} (self-fencing must be complete before the"
                " appliance can promote)"]
    return []


def load(path: str | Path) -> AgentConfig:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc})"]) from exc
    return resolve_paths(parse(data), Path(path).absolute().parent)
