"""SNMP polling: the MIB's status objects (arbStatus) answered to GET, GETNEXT and GETBULK by a
pysnmp command responder, read-only, off unless ``snmp.address`` is set.

Why not a subagent of net-snmp's snmpd over AgentX, as keepalived does: pysnmp 7 has no
AgentX side (only the classic manager and agent roles), and the Python AgentX packages are
unmaintained single-author code; a responder of our own needs no second daemon on the
appliance and uses the SNMP engine the traps already use. Access: a v2c community read
from a file, and/or one v3 user at authPriv only (SHA-2 and AES-256 by default), both
limited by VACM to the arbStatus subtree.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import threading
from collections.abc import Callable
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.entity import config as snmp_config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto import rfc1902
from pysnmp.proto.api import v2c
from pysnmp.smi import instrum

from firmware.config import SnmpAgent
from firmware.errors import ArbiterError
from firmware.events import Severity
from firmware.mib import (GAUGE_MAX, LINK_STATES, PHASES, ROLES, SERVER_COLUMNS, SERVER_TABLE_ARC,
                          STATUS_SCALARS, status_oid)
from firmware.model import Channel
from firmware.snmp import AUTH_PROTOCOLS, PRIV_PROTOCOLS, secret
from firmware.status import StatusView

log = logging.getLogger("arbiter.snmp")

Oid = tuple[int, ...]
_TRUE, _FALSE, _UNKNOWN = 1, 2, 3


def status_values(view: StatusView, enterprise_oid: str) -> list[tuple[Oid, Any]]:
    """Every status object instance with its value, in OID order."""
    base = tuple(int(x) for x in status_oid(enterprise_oid).split("."))
    st = view.state
    scalars = {"arbPhase": rfc1902.Integer32(PHASES.index(st.phase.value) + 1),
               "arbPhaseSeconds": rfc1902.Unsigned32(min(GAUGE_MAX, max(0, int(view.now - st.since)))),
               "arbPrimary": rfc1902.OctetString(st.primary or ""),
               "arbFailovers": rfc1902.Counter32(st.failovers % 2**32),
               "arbAlarmSeverity": rfc1902.Integer32(int(Severity[view.alarm[0]])),
               "arbMaintenance": rfc1902.Integer32(_TRUE if st.maintenance else _FALSE)}
    out = [(base + (num, 0), scalars[name]) for name, num, _, _ in STATUS_SCALARS]
    servers = view.obs.servers if view.obs else ()
    table = base + (SERVER_TABLE_ARC, 1)
    for name, num, _, _ in SERVER_COLUMNS:
        for index, srv in enumerate(servers, start=1):
            out.append((table + (num, index), _column(name, srv, st.fenced)))
    return sorted(out)


def _column(name: str, srv: Any, fenced: tuple[str, ...]) -> Any:
    r = srv.report
    if name == "arbServerName":
        return rfc1902.OctetString(srv.name)
    if name == "arbServerRole":
        return rfc1902.Integer32(ROLES.index(r.role.value) + 1 if r else ROLES.index("unknown") + 1)
    if name == "arbServerAlive":
        return rfc1902.Integer32(_tri(srv.alive))
    if name == "arbServerFenced":
        return rfc1902.Integer32(_TRUE if srv.name in fenced else _FALSE)
    if name in ("arbServerSerialLink", "arbServerLanLink"):
        link = srv.link(Channel.SERIAL if name == "arbServerSerialLink" else Channel.LAN)
        return rfc1902.Integer32(LINK_STATES.index(link.state.value if link else "absent") + 1)
    if name == "arbServerInSync":
        return rfc1902.Integer32(_tri(r.repl.in_sync if r else None))
    if name == "arbServerLagBytes":
        lag = r.repl.lag_bytes if r and r.repl.lag_bytes is not None else 0
        return rfc1902.Gauge32(min(GAUGE_MAX, max(0, lag)))
    raise KeyError(name)


def _tri(value: bool | None) -> int:
    return _UNKNOWN if value is None else (_TRUE if value else _FALSE)


class _StatusInstrum(instrum.AbstractMibInstrumController):
    """Answers from a fresh snapshot of the view per request; VACM decides who sees what."""

    def __init__(self, values: Callable[[], list[tuple[Oid, Any]]]) -> None:
        self.values = values

    def read_variables(self, *var_binds: Any, **ctx: Any) -> list[tuple[Any, Any]]:
        table = dict(self.values())
        out = []
        for i, (oid, _) in enumerate(var_binds):
            value = table.get(tuple(oid))
            if value is None or self._denied(ctx, i, oid, value):
                value = v2c.NoSuchObject()
            out.append((oid, value))
        return out

    def read_next_variables(self, *var_binds: Any, **ctx: Any) -> list[tuple[Any, Any]]:
        rows = self.values()
        oids = [o for o, _ in rows]
        out = []
        for i, (oid, _) in enumerate(var_binds):
            at = bisect.bisect_right(oids, tuple(oid))
            while at < len(rows) and self._denied(ctx, i, rows[at][0], rows[at][1]):
                at += 1
            out.append((v2c.ObjectIdentifier(rows[at][0]), rows[at][1]) if at < len(rows)
                       else (oid, v2c.EndOfMibView()))
        return out

    @staticmethod
    def _denied(ctx: dict[str, Any], idx: int, oid: Any, value: Any) -> bool:
        """VACM: raises AuthorizationError for a principal with no access; True if not in view."""
        return bool(ctx["acFun"]("read", (v2c.ObjectIdentifier(oid), value), idx=idx, **ctx))

    def write_variables(self, *var_binds: Any, **ctx: Any) -> list[tuple[Any, Any]]:
        raise ArbiterError("read-only")


class SnmpResponder:
    def __init__(self, cfg: SnmpAgent, enterprise_oid: str, view: Callable[[], StatusView],
                 engine_id: bytes) -> None:
        self.cfg = cfg
        self.values = lambda: status_values(view(), enterprise_oid)
        self.subtree = tuple(int(x) for x in status_oid(enterprise_oid).split("."))
        self.engine_id = engine_id
        self.community = secret("snmp.community_file", cfg.community_file) if cfg.community_file else ""
        self.keys = (secret("snmp.auth_key_file", cfg.auth_key_file),
                     secret("snmp.priv_key_file", cfg.priv_key_file)) if cfg.user else None
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="snmp-agent", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10.0)
        if self.error is not None:
            raise ArbiterError(f"snmp.address = {self.cfg.address!r}, snmp.port = {self.cfg.port}: "
                               f"cannot answer ({self.error})")
        log.info("SNMP status objects on udp %s:%d (%s)", self.cfg.address, self.cfg.port,
                 ", ".join(x for x in ("v2c" if self.community else "", f"v3 user {self.cfg.user}"
                                       if self.cfg.user else "") if x))

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.engine = self._engine()
        except Exception as exc:  # reported by start() to the daemon, which refuses to run
            self.error = exc
            self.ready.set()
            return
        self.loop.call_soon(self.ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def _engine(self) -> SnmpEngine:
        engine = SnmpEngine(snmpEngineID=v2c.OctetString(self.engine_id))
        transport = udp6 if ":" in self.cfg.address else udp
        snmp_config.add_transport(engine, transport.DOMAIN_NAME,
                                  transport.UdpAsyncioTransport().open_server_mode((self.cfg.address, self.cfg.port)))
        if self.community:
            snmp_config.add_v1_system(engine, "arbiter-ro", self.community)
            snmp_config.add_vacm_user(engine, 2, "arbiter-ro", "noAuthNoPriv", readSubTree=self.subtree)
        if self.keys is not None:
            snmp_config.add_v3_user(engine, self.cfg.user, AUTH_PROTOCOLS[self.cfg.auth_protocol], self.keys[0],
                                    PRIV_PROTOCOLS[self.cfg.priv_protocol], self.keys[1])
            snmp_config.add_vacm_user(engine, 3, self.cfg.user, "authPriv", readSubTree=self.subtree)
        ctx = context.SnmpContext(engine)
        ctx.unregister_context_name(b"")
        ctx.register_context_name(b"", _StatusInstrum(self.values))
        for responder in (cmdrsp.GetCommandResponder, cmdrsp.NextCommandResponder, cmdrsp.BulkCommandResponder):
            responder(engine, ctx)
        engine.transport_dispatcher.job_started(1)
        return engine

    def close(self, timeout: float = 2.0) -> None:
        if not self.thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self._stop)
        self.thread.join(timeout)

    def _stop(self) -> None:
        self.engine.transport_dispatcher.job_finished(1)
        self.engine.close_dispatcher()
        self.loop.stop()
