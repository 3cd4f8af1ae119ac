"""Site configuration: one declarative schema, loaded from TOML, checked as a whole.

Each section is a frozen dataclass; each setting is a field declared with ``setting()``
carrying its bounds, choices and documentation. ``load`` returns a ``Config`` or raises
``ConfigError`` listing every problem as ``key = value: what is wrong (bound)``. Unknown
keys are errors (a typo must not silently become a default). Cross-field timing checks
live in ``_cross_checks``. Safety settings have no silent fallback: a bad one stops the
daemon at start-up.
"""
from __future__ import annotations

import dataclasses
import enum
import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

from board.pins import PIN_MAPS, STATUS_LEDS
from firmware.errors import ConfigError
from firmware.realtime import MAX_PRIORITY, REALTIME_PRIORITY

_REQUIRED = object()
MAX_STANDBYS = 9
SERIAL_BYTES_PER_POLL = 360  # protocol v2: a poll (99 B) and a reply (258 B; 476 B with a 200-char detail), COBS-framed
SERIAL_MAX_SHARE = 0.8  # heartbeats may use at most this share of a serial line
SNMP_SECRET_MIN = 8  # net-snmp refuses shorter USM passphrases


class Choice(enum.StrEnum):
    """A setting's closed set of values. Compares equal to its text, and shows as it does in
    the TOML file (``board.kind = 'hil'``), so messages and saved text read as before."""

    def __repr__(self) -> str:
        return repr(self.value)


class SiteMode(Choice):
    ACTIVE = "active"
    OBSERVE = "observe"  # decide and report, act on nothing


class Fencing(Choice):
    RELAY = "relay"
    NONE = "none"  # no relay: the standby must confirm it lost the primary


class SyncLoss(Choice):
    BLOCK = "block"  # commits wait for the lost synchronous standby (Patroni's synchronous_mode_strict)
    DEGRADE = "degrade"  # after policy.sync_loss_grace the primary stops waiting (synchronous_mode)


class OldPrimary(Choice):
    STAY_FENCED = "stay-fenced"
    REJOIN_AS_STANDBY = "rejoin-as-standby"


class BoardKind(Choice):
    PI4 = "pi4"
    PI5 = "pi5"
    CM4 = "cm4"
    GENERIC = "generic"
    HIL = "hil"


class PinFactory(Choice):
    AUTO = "auto"
    RPIGPIO = "rpigpio"
    LGPIO = "lgpio"
    MOCK = "mock"


class FenceMode(Choice):
    OFF = "off"
    CYCLE = "cycle"


class VipVerify(Choice):
    ARP = "arp"
    NONE = "none"


