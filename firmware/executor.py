"""Carries out decide's actions: hardware and agent commands, with timeouts.

The acting actions of one decision run in order on a worker thread, so a slow promote never
stalls the loop; the first failure skips the rest of that batch. Each outcome becomes an
ActionResult that the next cycle's observations carry back to decide, and the loop is woken
at once so the next step follows without waiting for a tick. Those threads run at the
site's real-time priority, as the loop does: a failover's steps are on them.

Reporting actions (Notify, SetStatus) run in order on one reporter thread. On the caller's
(the loop's) thread, each alert's two atomic writes (its sequence number and the alarm
state, each with its fsyncs) held the loop for 3 to 47 ms on the loaded rig, right after
the fence had been confirmed: the promote waited for them. Those not yet carried out are
``unsent()``, for the daemon to save with its next decision. The reporter runs at the same
real-time priority: a normal thread holding the interpreter lock while a busy machine ran
something else would hold up the loop and the failover's steps with it.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from firmware.errors import ArbiterError
from firmware.model import REPORTING, Action, ActionResult
from firmware.realtime import NORMAL, Realtime, Workers

log = logging.getLogger("arbiter.executor")

Handler = Callable[[Action], str]


@dataclass(frozen=True)
class Running:
    action: Action
    started: float


class Executor:
    def __init__(self, handlers: Mapping[type, Handler], wake: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, realtime: Realtime = NORMAL) -> None:
        self._handlers = dict(handlers)
        self._wake = wake
        self._clock = clock
        self._realtime = realtime
        self._lock = threading.Lock()
        self._results: list[ActionResult] = []
        self._running: dict[str, Running] = {}
        self._workers = Workers(realtime, "exec")
        self._reports: queue.Queue[Action] = queue.Queue()
        self._reports_idle = threading.Condition()
        self._unsent: list[Action] = []  # reporting actions submitted and not yet carried out
        threading.Thread(target=self._report_loop, daemon=True, name="exec-reports").start()

    def submit(self, actions: Iterable[Action]) -> None:
        """The acting batch starts first: an alert must never delay a fence."""
        actions = list(actions)
        batch = [a for a in actions if not isinstance(a, REPORTING)]
        if batch:
            self._workers.run(lambda: self._run_batch(batch))
        for action in actions:
            if isinstance(action, REPORTING):
                with self._reports_idle:
                    self._unsent.append(action)
                self._reports.put(action)

    def unsent(self) -> tuple[Action, ...]:
        """Reporting actions not yet carried out, oldest first: the daemon saves their alerts
        with its next decision, so that a restart sends them again (see daemon.with_unsent)."""
        with self._reports_idle:
            return tuple(self._unsent)

    def results(self) -> tuple[ActionResult, ...]:
        """The outcomes since the last call (each reported once)."""
        with self._lock:
            out, self._results = tuple(self._results), []
        return out

    def replace_handlers(self, handlers: dict[type, Handler]) -> None:
        """After a reload: actions submitted from now on use these; running ones finish as begun."""
        self._handlers = dict(handlers)

    def running(self) -> list[tuple[Action, float]]:
        """Actions under way with their elapsed seconds, for progress lines and status."""
        now = self._clock()
        with self._lock:
            return [(r.action, now - r.started) for r in self._running.values()]

    def join(self, timeout: float = 5.0) -> None:
        """Waits for the running batches and for every reporting action submitted so far."""
        self._workers.join(timeout)
        with self._reports_idle:
            self._reports_idle.wait_for(lambda: not self._unsent, timeout)

    def _report_loop(self) -> None:
        self._realtime.enter()
        while True:
            action = self._reports.get()
            try:
                self._run(action)
            finally:
                with self._reports_idle:
                    self._unsent.remove(action)
                    self._reports_idle.notify_all()

    def _run_batch(self, batch: list[Action]) -> None:
        for i, action in enumerate(batch):
            if not self._run(action):
                for skipped in batch[i + 1:]:
                    self._record(ActionResult(skipped.id, False, f"skipped: {action.id} failed"))
                break
        self._wake()

    def _run(self, action: Action) -> bool:
        handler = self._handlers.get(type(action))
        if handler is None:
            self._record(ActionResult(action.id, False, f"no handler for {type(action).__name__}"))
            return False
        with self._lock:
            self._running[action.id] = Running(action, self._clock())
        code = ""
        try:
            detail = handler(action)
            ok = True
        except ArbiterError as exc:
            ok, detail, code = False, str(exc), getattr(exc, "code", "")
            log.error("%s failed: %s", action.id, exc)
        except Exception as exc:  # a bug in a handler must still end the phase
            ok, detail = False, f"internal error: {exc!r}"
            log.exception("%s crashed", action.id)
        finally:
            with self._lock:
                self._running.pop(action.id, None)
        if not isinstance(action, REPORTING):
            self._record(ActionResult(action.id, ok, detail or "", code))
            log.info("%s %s%s", action.id, "done" if ok else "FAILED", f": {detail}" if detail else "")
        return ok

    def _record(self, result: ActionResult) -> None:
        with self._lock:
            self._results.append(result)

