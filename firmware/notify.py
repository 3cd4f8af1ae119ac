"""The one notification path: every event goes through ``Notifier.notify`` and fans out to
the log, the alarm relay, the hook command and SNMP managers.

De-duplication and a global rate limit stand between the event and the sinks, so a flapping
link cannot send hundreds of traps or wear out the SD card with log lines. Sinks never raise
into ``notify``; slow ones (hook, SNMP) hand work to their own threads, so ``notify`` never
waits on a process or the network.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from firmware.config import Config
from firmware.errors import DamagedFile, StateError
from firmware.events import EVENTS, ONCE_PER_OPERATION, UNLIMITED, Severity, event_type
from firmware.state import DAMAGE, StateStore, write_atomic
from firmware.subproc import OutputOverflow, run_bounded

log = logging.getLogger("arbiter.alerts")

RATE_WINDOW_S = 60.0
SINK_ERROR_LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class Alert:
    seq: int
    event: str
    severity: Severity
    server: str
    channel: str
    text: str
    wall: float  # wall-clock timestamp, for display only

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "severity": int(self.severity)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        return cls(**{**data, "severity": Severity(data["severity"])})


class Sink(Protocol):
    def send(self, alert: Alert) -> None: ...


Key = tuple[str, str, str]  # event, server, channel


def counterparts(event: str) -> set[str]:
    """Events that end ``event`` or that ``event`` ends: either one resets the other's
    de-duplication, so down/up/down inside ``min_repeat_s`` still reports the second down."""
    own = set(event_type(event).clears)
    return own | {e.name for e in EVENTS.values() if event in e.clears}


def _same_place(key: Key, server: str, channel: str) -> bool:
    """Same server and channel; an alert without a channel concerns every channel."""
    return key[1] == server and (key[2] == channel or "" in (key[2], channel))


class SeqStore:
    """The alert sequence number, persisted so managers see it grow across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.last = int(path.read_text()) if path.exists() else 0
        except OSError as exc:
            raise StateError(f"{path}: cannot read the alert sequence ({exc})") from exc
        except ValueError as exc:
            raise DamagedFile(path, f"the alert sequence: {exc}") from exc

    def next(self) -> int:
        self.last += 1
        write_atomic(self.path, f"{self.last}\n")
        return self.last


class Throttle:
    """Lets one log line through per ``every`` seconds and counts what it held back."""

    def __init__(self, every: float, clock: Callable[[], float]) -> None:
        self.every = every
        self.clock = clock
        self.next_at: float | None = None
        self.held = 0

    def ready(self) -> int | None:
        """None while throttled, else how many lines were held back since the last one."""
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            self.held += 1
            return None
        self.next_at = now + self.every
        held, self.held = self.held, 0
        return held