def setting(default: Any = _REQUIRED, *, lo: float | None = None, hi: float | None = None,
            choices: tuple[str, ...] | type[Choice] | None = None, pattern: str | None = None,
            safety: bool = False, unit: str = "", path: bool = False, doc: str = "") -> Any:
    """A declared setting. ``choices`` given as a Choice enum: the loaded value is its member.
    ``path`` marks a file name that ``load`` resolves against the config file's folder;
    ``unit`` and ``doc`` feed the generated reference (docs/config.md, arbiter.toml(5))."""
    enum_type = choices if isinstance(choices, type) else None
    if enum_type is not None:
        choices = tuple(m.value for m in enum_type)
    meta = {"lo": lo, "hi": hi, "choices": choices, "enum": enum_type, "pattern": pattern, "safety": safety,
            "unit": unit, "path": path, "doc": doc}
    if default is _REQUIRED:
        return field(metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


_NAME = r"^[a-z][a-z0-9-]{0,31}$"
AUTH_PROTOCOLS = ("sha", "sha224", "sha256", "sha384", "sha512")
PRIV_PROTOCOLS = ("aes", "aes192", "aes256")


@dataclass(frozen=True, kw_only=True)
class Site:
    name: str = setting(pattern=_NAME, doc="site name, used in alerts, the SNMP engine id and the status page")
    node_id: str = setting("arbiter", pattern=_NAME,
                           doc="the appliance's sender id in frames; agents obey commands from this id only")
    key_file: str = setting(path=True,
                            doc="file holding the site master key (at least 16 bytes); only the appliance"
                                " holds it: each server gets its own key from `arbiterd derive-key SERVER`")
    state_dir: str = setting("/var/lib/arbiter", path=True, doc="persisted state, journal and alert outbox")
    socket: str = setting("/run/arbiter/control.sock", path=True, doc="operator CLI socket (root only)")
    mode: SiteMode = setting(SiteMode.ACTIVE, choices=SiteMode, safety=True,
                        doc="observe: decide and report, act on nothing")
    log_level: str = setting("info", choices=("debug", "info", "warning", "error"),
                             doc="lowest level written to the log (journald under systemd)")
    realtime_priority: int = setting(REALTIME_PRIORITY, lo=0, hi=MAX_PRIORITY,
                                     doc="SCHED_RR priority of arbiterd's heartbeat readers and decision loop, so "
                                         "a busy board cannot delay a reply past timing.dead_time (0: normal "
                                         "scheduling; refused by the kernel: a warning, and normal scheduling)")


@dataclass(frozen=True, kw_only=True)
class Timing:
    interval: float = setting(0.04, lo=0.005, hi=10.0, safety=True, unit="s",
                              doc="keepalive: time between polls on every link")
    warn_time: float = setting(0.12, lo=0.01, hi=60.0, unit="s", doc="a reply later than this is a warning")
    dead_time: float = setting(0.2, lo=0.02, hi=120.0, safety=True, unit="s",
                               doc="a link silent this long is dead; all links dead: server dead")
    min_misses: int = setting(3, lo=2, hi=100, safety=True, unit="polls",
                              doc="dead_time must span more than this many polls")
    init_dead: float = setting(3.0, lo=0.1, hi=600.0, safety=True, unit="s",
                               doc="grace after the appliance starts before anyone is declared dead")
    hold_down: float = setting(300.0, lo=1.0, hi=86400.0, safety=True, unit="s",
                               doc="no second automatic failover for this long after one")
    fence_timeout: float = setting(2.0, lo=0.05, hi=120.0, safety=True, unit="s",
                                   doc="power-off must be confirmed by the readback within this")
    action_timeout: float = setting(15.0, lo=0.1, hi=600.0, unit="s",
                                    doc="longest wait for an agent's promote, demote or IP move")
    verify_timeout: float = setting(3.0, lo=0.1, hi=60.0, unit="s",
                                    doc="longest wait for the ARP owner check after a takeover")
    watchdog_timeout: float = setting(15.0, lo=1.0, hi=15.0, safety=True, unit="s",
                                      doc="the longest a hung decision loop may go unnoticed: arbiterd's "
                                          "WatchdogSec must not exceed it (checked at start-up; the hardware "
                                          "watchdog, bcm2835_wdt, allows 15 s at most)")
    rebuild_timeout: float = setting(3600.0, lo=10.0, hi=86400.0, unit="s",
                                     doc="a standby's rebuild (a full copy of the primary) must end within this")
    self_fence_wait: float = setting(10.0, lo=0.5, hi=600.0, safety=True, unit="s",
                                     doc="policy.fencing = none: a dead primary is replaced only once it has been"
                                         " silent this long, the time its agent has to fence itself; it must exceed"
                                         " agent.isolation_timeout + agent.self_fence_timeout + 2 x timing.interval"
                                         " (arbiter-agent check-config --site checks it)")


@dataclass(frozen=True, kw_only=True)
class Policy:
    fencing: Fencing = setting(Fencing.RELAY, choices=Fencing, safety=True,
                           doc="none: no relay; then the standby must also confirm it lost the primary")
    lag_limit_bytes: int = setting(0, lo=0, hi=2**40, safety=True, unit="B",
                                   doc="max replication lag for an automatic failover (0: in sync only)")
    lag_limit_s: float = setting(0.0, lo=0.0, hi=3600.0, safety=True, unit="s",
                                 doc="with lag_limit_bytes set, a standby not in sync must also be at most this"
                                     " far behind in time (0: no time limit)")
    old_primary: OldPrimary = setting(OldPrimary.STAY_FENCED, choices=OldPrimary, safety=True,
                                      doc="a fenced old primary that answers again: stays out, or is told to"
                                          " rejoin as a standby of the new primary")
    auto_failover: bool = setting(True, safety=True,
                                  doc="false: a dead primary raises the alarm and waits for an operator")
    ups_low_runtime_s: float = setting(300.0, lo=0.0, hi=86400.0, unit="s",
                                       doc="UPS runtime under this counts as low battery")
    ups_switchover: bool = setting(True, doc="low battery on the primary: switch to a standby on line")
    unhealthy_grace: float = setting(3.0, lo=0.5, hi=3600.0, safety=True, unit="s",
                                     doc="a primary whose agent answers but whose service health check fails "
                                         "this long without a break is failed over like a dead one (fenced "
                                         "first); any healthy report restarts the count, so a flapping check "
                                         "never adds up to a failover")
    health_restore: float = setting(1.0, lo=0.0, hi=3600.0, unit="s",
                                    doc="health must hold this long before service-restored is raised "
                                        "(hysteresis: a flapping check raises one degraded/restored pair, "
                                        "not one per flap)")
    reachability_grace: float = setting(3.0, lo=0.5, hi=3600.0, safety=True, unit="s",
                                        doc="a primary that reaches none of the ping targets while an "
                                            "eligible standby does, this long without a break, is failed over "
                                            "(fenced first); nobody reaching them is a network failure: an "
                                            "alert, no failover")
    sync_loss: SyncLoss = setting(SyncLoss.BLOCK, choices=SyncLoss, safety=True,
                             doc="the synchronous standby is lost: block keeps commits waiting for it (no"
                                 " acknowledged commit on one machine only) and raises commits-blocked; degrade"
                                 " has the primary stop waiting after policy.sync_loss_grace (durability-reduced),"
                                 " with no automatic failover until that standby is in sync again")
    sync_loss_grace: float = setting(2.0, lo=0.1, hi=3600.0, safety=True, unit="s",
                                     doc="how long the primary may run without a synchronous standby before"
                                         " policy.sync_loss acts (commits wait meanwhile)")
    auto_rebuild: bool = setting(False, safety=True,
                                 doc="an old primary that cannot rejoin by pg_rewind is rebuilt from the primary"
                                     " (pg_basebackup) automatically; false: an operator runs arbiterctl rebuild")


@dataclass(frozen=True, kw_only=True)
class Board:
    kind: BoardKind = setting(BoardKind.GENERIC, choices=BoardKind, safety=True,
                              doc="the appliance's board; picks the pin map and the GPIO library")
    pin_factory: PinFactory = setting(PinFactory.AUTO, choices=PinFactory, safety=True,
                               doc="auto picks the board's own; mock only with kind hil")
    alarm_relay: str = setting("", doc="pin name of the alarm relay in the board's pin map; empty: none")
    ack_button: str = setting("", doc="pin name of the acknowledge push button; empty: none")
    hil_gpio_dir: str = setting("", path=True, doc="kind hil only: the rig's GPIO bridge directory")


@dataclass(frozen=True, kw_only=True)
class Fence:
    mode: FenceMode = setting(FenceMode.OFF, choices=FenceMode, safety=True,
                        doc="off: stay off until an operator restores power; cycle: off, wait, on")
    cycle_off_s: float = setting(10.0, lo=1.0, hi=600.0, unit="s",
                                 doc="mode cycle: how long the power stays off before it is restored")
    ups_username: str = setting("", doc="level 2: the NUT user allowed the servers' fence_ups_command instcmds")
    ups_password_file: str = setting("", path=True, doc="level 2: file holding that NUT user's password (root only)")


@dataclass(frozen=True, kw_only=True)
class Vip:
    address: str = setting(doc="the service's virtual IPv4 address with prefix, e.g. 192.0.2.10/24")
    verify: VipVerify = setting(VipVerify.ARP, choices=VipVerify, safety=True,
                                doc="arp: after a takeover, check that the new primary's MAC alone answers for"
                                    " the address; none: trust the agent")
    interface: str = setting("eth0", doc="the appliance's LAN interface for ARP probes")
    audit_interval: float = setting(1.0, lo=0.0, hi=3600.0, unit="s",
                                    doc="time between two checks of who answers ARP for the virtual IP, "
                                        "compared with the agents' vip flags (0, or vip.verify = 'none': no "
                                        "audit, only the check after a takeover)")


@dataclass(frozen=True, kw_only=True)
class Ping:
    """Ping nodes on the clients' side; the same section in the appliance's and the agents' configs."""

    targets: list = setting([], doc="client-side addresses (the gateway, a client host) whose ICMP echo "
                                    "replies show that the clients' network is reachable; empty: not probed")
    interval: float = setting(0.5, lo=0.05, hi=60.0, unit="s", doc="time between two probe rounds")
    timeout: float = setting(0.5, lo=0.05, hi=10.0, unit="s",
                             doc="a round reaches the clients if any target answers within this")


def ping_target_problems(key: str, targets: list) -> list[str]:
    """Each target must be an IPv4 address (ICMP echo); names would need DNS, which fails first."""
    out = []
    for t in targets:
        try:
            ipaddress.IPv4Address(t)
        except (ValueError, TypeError):
            out.append(f"{key} = {targets!r}: {t!r} is not an IPv4 address")
    return out


@dataclass(frozen=True, kw_only=True)
class Ups:
    poll_interval: float = setting(2.0, lo=0.1, hi=60.0, unit="s", doc="time between reads of every UPS from NUT")
    username: str = setting("", doc="NUT upsd user; empty: anonymous")
    password_file: str = setting("", path=True,
                                 doc="file holding that user's password; read at start when a server has a ups")
    timeout: float = setting(2.0, lo=0.1, hi=30.0, unit="s", doc="longest wait for an upsd answer")


@dataclass(frozen=True, kw_only=True)
class SnmpManager:
    host: str = setting(doc="the manager's IPv4 address or host name")
    port: int = setting(162, lo=1, hi=65535, doc="the manager's UDP port")
    version: str = setting("v2c", choices=("v2c", "v3"), doc="SNMP version; v3 is authPriv")
    notify: str = setting("trap", choices=("trap", "inform"),
                          doc="inform: acknowledged, queued on disk and resent until the manager confirms")
    community: str = setting("public", doc="v2c community")
    user: str = setting("", doc="v3 user name")
    auth_key_file: str = setting("", path=True,
                                 doc="v3: file holding the authentication passphrase (8 characters at least)")
    priv_key_file: str = setting("", path=True,
                                 doc="v3: file holding the privacy passphrase (8 characters at least)")
    auth_protocol: str = setting("sha", choices=AUTH_PROTOCOLS,
                                 doc="v3 authentication (HMAC): sha is SHA-1; sha256 and up need the manager to "
                                     "know them (net-snmp 5.8 and later)")
    priv_protocol: str = setting("aes", choices=PRIV_PROTOCOLS,
                                 doc="v3 privacy: aes is AES-128; aes192 and aes256 use the key extension of "
                                     "net-snmp and Cisco (Blumenthal draft)")


@dataclass(frozen=True, kw_only=True)
class Alerts:
    enterprise_oid: str = setting("1.3.6.1.4.1.64400", pattern=r"^1\.3\.6\.1\.4\.1\.\d+$",
                                  doc="the site's registered enterprise arc")
    managers: list = setting([], doc="[[alerts.managers]] tables, keys below")
    hook: str = setting("", doc="command run with the event in its environment")
    min_repeat_s: float = setting(60.0, lo=0.0, hi=86400.0, unit="s",
                                  doc="same event, server and channel: once per this")
    max_per_minute: int = setting(30, lo=1, hi=10000, unit="alerts",
                                  doc="rate limit over all events; what it holds back is summed up in one later"
                                      " line (the alarm relay still sees every alert)")
    inform_retries: int = setting(3, lo=0, hi=100, doc="informs: resends within one attempt")
    inform_timeout: float = setting(2.0, lo=0.1, hi=60.0, unit="s", doc="informs: wait for the acknowledgement")
    heartbeat_interval: float = setting(60.0, lo=0.0, hi=86400.0, unit="s",
                                        doc="time between appliance-alive traps to every manager (0: none); "
                                            "a manager that misses them knows the appliance is dead or cut off")


@dataclass(frozen=True, kw_only=True)
class Http:
    address: str = setting("", doc="serve the read-only status page, /health, /status and /metrics on this "
                                   "local address (e.g. the management LAN's); empty: off. Nothing secret is served")
    port: int = setting(8080, lo=1, hi=65535, doc="TCP port of the status page")


@dataclass(frozen=True, kw_only=True)
class SnmpAgent:
    address: str = setting("", doc="answer SNMP GET/GETNEXT/GETBULK for the MIB's status objects on this local "
                                   "address; empty: off")
    port: int = setting(161, lo=1, hi=65535, doc="UDP port of the SNMP responder")
    community_file: str = setting("", path=True,
                                  doc="file holding the read-only SNMPv2c community; empty: no v2c access")
    user: str = setting("", doc="read-only SNMPv3 user (authPriv only); empty: no v3 access")
    auth_key_file: str = setting("", path=True,
                                 doc="file holding the v3 user's authentication passphrase (8+ characters)")
    priv_key_file: str = setting("", path=True, doc="file holding the v3 user's privacy passphrase (8+ characters)")
    auth_protocol: str = setting("sha256", choices=AUTH_PROTOCOLS, doc="v3 authentication (HMAC)")
    priv_protocol: str = setting("aes256", choices=PRIV_PROTOCOLS, doc="v3 privacy")


@dataclass(frozen=True, kw_only=True)
class Server:
    name: str = setting(pattern=_NAME, doc="the server's name, as its agent's agent.name")
    priority: int = setting(100, lo=0, hi=1000,
                            doc="0: never promoted automatically (an operator's failover --force still can). "
                                "A failover's target is chosen among the healthy standbys in sync: least "
                                "lag first, then higher priority, then name")
    address: str = setting("", doc="the agent's LAN IPv4 address; empty: no LAN link")
    port: int = setting(5405, lo=1, hi=65535, doc="the agent's UDP port")
    serial: str = setting("", doc="serial device or pyserial URL; empty: no serial link")
    baudrate: int = setting(115200, lo=1200, hi=4000000, unit="baud", doc="the serial link's speed (8N1)")
    mac: str = setting("", pattern=r"^$|^([0-9a-f]{2}:){5}[0-9a-f]{2}$", doc="LAN MAC, for ARP checks")
    fence_relay: str = setting("", doc="pin name of its power relay")
    power_sense: str = setting("", doc="pin name of its power readback input")
    relay_active_low: bool = setting(False, safety=True, doc="the relay board energises its coil on a low level")
    sense_active_low: bool = setting(False, safety=True, doc="the readback input reads low while powered")
    ups: str = setting("", pattern=r"^$|^[\w.-]+@[\w.:-]+$", doc="its UPS in NUT: ups@host[:port]; empty: none")
    fence_ups_command: str = setting("", pattern=r"^$|^(load\.off|outlet\.\d{1,3}\.load\.off)$", safety=True,
                                     doc="fence level 2: the NUT instcmd on this server's ups that cuts its power"
                                         " (load.off, or outlet.N.load.off for its own outlet), tried when the"
                                         " relay's power-off is not confirmed; empty: no level 2")


@dataclass(frozen=True, kw_only=True)
class Config:
    site: Site
    servers: tuple[Server, ...]
    vip: Vip
    timing: Timing = field(default_factory=Timing)
    policy: Policy = field(default_factory=Policy)
    board: Board = field(default_factory=Board)
    fence: Fence = field(default_factory=Fence)
    ups: Ups = field(default_factory=Ups)
    alerts: Alerts = field(default_factory=Alerts)
    http: Http = field(default_factory=Http)
    snmp: SnmpAgent = field(default_factory=SnmpAgent)
    ping: Ping = field(default_factory=Ping)

    def server(self, name: str) -> Server:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)


