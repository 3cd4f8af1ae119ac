"""The HIL rig's window onto the appliance's mock GPIO pins.

The daemon runs as its own process inside a network namespace, so the rig sees its pins
through a directory: outputs are written to DIR/out/<pin> ("1" active), inputs are read
from DIR/in/<pin> ("1" high) and drive the mock pins. Files are replaced atomically, so the
in/ directory's mtime flags a change and the watcher reads nothing while nothing changes.
The mtime moves with the kernel's coarse clock: two changes inside one tick leave the same
mtime, so the inputs are read again until the last change is older than SETTLE_NS.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.errors import HardwareError
from firmware.state import write_atomic
from firmware.waiting import wait_until

if TYPE_CHECKING:
    from board.gpio import Board

SETTLE_NS = 50_000_000
TID_FILE = "bridge.tid"  # the watcher thread's kernel thread id, to tell its CPU time from the daemon's


class HilBridge:
    """The daemon's side: publishes outputs, drives inputs from the files."""

    def __init__(self, board: Board, root: Path) -> None:
        self._board = board
        self._root = root
        self._out = root / "out"
        self._in = root / "in"
        self._out.mkdir(parents=True, exist_ok=True)
        self._in.mkdir(parents=True, exist_ok=True)
        self._written: dict[str, bool] = {}
        self._seen_mtime = -1
        self._settled = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.publish()
        self._read_inputs()
        self._thread = threading.Thread(target=self._watch, name="hil-bridge", daemon=True)
        self._thread.start()
        board.watch(self.publish)

    def publish(self) -> None:
        with self._lock:
            for name, value in self._board.outputs().items():
                if self._written.get(name) != value:
                    write_atomic(self._out / name, "1" if value else "0", durable=False)
                    self._written[name] = value

    def _read_inputs(self) -> None:
        mtime = os.stat(self._in).st_mtime_ns
        if mtime == self._seen_mtime and self._settled:
            return
        self._seen_mtime = mtime
        self._settled = time.time_ns() - mtime > SETTLE_NS
        for path in self._in.iterdir():
            if path.name.startswith("."):
                continue
            pin = self._board.factory.pin(self._board.pin_number(path.name))
            pin.drive_high() if path.read_text().strip() == "1" else pin.drive_low()

    def _watch(self) -> None:
        # the rig's own cost, not the appliance's: the bench subtracts this thread's CPU time
        write_atomic(self._root / TID_FILE, str(threading.get_native_id()), durable=False)
        while not self._stop.wait(0.002):
            try:
                self._read_inputs()
            except (OSError, KeyError, HardwareError):
                continue

    def close(self) -> None:
        self._stop.set()


class HilGpio:
    """The rig's side of the bridge."""

    def __init__(self, root: Path) -> None:
        self._out = Path(root) / "out"
        self._in = Path(root) / "in"
        self._in.mkdir(parents=True, exist_ok=True)

    def output(self, pin: str) -> bool:
        try:
            return (self._out / pin).read_text().strip() == "1"
        except FileNotFoundError:
            return False

    def wait_output(self, pin: str, value: bool, timeout: float) -> bool:
        return wait_until(lambda: self.output(pin) == value, timeout, 0.002)

    def set_input(self, pin: str, value: bool) -> None:
        write_atomic(self._in / pin, "1" if value else "0", durable=False)

    def bridge_thread(self) -> int | None:
        """The daemon's bridge thread (a task of the daemon process), once it runs."""
        try:
            return int((self._out.parent / TID_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