class RateLimit:
    """At most ``per_minute`` alerts in any sliding minute; the rest are counted by event."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.sent: collections.deque[float] = collections.deque()
        self.dropped: collections.Counter[str] = collections.Counter()

    def _expire(self, now: float) -> None:
        while self.sent and now - self.sent[0] >= RATE_WINDOW_S:
            self.sent.popleft()

    def has_room(self) -> bool:
        self._expire(self.clock())
        return len(self.sent) < self.per_minute

    def admit(self, event: str, always: bool = False) -> bool:
        """``always``: counted in the window, never dropped (see events.UNLIMITED)."""
        if not always and not self.has_room():
            self.dropped[event] += 1
            return False
        self.sent.append(self.clock())
        return True

    def take_summary(self) -> str | None:
        """One line naming what was dropped since the last summary, or None."""
        if not self.dropped:
            return None
        total = sum(self.dropped.values())
        detail = ", ".join(f"{name} {n}" for name, n in self.dropped.most_common())
        self.dropped.clear()
        return (f"{total} alerts dropped by the rate limit (alerts.max_per_minute ="
                f" {self.per_minute}): {detail}")


class Notifier:
    def __init__(self, cfg: Config, sinks: list[Sink], state_dir: Path,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.sinks = list(sinks)
        self.clock = clock
        self.wall = wall
        self.seq = SeqStore(Path(state_dir) / "alert-seq")
        self.rate = RateLimit(cfg.alerts.max_per_minute, clock)
        self.last_sent: dict[Key, float] = {}
        self.sink_errors = {id(s): Throttle(SINK_ERROR_LOG_EVERY_S, clock) for s in self.sinks}
        self.lock = threading.Lock()
        self.sent: collections.Counter[str] = collections.Counter()  # admitted alerts by event, for metrics

    def notify(self, event: str, server: str = "", channel: str = "", text: str = "") -> Alert | None:
        """Returns the alert sent, or None if de-duplication or the rate limit held it back.

        Essential sinks (the alarm relay) also get what the rate limit holds back, with seq 0.
        """
        etype = event_type(event)
        with self.lock:
            self._log_drop_summary()
            now = self.clock()
            key = (event, server, channel)
            seen = self.last_sent.get(key)
            if seen is not None and now - seen < self.cfg.alerts.min_repeat_s and event not in ONCE_PER_OPERATION:
                return None
            self.last_sent[key] = now
            self._forget_counterparts(event, server, channel)
            admitted = self.rate.admit(event, always=event in UNLIMITED)
            seq = self.seq.next() if admitted else 0  # gaps in seq then mean lost alerts only
            if admitted:
                self.sent[event] += 1
            alert = Alert(seq, event, etype.severity, server, channel, text or etype.text, self.wall())
            for sink in self.sinks:
                if admitted or getattr(sink, "essential", False):
                    self._send(sink, alert)
            return alert if admitted else None

    def heartbeat(self, text: str) -> None:
        """The appliance-alive notification, to the sinks that carry one (SNMP): outside the
        de-duplication, the rate limit and the alarm, with the last alert's seq, so a
        manager that missed alerts sees the gap."""
        etype = event_type("heartbeat")
        alert = Alert(self.seq.last, etype.name, etype.severity, "", "", text, self.wall())
        for sink in self.sinks:
            beat = getattr(sink, "heartbeat", None)
            if beat is not None:
                try:
                    beat(alert)
                except Exception as exc:  # a broken sink must not stop the loop
                    log.error("heartbeat to %s failed: %s", type(sink).__name__, exc)

    def _forget_counterparts(self, event: str, server: str, channel: str) -> None:
        ends = counterparts(event)
        for key in [k for k in self.last_sent if k[0] in ends and _same_place(k, server, channel)]:
            del self.last_sent[key]

    def _log_drop_summary(self) -> None:
        if self.rate.has_room():
            summary = self.rate.take_summary()
            if summary:
                log.warning("%s", summary)

    def _send(self, sink: Sink, alert: Alert) -> None:
        try:
            sink.send(alert)
        except Exception as exc:  # a broken sink must not silence the others
            held = self.sink_errors[id(sink)].ready()
            if held is not None:
                more = f" ({held} more failures not logged)" if held else ""
                log.error("alert sink %s failed on #%d %s: %s%s", type(sink).__name__, alert.seq,
                          alert.event, exc, more)

    def _alarm(self) -> AlarmSink | None:
        return next((s for s in self.sinks if isinstance(s, AlarmSink)), None)

    def ack(self) -> None:
        alarm = self._alarm()
        if alarm is not None:
            alarm.ack()

    def alarm_state(self) -> tuple[str, bool]:
        alarm = self._alarm()
        return alarm.state() if alarm is not None else (Severity.CLEAR.name, False)

    def close(self) -> None:
        with self.lock:
            summary = self.rate.take_summary()
        if summary:
            log.warning("%s", summary)
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()


class LogSink:
    """One line per alert, at a log level that follows its severity."""

    LEVELS = {Severity.CLEAR: logging.INFO, Severity.INFO: logging.INFO,
              Severity.WARNING: logging.WARNING, Severity.MAJOR: logging.ERROR,
              Severity.CRITICAL: logging.CRITICAL}

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger

    def send(self, alert: Alert) -> None:
        where = "/".join(p for p in (alert.server, alert.channel) if p)
        self.logger.log(self.LEVELS[alert.severity], "#%d %s %s%s: %s", alert.seq,
                        alert.severity.name, alert.event, f" [{where}]" if where else "", alert.text)


class AlarmSink:
    """Drives the alarm relay: on while an unacknowledged alert of WARNING or worse is active.

    Essential: it sees alerts the rate limit keeps from the other sinks, so a storm can
    neither hide a critical alert from the relay nor leave a cleared one ringing. With a
    ``store`` the active alerts survive a restart: the lamp of a fault that is still there
    lights again when the appliance comes back.
    """

    essential = True

    def __init__(self, set_alarm: Callable[[bool], None], store: StateStore | None = None) -> None:
        self.set_alarm = set_alarm
        self.store = store
        saved = (store.load() if store is not None else None) or {}
        try:
            self.active: dict[Key, Severity] = {
                (str(e), str(s), str(c)): Severity(v) for e, s, c, v in saved.get("active", ()) if e in EVENTS}
        except DAMAGE as exc:
            raise DamagedFile(store.path if store else "alarm", f"active: {type(exc).__name__}: {exc}") from exc
        self.acked = saved.get("acked", False) is True
        self.relay: bool | None = None
        self.lock = threading.Lock()
        self._drive()

    def send(self, alert: Alert) -> None:
        with self.lock:
            before = (dict(self.active), self.acked)
            ends = set(event_type(alert.event).clears)
            for key in [k for k in self.active if k[0] in ends and _same_place(k, alert.server, alert.channel)]:
                del self.active[key]
            if alert.severity >= Severity.WARNING:
                self.active[(alert.event, alert.server, alert.channel)] = alert.severity
                self.acked = False
            self._drive()
            if (self.active, self.acked) != before:  # an SD card: write on changes only
                self._save()

    def ack(self) -> None:
        with self.lock:
            self.acked = True
            self._drive()
            self._save()

    def _save(self) -> None:
        if self.store is not None:
            self.store.save({"active": [[*k, int(v)] for k, v in self.active.items()], "acked": self.acked})

    def state(self) -> tuple[str, bool]:
        with self.lock:
            top = max(self.active.values(), default=Severity.CLEAR)
            return top.name, self.acked and bool(self.active)

    def _drive(self) -> None:
        on = bool(self.active) and not self.acked
        if on != self.relay:
            self.set_alarm(on)
            self.relay = on


class HookSink:
    """Runs the site's hook command per alert on a worker thread, with a timeout.

    The queue is bounded: a hook that hangs on every call loses alerts (counted in the log)
    instead of piling up threads or memory.
    """

    QUEUE = 100

    def __init__(self, command: list[str], timeout: float = 10.0, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.timeout = timeout
        self.env = env or {}
        self.queue: queue.Queue[Alert | None] = queue.Queue(self.QUEUE)
        self.thread = threading.Thread(target=self._run, name="alert-hook", daemon=True)
        self.thread.start()

    def send(self, alert: Alert) -> None:
        try:
            self.queue.put_nowait(alert)
        except queue.Full:
            raise RuntimeError(f"hook queue full ({self.QUEUE}); {self.command[0]} too slow") from None

    def _run(self) -> None:
        while (alert := self.queue.get()) is not None:
            self._run_one(alert)

    def _run_one(self, alert: Alert) -> None:
        try:
            done = run_bounded(self.command, self.timeout, {**self.env, **hook_env(alert)})
        except subprocess.TimeoutExpired:
            log.error("alerts.hook %s: killed after %gs on #%d %s", self.command[0], self.timeout,
                      alert.seq, alert.event)
            return
        except OutputOverflow as exc:
            log.error("alerts.hook %s: killed on #%d %s: %s", self.command[0], alert.seq, alert.event, exc)
            return
        except OSError as exc:
            log.error("alerts.hook %s: cannot run (%s)", self.command[0], exc.strerror)
            return
        if done.returncode != 0:
            log.error("alerts.hook %s: exit %d on #%d %s: %s", self.command[0], done.returncode,
                      alert.seq, alert.event, done.stderr.strip()[-200:])

    def close(self, timeout: float = 2.0) -> None:
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)


def hook_env(alert: Alert) -> dict[str, str]:
    return {"ARBITER_EVENT": alert.event, "ARBITER_SEVERITY": alert.severity.name,
            "ARBITER_SERVER": alert.server, "ARBITER_CHANNEL": alert.channel,
            "ARBITER_TEXT": alert.text, "ARBITER_SEQ": str(alert.seq),
            "ARBITER_EVENT_NUMBER": str(event_type(alert.event).number)}


class Journal(Protocol):
    def append(self, record: dict[str, Any]) -> None: ...


class JournalSink:
    """Feeds the appliance's event journal (``arbiterctl events``)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def send(self, alert: Alert) -> None:
        self.journal.append({"kind": "alert", **alert.to_dict(), "severity": alert.severity.name})