_SECTIONS: dict[str, type] = {
    "site": Site, "vip": Vip, "timing": Timing, "policy": Policy, "board": Board,
    "fence": Fence, "ups": Ups, "alerts": Alerts, "ping": Ping, "http": Http, "snmp": SnmpAgent,
}


def sections() -> dict[str, type]:
    """Every top-level section's schema class by name (its fields carry defaults and docs)."""
    return dict(_SECTIONS)


def _check_value(key: str, value: Any, f: dataclasses.Field, hint: Any) -> str | None:
    meta = f.metadata
    want = str if meta.get("enum") else get_origin(hint) or hint
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want in (int, float) and isinstance(value, bool)):
        return f"{key} = {value!r}: must be {want.__name__}"
    if want is float and not math.isfinite(value):
        return f"{key} = {value!r}: must be a finite number"
    if meta.get("lo") is not None and value < meta["lo"]:
        return f"{key} = {value!r}: below the minimum {meta['lo']}"
    if meta.get("hi") is not None and value > meta["hi"]:
        return f"{key} = {value!r}: above the maximum {meta['hi']}"
    if meta.get("choices") and value not in meta["choices"]:
        return f"{key} = {value!r}: must be one of {', '.join(meta['choices'])}"
    if meta.get("pattern") and not re.match(meta["pattern"], value):
        return f"{key} = {value!r}: must match {meta['pattern']}"
    return None


