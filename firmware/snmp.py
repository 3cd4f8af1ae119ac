"""SNMP sink: SNMPv2c/v3 traps and informs to the managers in ``alerts.managers``.

pysnmp runs on its own thread with its own asyncio loop, so ``send`` only queues. Traps are
fire-and-forget. Informs go through a persistent outbox per manager (append-only JSON lines,
fsync'd, plus a delivered marker): an alert leaves it only once the manager has answered,
in order, so a manager that is down, or an appliance that restarts meanwhile, loses none
and gets none twice.

For SNMPv3 traps the appliance is the authoritative engine: the manager needs its engine id
(``engine_id``, logged at start-up) in its ``createUser -e`` line. Engine boots are
persisted, so managers accept the appliance's messages after a restart.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysnmp.entity.engine import SnmpEngine
from pysnmp.hlapi.v3arch.asyncio import (CommunityData, ContextData, UdpTransportTarget, UsmUserData,
                                         send_notification, usmAesBlumenthalCfb192Protocol,
                                         usmAesBlumenthalCfb256Protocol, usmAesCfb128Protocol,
                                         usmHMAC128SHA224AuthProtocol, usmHMAC192SHA256AuthProtocol,
                                         usmHMAC256SHA384AuthProtocol, usmHMAC384SHA512AuthProtocol,
                                         usmHMACSHAAuthProtocol)
from pysnmp.proto.rfc1902 import Integer32, ObjectIdentifier, OctetString, TimeTicks, Unsigned32

from firmware.config import SNMP_SECRET_MIN, Config, SnmpManager, read_secret
from firmware.errors import DamagedFile, StateError
from firmware.events import event_type
from firmware.mib import notification_oid, object_oid
from firmware.notify import Alert, Throttle
from firmware.state import DAMAGE, write_atomic

log = logging.getLogger("arbiter.snmp")

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
TEXT_MAX = 255  # DisplayString
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0

# Config names -> pysnmp's protocols. AES-192/256 with the key extension of the Blumenthal
# draft: what net-snmp's AES-192/AES-256 (5.8 and later) use (its -C variants are Reeder's).
AUTH_PROTOCOLS = {"sha": usmHMACSHAAuthProtocol, "sha224": usmHMAC128SHA224AuthProtocol,
                  "sha256": usmHMAC192SHA256AuthProtocol, "sha384": usmHMAC256SHA384AuthProtocol,
                  "sha512": usmHMAC384SHA512AuthProtocol}
PRIV_PROTOCOLS = {"aes": usmAesCfb128Protocol, "aes192": usmAesBlumenthalCfb192Protocol,
                  "aes256": usmAesBlumenthalCfb256Protocol}


def engine_id(cfg: Config, role: str = "") -> bytes:
    """RFC 3411 text format: enterprise number with the high bit set, 4, then the site's
    name and the appliance's node id, so it is stable across restarts and re-flashes.
    ``role`` tells the status responder's engine from the notifying one: a manager keeps
    boots and time per engine id, and the two engines count them apart."""
    pen = int(cfg.alerts.enterprise_oid.rsplit(".", 1)[1])
    text = (f"{cfg.site.name}.{cfg.site.node_id}"[:27 - len(role)] + role).encode()[:27]
    return (0x80000000 | pen).to_bytes(4, "big") + b"\x04" + text


class Outbox:
    """Alerts one inform manager has not acknowledged yet, oldest first, on disk.

    ``<name>.jsonl`` only grows (one fsync'd line per alert); ``<name>.delivered`` holds
    the seq of the last acknowledged alert and is replaced atomically. Once everything is
    delivered the log is emptied, so it stays small while managers answer.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.marker = path.with_suffix(".delivered")
        self.lock = threading.Lock()
        self.delivered = self._read_marker()
        self.pending: list[dict[str, Any]] = [a for a in self._read_log() if a["seq"] > self.delivered]

    def _read_marker(self) -> int:
        try:
            return int(self.marker.read_text()) if self.marker.exists() else 0
        except OSError as exc:
            raise StateError(f"{self.marker}: cannot read the outbox marker ({exc})") from exc
        except ValueError as exc:
            raise DamagedFile(self.marker, f"the outbox marker: {exc}") from exc

    def _read_log(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        whole = data[:data.rfind(b"\n") + 1]
        if len(whole) != len(data):  # a line torn by a power cut: never acknowledged, drop it
            log.warning("%s: dropping a torn last line (%d bytes)", self.path, len(data) - len(whole))
            with open(self.path, "r+b") as f:
                f.truncate(len(whole))
                os.fsync(f.fileno())
        try:
            alerts = [json.loads(line) for line in whole.splitlines() if line.strip()]
            for a in alerts:
                if not isinstance(a, dict) or not isinstance(a["seq"], int):
                    raise TypeError(f"not an alert with a seq: {a!r:.60}")
        except DAMAGE as exc:
            raise DamagedFile(self.path, f"{type(exc).__name__}: {exc}") from exc
        return alerts

    def append(self, alert: dict[str, Any]) -> None:
        line = (json.dumps(alert, sort_keys=True) + "\n").encode()
        with self.lock:
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.pending.append(alert)

    def first(self) -> dict[str, Any] | None:
        with self.lock:
            return self.pending[0] if self.pending else None

    def mark_delivered(self, seq: int) -> None:
        with self.lock:
            write_atomic(self.marker, f"{seq}\n")
            self.delivered = seq
            self.pending = [a for a in self.pending if a["seq"] > seq]
            if not self.pending:
                with open(self.path, "wb") as f:
                    os.fsync(f.fileno())

    def __len__(self) -> int:
        with self.lock:
            return len(self.pending)


def secret(key: str, path: str) -> str:
    """An SNMP passphrase or community from its file: net-snmp wants 8 characters at least."""
    return read_secret(key, path, SNMP_SECRET_MIN)


def _auth(m: SnmpManager, i: int) -> CommunityData | UsmUserData:
    if m.version == "v2c":
        return CommunityData(m.community, mpModel=1)
    return UsmUserData(m.user, authKey=secret(f"alerts.managers[{i}].auth_key_file", m.auth_key_file),
                       privKey=secret(f"alerts.managers[{i}].priv_key_file", m.priv_key_file),
                       authProtocol=AUTH_PROTOCOLS[m.auth_protocol], privProtocol=PRIV_PROTOCOLS[m.priv_protocol])


def _file_name(m: SnmpManager) -> str:
    return "outbox-" + re.sub(r"[^A-Za-z0-9.-]", "_", f"{m.host}-{m.port}")


class _Manager:
    def __init__(self, m: SnmpManager, auth: CommunityData | UsmUserData, outbox: Outbox | None) -> None:
        self.cfg = m
        self.auth = auth
        self.outbox = outbox  # informs only
        self.name = f"{m.host}:{m.port}"
        self.traps: asyncio.Queue[dict[str, Any]] | None = None
        self.wake: asyncio.Event | None = None


class SnmpSink:
    def __init__(self, cfg: Config, state_dir: Path, clock: Callable[[], float] = time.monotonic,
                 backoff_max: float = BACKOFF_MAX_S) -> None:
        self.cfg = cfg
        self.alerts = cfg.alerts
        self.clock = clock
        self.started = clock()
        self.backoff_max = backoff_max
        self.engine_id = engine_id(cfg)
        self.boots = self._next_boots(Path(state_dir) / "snmp-engine-boots")
        self.managers = [_Manager(m, _auth(m, i), Outbox(Path(state_dir) / (_file_name(m) + ".jsonl"))
                                  if m.notify == "inform" else None)
                         for i, m in enumerate(cfg.alerts.managers)]
        self.errors = {mgr.name: Throttle(BACKOFF_MAX_S, clock) for mgr in self.managers}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self._sending = 0  # deliveries in flight, on the loop's thread
        self.thread = threading.Thread(target=self._run, name="snmp", daemon=True)
        self.thread.start()
        self.ready.wait(10.0)
        log.info("SNMP engine id 0x%s, boots %d; %d managers", self.engine_id.hex(), self.boots,
                 len(self.managers))

    @staticmethod
    def _next_boots(path: Path) -> int:
        try:
            boots = int(path.read_text()) + 1 if path.exists() else 1
        except OSError as exc:
            raise StateError(f"{path}: cannot read the SNMP engine boots ({exc})") from exc
        except ValueError as exc:
            raise DamagedFile(path, f"the SNMP engine boots: {exc}") from exc
        write_atomic(path, f"{boots}\n")
        return boots

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.engine = SnmpEngine(snmpEngineID=OctetString(self.engine_id))
        (boots,) = self.engine.get_mib_builder().import_symbols("__SNMP-FRAMEWORK-MIB", "snmpEngineBoots")
        boots.syntax = boots.syntax.clone(self.boots)
        for mgr in self.managers:
            if mgr.outbox is None:
                mgr.traps = asyncio.Queue()
                self.tasks.append(self.loop.create_task(self._trap_worker(mgr)))
            else:
                mgr.wake = asyncio.Event()
                mgr.wake.set()  # deliver what a previous run left in the outbox
                self.tasks.append(self.loop.create_task(self._inform_worker(mgr)))
        self.loop.call_soon(self.ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def send(self, alert: Alert) -> None:
        """Queues the alert: fsync'd into each inform manager's outbox, then the loop sends."""
        data = alert.to_dict()
        for mgr in self.managers:
            if mgr.outbox is not None:
                mgr.outbox.append(data)
        self.loop.call_soon_threadsafe(self._dispatch, data)

    def heartbeat(self, alert: Alert) -> None:
        """The periodic alive notification: to every manager once, never through an outbox
        (a missed heartbeat is the message; a queued one would be a false one)."""
        data = alert.to_dict()
        self.loop.call_soon_threadsafe(self._beat, data)

    def _beat(self, data: dict[str, Any]) -> None:
        for mgr in self.managers:
            self.tasks.append(self.loop.create_task(self._deliver(mgr, data, mgr.cfg.notify)))
        self.tasks = [t for t in self.tasks if not t.done()]

    def _dispatch(self, data: dict[str, Any]) -> None:
        for mgr in self.managers:
            if mgr.traps is not None:
                mgr.traps.put_nowait(data)
            elif mgr.wake is not None:
                mgr.wake.set()

    async def _trap_worker(self, mgr: _Manager) -> None:
        assert mgr.traps is not None
        while True:
            data = await mgr.traps.get()
            await self._deliver(mgr, data, "trap")

    async def _inform_worker(self, mgr: _Manager) -> None:
        assert mgr.wake is not None and mgr.outbox is not None
        backoff = BACKOFF_START_S
        while True:
            await mgr.wake.wait()
            mgr.wake.clear()
            while (data := mgr.outbox.first()) is not None:
                if await self._deliver(mgr, data, "inform"):
                    mgr.outbox.mark_delivered(data["seq"])
                    backoff = BACKOFF_START_S
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)

    async def _deliver(self, mgr: _Manager, data: dict[str, Any], kind: str) -> bool:
        """One trap or one inform (with its retries); True once the manager has it.

        The dispatcher's timer (it times out informs) runs only while something is in
        flight: pysnmp starts it with the first transport and then ticks ten times a second
        for ever."""
        self._sending += 1
        self._timer(run=True)
        try:
            target = await UdpTransportTarget.create((mgr.cfg.host, mgr.cfg.port),
                                                     timeout=self.alerts.inform_timeout,
                                                     retries=self.alerts.inform_retries)
            error, status, _, _ = await send_notification(self.engine, mgr.auth, target, ContextData(),
                                                          kind, *self._varbinds(data), lookupMib=False)
        except Exception as exc:  # pysnmp raises broadly (resolution, socket, encoding)
            error, status = exc, 0
        finally:
            self._sending -= 1
            if not self._sending:
                self._timer(run=False)
        if error or status:
            self._log_failure(mgr, data, kind, f"{error or status}")
            return False
        return True

    def _timer(self, run: bool) -> None:
        """Start or stop the dispatcher's timer as pysnmp's asyncio dispatcher itself does
        (its ``loopingcall`` running ``handle_timeout``); before the first delivery there is
        no dispatcher, and registering the first transport starts the timer."""
        dispatcher = self.engine.transport_dispatcher
        if dispatcher is None:
            return
        if run and dispatcher.loopingcall is None:
            dispatcher.loopingcall = asyncio.ensure_future(dispatcher.handle_timeout(), loop=self.loop)
        elif not run and dispatcher.loopingcall is not None:
            dispatcher.loopingcall.cancel()
            dispatcher.loopingcall = None

    def _log_failure(self, mgr: _Manager, data: dict[str, Any], kind: str, why: str) -> None:
        held = self.errors[mgr.name].ready()
        if held is not None:
            queued = f"; {len(mgr.outbox)} queued in the outbox" if mgr.outbox is not None else ""
            log.warning("SNMP %s #%d %s to %s not delivered: %s%s%s", kind, data["seq"], data["event"],
                        mgr.name, why, queued, f" ({held} more failures not logged)" if held else "")

    def _varbinds(self, data: dict[str, Any]) -> list[tuple[str, Any]]:
        ent = self.alerts.enterprise_oid
        uptime = int((self.clock() - self.started) * 100) % 2**32
        return [
            (SYS_UPTIME, TimeTicks(uptime)),
            (SNMP_TRAP_OID, ObjectIdentifier(notification_oid(ent, event_type(data["event"])))),
            (object_oid(ent, "arbEventSeq"), Unsigned32(data["seq"] % 2**32)),
            (object_oid(ent, "arbEventSeverity"), Integer32(data["severity"])),
            (object_oid(ent, "arbEventServer"), OctetString(data["server"][:64])),
            (object_oid(ent, "arbEventChannel"), OctetString(data["channel"][:64])),
            (object_oid(ent, "arbEventText"), OctetString(data["text"].encode()[:TEXT_MAX])),
        ]

    def pending(self) -> dict[str, int]:
        """Alerts waiting in each inform manager's outbox, for status and tests."""
        return {m.name: len(m.outbox) for m in self.managers if m.outbox is not None}

    def close(self, timeout: float = 2.0) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop)
        self.thread.join(timeout)

    async def _stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.engine.close_dispatcher()
        await asyncio.sleep(0)  # let the dispatcher's timer task see its cancellation
        self.loop.stop()
