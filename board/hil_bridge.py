"""The HIL rig's window onto the appliance's GPIO: gpiozero mock pins behind a file bridge.

The daemon runs as its own process inside a network namespace, so the rig sees its pins
through a directory. ``HilFactory`` is a gpiozero MockFactory whose pins (``BridgedPin``)
write each output level to DIR/out/<pin> ("1" high) as it changes, and whose watcher drives
input pins from DIR/in/<pin> ("1" high). The board code gets it as its pin factory and knows
nothing of the rig; tests read the pins' own history (``MockPin.states``).

Files are replaced atomically, so the in/ directory's mtime flags a change and the watcher
reads nothing while nothing changes. The mtime moves with the kernel's coarse clock: two
changes inside one tick leave the same mtime, so the inputs are read again until the last
change is older than SETTLE_NS.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

from firmware.state import write_atomic
from firmware.waiting import wait_until

SETTLE_NS = 50_000_000
TID_FILE = "bridge.tid"  # the watcher thread's kernel thread id, to tell its CPU time from the daemon's


class BridgedPin(MockPin):
    """A mock pin that shows its level to the rig whenever it is an output: at once when it
    becomes one (a file left by an earlier run is overwritten), then on every change."""

    factory: HilFactory

    def _set_function(self, value: str) -> None:
        super()._set_function(value)
        if value == "output":
            self.factory.publish(self)

    def _change_state(self, value: bool) -> bool:
        changed = super()._change_state(value)
        if changed and self._function == "output":
            self.factory.publish(self)
        return changed


class HilFactory(MockFactory):
    """Mock pins bridged to the rig through ``root``; ``pins`` names them (the board's pin map)."""

    def __init__(self, root: Path, pins: Mapping[str, int]) -> None:
        super().__init__(pin_class=BridgedPin)
        self._root = root
        self._out = root / "out"
        self._in = root / "in"
        self._out.mkdir(parents=True, exist_ok=True)
        self._in.mkdir(parents=True, exist_ok=True)
        self._numbers = dict(pins)
        self._names = {self._pin_info(n): name for name, n in pins.items()}
        self._seen_mtime = -1
        self._settled = False
        self._stop = threading.Event()
        self._publishing = threading.Lock()  # one writer per file at a time, whichever thread drives
        for number in pins.values():  # every named pin exists before the watcher may touch one
            self.pin(number)
        self._read_inputs()
        self._thread = threading.Thread(target=self._watch, name="hil-bridge", daemon=True)
        self._thread.start()

    def _pin_info(self, number: int) -> Any:
        return next(info for _, info in self.board_info.find_pin(number))

    def publish(self, pin: MockPin) -> None:
        name = self._names.get(pin.info)
        if name is not None:
            with self._publishing:
                write_atomic(self._out / name, "1" if pin.state else "0", durable=False)

    def _read_inputs(self) -> None:
        mtime = os.stat(self._in).st_mtime_ns
        if mtime == self._seen_mtime and self._settled:
            return
        self._seen_mtime = mtime
        self._settled = time.time_ns() - mtime > SETTLE_NS
        for path in self._in.iterdir():
            if path.name.startswith("."):
                continue
            pin = self.pin(self._numbers[path.name])
            pin.drive_high() if path.read_text().strip() == "1" else pin.drive_low()

    def _watch(self) -> None:
        # the rig's own cost, not the appliance's: the bench subtracts this thread's CPU time
        write_atomic(self._root / TID_FILE, str(threading.get_native_id()), durable=False)
        while not self._stop.wait(0.002):
            try:
                self._read_inputs()
            except (OSError, KeyError):
                continue

    def close(self) -> None:
        self._stop.set()
        super().close()


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