def _typed(value: Any, f: dataclasses.Field, hint: Any) -> Any:
    """A checked TOML value as the field holds it: floats for float fields, Choice members."""
    if f.metadata.get("enum"):
        return f.metadata["enum"](value)
    return float(value) if hint is float else value


def build_section(cls: type, prefix: str, table: Any, problems: list[str]) -> Any:
    if not isinstance(table, dict):
        problems.append(f"{prefix} = {table!r}: must be a table")
        return None
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for unknown in sorted(set(table) - set(fields)):
        problems.append(f"{prefix}.{unknown}: unknown key (known: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{key}: required ({f.metadata.get('doc', '')})".rstrip(" ()"))
            continue
        value = table[name]
        problem = _check_value(key, value, f, hints[name])
        if problem:
            problems.append(problem)
            continue
        values[name] = _typed(value, f, hints[name])
    try:
        return cls(**values)
    except TypeError:
        return None


def parse(data: dict[str, Any]) -> Config:
    """Validate a TOML document already parsed into a dict."""
    problems: list[str] = []
    known = set(_SECTIONS) | {"servers"}
    for unknown in sorted(set(data) - known):
        problems.append(f"{unknown}: unknown section (known: {', '.join(sorted(known))})")
    sections = {name: build_section(cls, name, data.get(name, {}), problems) for name, cls in _SECTIONS.items()}
    servers_raw = data.get("servers", [])
    servers: list[Server] = []
    if not isinstance(servers_raw, list):
        problems.append("servers: must be an array of tables ([[servers]])")
        servers_raw = []
    for i, raw in enumerate(servers_raw):
        srv = build_section(Server, f"servers[{i}]", raw, problems)
        if srv is not None:
            servers.append(srv)
    managers = []
    alerts = sections["alerts"]
    if alerts is not None:
        for i, raw in enumerate(alerts.managers):
            mgr = build_section(SnmpManager, f"alerts.managers[{i}]", raw, problems)
            if mgr is not None:
                managers.append(mgr)
        sections["alerts"] = dataclasses.replace(alerts, managers=managers)
    if any(v is None for v in sections.values()):
        raise ConfigError(problems or ["config: incomplete"])
    cfg = Config(servers=tuple(servers), **sections)
    # Cross-field checks run even after per-key errors, so check-config names everything at
    # once; a check that involves a section with a bad key would judge a default: left out.
    bad = {named[0] for named in map(_sections_named, problems) if named}
    problems += [p for p in _cross_checks(cfg) if not bad & set(_sections_named(p))]
    if problems:
        raise ConfigError(problems)
    return cfg


