"""GPIO through gpiozero pin factories: the RPi.GPIO API on Pi 1-4, lgpio on a Pi 5 and
generic boards, MockFactory only on the HIL rig (whose bridged factory, board/hil_bridge.py,
the appliance passes in: this module knows nothing of the rig). A missing library or a
wrong board is a start-up error naming the setting, never a silent fall back to mock pins.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gpiozero import DigitalInputDevice, DigitalOutputDevice, GPIOZeroError
from gpiozero.pins import Factory

from board.pins import PIN_MAPS, STATUS_LEDS
from firmware.config import Board as BoardSettings
from firmware.config import Config
from firmware.errors import HardwareError
from firmware.waiting import wait_until

_AUTO = {"pi4": "rpigpio", "cm4": "rpigpio", "pi5": "lgpio", "generic": "lgpio", "hil": "mock"}


def make_factory(board: BoardSettings) -> Factory:
    name = _AUTO[board.kind] if board.pin_factory == "auto" else board.pin_factory
    if name == "mock":
        if board.kind != "hil":
            raise HardwareError(f"board.pin_factory = 'mock' with board.kind = {board.kind!r}: mock pins are "
                                "for the HIL rig only")
        from gpiozero.pins.mock import MockFactory
        return MockFactory()
    try:
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory
            return RPiGPIOFactory()
        from gpiozero.pins.lgpio import LGPIOFactory
        # a Pi 5's header is gpiochip4 on older kernels and gpiochip0 on newer: gpiozero knows;
        # the generic board's pin map is line offsets on gpiochip0
        return LGPIOFactory(chip=0) if board.kind == "generic" else LGPIOFactory()
    except ImportError as exc:
        raise HardwareError(f"board.pin_factory = {name!r} (board.kind = {board.kind!r}): its library is not "
                            f"installed ({exc.name}); install the 'pi' extra (lgpio, rpi-lgpio)") from exc
    except Exception as exc:  # gpiozero raises library-specific errors off the right board
        raise HardwareError(f"board.kind = {board.kind!r}: cannot open GPIO with {name!r} ({exc}); "
                            "is this the board the config names?") from exc


class PowerRelay:
    """One server's fence relay and its power readback."""

    def __init__(self, board: Board, relay: DigitalOutputDevice, sense: DigitalInputDevice | None) -> None:
        self._board, self._relay, self._sense = board, relay, sense

    def cut(self) -> None:
        self._board.drive(self._relay, True)

    def restore(self) -> None:
        self._board.drive(self._relay, False)

    @property
    def is_cut(self) -> bool:
        return bool(self._relay.value)

    def power_on(self) -> bool | None:
        return None if self._sense is None else bool(self._sense.value)

    def cut_and_confirm(self, timeout: float) -> bool:
        """Cut, then wait until the readback says the power is off (False on timeout)."""
        self.cut()
        return wait_until(lambda: self.power_on() is False, timeout, 0.002, self._board.clock)


class Board:
    def __init__(self, cfg: Config, factory: Factory, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pins = PIN_MAPS[cfg.board.kind]
        self._factory = factory
        self._lock = threading.Lock()
        self._outputs: dict[str, DigitalOutputDevice] = {}
        self._relays: dict[str, PowerRelay] = {}
        try:
            self._set_up(cfg, factory)
        except GPIOZeroError as exc:  # a pin used twice, a board gpiozero does not know, ...
            raise HardwareError(f"board.kind = {cfg.board.kind!r}: GPIO set-up failed ({type(exc).__name__}: {exc});"
                                " is this the board the config names, and is every pin used once?") from exc

    def _set_up(self, cfg: Config, factory: Factory) -> None:
        for srv in cfg.servers:
            relay = self._output(srv.fence_relay, active_high=not srv.relay_active_low) if srv.fence_relay else None
            sense = None
            if srv.power_sense:
                sense = DigitalInputDevice(self._pin(srv.power_sense, "power_sense"), pull_up=None,
                                           active_state=not srv.sense_active_low, pin_factory=factory)
            if relay is not None:
                self._relays[srv.name] = PowerRelay(self, relay, sense)
        self._alarm = self._output(cfg.board.alarm_relay) if cfg.board.alarm_relay else None
        self._leds = {status: self._output(pin) for status, pin in STATUS_LEDS.items()}
        self._button = None
        if cfg.board.ack_button:
            # a button as gpiozero's Button reads it (pulled up, pressed when low), without the
            # thread Button keeps for when_held, which woke ten times a second to look for a hold
            self._button = DigitalInputDevice(self._pin(cfg.board.ack_button, "board.ack_button"), pull_up=True,
                                              bounce_time=0.05, pin_factory=factory)

    def _pin(self, name: str, key: str) -> int:
        try:
            return self._pins[name]
        except KeyError:
            raise HardwareError(f"{key} = {name!r}: no such pin on this board (known: "
                                f"{', '.join(sorted(self._pins))})") from None

    def _output(self, name: str, active_high: bool = True) -> DigitalOutputDevice:
        """Outputs start inactive: creating the board never cuts anyone's power."""
        dev = DigitalOutputDevice(self._pin(name, name), active_high=active_high, initial_value=False,
                                  pin_factory=self._factory)
        self._outputs[name] = dev
        return dev

    def drive(self, dev: DigitalOutputDevice, on: bool) -> None:
        with self._lock:
            if bool(dev.value) != on:
                dev.value = on

    def relay(self, server: str) -> PowerRelay:
        try:
            return self._relays[server]
        except KeyError:
            raise HardwareError(f"servers.{server}: no fence_relay configured") from None

    def set_alarm(self, on: bool) -> None:
        if self._alarm is not None:
            self.drive(self._alarm, on)

    def set_status(self, status: str) -> None:
        if status not in self._leds:
            raise HardwareError(f"status {status!r}: must be one of {', '.join(self._leds)}")
        for name, dev in self._leds.items():
            if name != status:
                self.drive(dev, False)
        self.drive(self._leds[status], True)

    def on_ack(self, callback: Callable[[], None]) -> None:
        if self._button is not None:
            self._button.when_activated = lambda: callback()

    def outputs(self) -> dict[str, bool]:
        with self._lock:
            return {name: bool(dev.value) for name, dev in self._outputs.items()}