def _sections_named(problem: str) -> list[str]:
    """The config sections a problem's text names, in order (``timing.dead_time`` -> timing)."""
    return re.findall(r"\b(%s)\b[.\[ :]" % "|".join((*_SECTIONS, "servers")), problem)


def _cross_checks(cfg: Config) -> list[str]:
    p: list[str] = []
    t = cfg.timing
    if t.interval * t.min_misses >= t.dead_time:
        p.append(f"timing.dead_time = {t.dead_time}: must exceed timing.interval x timing.min_misses"
                 f" = {t.interval * t.min_misses:g}")
    if not t.interval < t.warn_time < t.dead_time:
        p.append(f"timing.warn_time = {t.warn_time}: must lie between timing.interval ({t.interval})"
                 f" and timing.dead_time ({t.dead_time})")
    if t.dead_time >= t.init_dead:
        p.append(f"timing.init_dead = {t.init_dead}: must exceed timing.dead_time = {t.dead_time}")
    if t.hold_down <= t.dead_time:
        p.append(f"timing.hold_down = {t.hold_down}: must exceed timing.dead_time = {t.dead_time}")
    if t.dead_time >= t.watchdog_timeout:
        p.append(f"timing.dead_time = {t.dead_time}: must be below timing.watchdog_timeout"
                 f" = {t.watchdog_timeout}")
    for i, s in enumerate(cfg.servers):
        if s.serial:
            need = SERIAL_BYTES_PER_POLL / t.interval  # a poll and its reply, COBS-framed
            have = SERIAL_MAX_SHARE * s.baudrate / 10  # 8N1: ten bits a byte
            if need > have:
                p.append(f"servers[{i}].baudrate = {s.baudrate}: too slow for timing.interval = {t.interval}"
                         f" ({need:.0f} B/s of heartbeat, at most {have:.0f} B/s allowed:"
                         f" {SERIAL_MAX_SHARE:.0%} of the line); raise the interval or the baud rate")
    names = [s.name for s in cfg.servers]
    if not 2 <= len(names) <= 1 + MAX_STANDBYS:
        p.append(f"servers: {len(names)} configured; need 2..{1 + MAX_STANDBYS} (one primary,"
                 f" up to {MAX_STANDBYS} standbys)")
    for dup in sorted({n for n in names if names.count(n) > 1}):
        p.append(f"servers.name = {dup!r}: used twice")
    if cfg.site.node_id in names:
        p.append(f"site.node_id = {cfg.site.node_id!r}: same as a server's name")
    for i, s in enumerate(cfg.servers):
        if not s.address and not s.serial:
            p.append(f"servers[{i}] ({s.name}): needs address, serial or both")
        if s.address:
            try:
                ipaddress.ip_address(s.address)
            except ValueError:
                p.append(f"servers[{i}].address = {s.address!r}: not an IP address")
        if cfg.policy.fencing is Fencing.RELAY and not (s.fence_relay and s.power_sense):
            p.append(f"servers[{i}] ({s.name}): fence_relay and power_sense are required while"
                     " policy.fencing = 'relay' (a fence must be confirmed; set policy.fencing ="
                     " 'none' to run without fencing, explicitly)")
    p += _fence_level2_checks(cfg)
    try:
        ipaddress.ip_interface(cfg.vip.address)
    except ValueError:
        p.append(f"vip.address = {cfg.vip.address!r}: not an address with prefix (192.0.2.10/24)")
    if cfg.vip.verify is VipVerify.ARP and not all(s.mac for s in cfg.servers):
        p.append("vip.verify = 'arp': every server needs its mac (or set vip.verify = 'none')")
    p += ping_target_problems("ping.targets", cfg.ping.targets)
    if cfg.board.pin_factory is PinFactory.MOCK and cfg.board.kind is not BoardKind.HIL:
        p.append(f"board.pin_factory = 'mock': only allowed with board.kind = 'hil'"
                 f" (board.kind = {cfg.board.kind!r})")
    for i, m in enumerate(cfg.alerts.managers):
        if m.version == "v3" and not (m.user and m.auth_key_file and m.priv_key_file):
            p.append(f"alerts.managers[{i}]: v3 needs user, auth_key_file and priv_key_file")
    for section, address in (("http", cfg.http.address), ("snmp", cfg.snmp.address)):
        if address:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                p.append(f"{section}.address = {address!r}: not an IP address")
    a = cfg.snmp
    if a.address and not (a.community_file or a.user):
        p.append(f"snmp.address = {a.address!r}: set snmp.community_file, snmp.user or both (no access is defined)")
    if a.user and not (a.auth_key_file and a.priv_key_file):
        p.append(f"snmp.user = {a.user!r}: needs snmp.auth_key_file and snmp.priv_key_file (authPriv only)")
    return p + _pin_checks(cfg) + _family_checks(cfg)


def _pin_checks(cfg: Config) -> list[str]:
    """Every pin name is in the board's pin map, and no pin serves twice (two servers on one
    relay would cut both; a relay on a status LED's line would flicker with it)."""
    pins = PIN_MAPS[cfg.board.kind]
    used: dict[str, str] = {pin: f"the {status!r} status LED" for status, pin in STATUS_LEDS.items()}
    named = [(f"servers[{i}].{key}", getattr(s, key)) for i, s in enumerate(cfg.servers)
             for key in ("fence_relay", "power_sense")]
    named += [("board.alarm_relay", cfg.board.alarm_relay), ("board.ack_button", cfg.board.ack_button)]
    p: list[str] = []
    for key, pin in named:
        if not pin:
            continue
        if pin not in pins:
            p.append(f"{key} = {pin!r}: no such pin on board.kind = {cfg.board.kind!r}"
                     f" (known: {', '.join(sorted(pins))})")
        elif pin in used:
            p.append(f"{key} = {pin!r}: already used by {used[pin]}")
        else:
            used[pin] = key
    return p


def ipv6_problem(key: str, value: str, why: str) -> str | None:
    """A literal IPv6 address where only IPv4 works today; host names and IPv4 pass."""
    try:
        family = ipaddress.ip_interface(value).version
    except ValueError:
        return None
    return f"{key} = {value!r}: IPv6 is not supported ({why}); use an IPv4 address" if family == 6 else None


def _family_checks(cfg: Config) -> list[str]:
    found = [ipv6_problem(f"servers[{i}].address", s.address, "the heartbeat links are IPv4 UDP")
             for i, s in enumerate(cfg.servers)]
    found.append(ipv6_problem("vip.address", cfg.vip.address, "takeovers are announced and checked with ARP"))
    found += [ipv6_problem(f"alerts.managers[{i}].host", m.host, "alerts are sent over IPv4 UDP")
              for i, m in enumerate(cfg.alerts.managers)]
    return [p for p in found if p]


def file_problems(cfg: Config) -> list[str]:
    """The secret files the daemon reads at start, read the same way, each only where it is
    used: the site key, SNMP passphrases and community, the NUT passwords."""
    p: list[str] = []
    try:
        read_key(cfg.site.key_file)
    except ConfigError as exc:
        p += exc.problems
    secrets = [(f"alerts.managers[{i}].{key}", getattr(m, key), SNMP_SECRET_MIN)
               for i, m in enumerate(cfg.alerts.managers) if m.version == "v3"
               for key in ("auth_key_file", "priv_key_file")]
    if cfg.ups.password_file and any(s.ups for s in cfg.servers):
        secrets.append(("ups.password_file", cfg.ups.password_file, 0))
    if cfg.fence.ups_password_file:  # read with the action handlers at start
        secrets.append(("fence.ups_password_file", cfg.fence.ups_password_file, 0))
    if cfg.snmp.address and cfg.snmp.community_file:
        secrets.append(("snmp.community_file", cfg.snmp.community_file, SNMP_SECRET_MIN))
    if cfg.snmp.address and cfg.snmp.user:
        secrets += [(f"snmp.{key}", getattr(cfg.snmp, key), SNMP_SECRET_MIN)
                    for key in ("auth_key_file", "priv_key_file")]
    for key, path, least in secrets:
        try:
            read_secret(key, path, least)
        except ConfigError as exc:
            p += exc.problems
    return p


def _fence_level2_checks(cfg: Config) -> list[str]:
    """A level 2 fence needs the UPS it commands, a user allowed to, and a relay level before it."""
    p = []
    for i, s in enumerate(cfg.servers):
        if not s.fence_ups_command:
            continue
        if not s.ups:
            p.append(f"servers[{i}].fence_ups_command = {s.fence_ups_command!r}: needs servers[{i}].ups"
                     " (the UPS that feeds this server)")
        if cfg.policy.fencing is Fencing.NONE:
            p.append(f"servers[{i}].fence_ups_command = {s.fence_ups_command!r}: not used while"
                     " policy.fencing = 'none' (level 2 follows the relay)")
        if not (cfg.fence.ups_username and cfg.fence.ups_password_file):
            p.append(f"servers[{i}].fence_ups_command = {s.fence_ups_command!r}: needs fence.ups_username and"
                     " fence.ups_password_file (a NUT user allowed the instcmd)")
    t = cfg.timing
    if cfg.policy.fencing is Fencing.NONE and t.self_fence_wait <= t.dead_time:
        p.append(f"timing.self_fence_wait = {t.self_fence_wait}: must exceed timing.dead_time = {t.dead_time}"
                 " (policy.fencing = 'none': an isolated primary must have fenced itself first)")
    return p


def load(path: str | Path, base: Path | None = None) -> Config:
    """The config in ``path``, checked; relative file names in it are resolved against
    ``base``, by default the file's own folder (``arbiter-provision`` passes the folder the
    file will live in on the appliance)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc})"]) from exc
    return resolve_paths(parse(data), base or Path(path).absolute().parent)


def resolve_paths(obj: Any, base: Path) -> Any:
    """Relative file names (fields declared with ``path=True``) are read from the config
    file's folder, not from wherever the program was started: a site's config and its key
    travel together."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("path") and value and not Path(value).is_absolute():
            changes[f.name] = str(base / value)
        elif dataclasses.is_dataclass(value):
            changes[f.name] = resolve_paths(value, base)
        elif isinstance(value, (list, tuple)) and any(dataclasses.is_dataclass(v) for v in value):
            changes[f.name] = type(value)(resolve_paths(v, base) for v in value)
    return dataclasses.replace(obj, **changes)


def read_secret(key: str, path: str, least: int = 0) -> str:
    """A secret file's text, stripped; ConfigError naming the key if it cannot be read or is
    shorter than ``least`` characters."""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError([f"{key} = {path!r}: cannot read ({exc.strerror})"]) from exc
    if len(value) < least:
        raise ConfigError([f"{key} = {path!r}: passphrase is {len(value)} characters, minimum {least}"])
    return value


def read_key(path: str | Path, setting_name: str = "site.key_file") -> bytes:
    """A key file: its raw bytes, stripped of a trailing newline. ``setting_name`` is the
    config key that names the file, for the error message."""
    try:
        key = Path(path).read_bytes().rstrip(b"\n")
    except OSError as exc:
        raise ConfigError([f"{setting_name} = {str(path)!r}: cannot read ({exc.strerror})"]) from exc
    if len(key) < 16:
        raise ConfigError([f"{setting_name} = {str(path)!r}: key is {len(key)} bytes, minimum 16"])
    return key
