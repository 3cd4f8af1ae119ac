"""Board support on gpiozero's mock pins: fail-safe boot, wiring polarity, fence confirmation,
one status LED at a time, the acknowledge button, and the rig's bridged pin factory. What the
board did is read from the pins' own history (gpiozero's ``MockPin.states``)."""
from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from board.gpio import Board, make_factory
from board.hil_bridge import HilFactory, HilGpio
from board.pins import PIN_MAPS
from firmware.errors import HardwareError
from tests.unit.sitekit import site_config


def make_board(tmp_path=None, **server_changes):
    cfg = site_config(board={"kind": "hil", "pin_factory": "mock", "alarm_relay": "alarm", "ack_button": "ack_button",
                             **({"hil_gpio_dir": str(tmp_path / "gpio")} if tmp_path else {})})
    if server_changes:
        cfg = dataclasses.replace(cfg, servers=tuple(dataclasses.replace(s, **server_changes) for s in cfg.servers))
    factory = HilFactory(tmp_path / "gpio", PIN_MAPS["hil"]) if tmp_path else MockFactory()
    return Board(cfg, factory), factory, PIN_MAPS["hil"]


def level(factory, pins, name) -> bool:
    return bool(factory.pin(pins[name]).state)


def levels(factory, pins, name) -> list[bool]:
    """Every level the pin has had, its first one included."""
    return [s.state for s in factory.pin(pins[name]).states]


def test_boot_never_cuts_power():
    board, factory, pins = make_board()
    assert not level(factory, pins, "relay1") and not level(factory, pins, "relay2")
    assert not board.relay("master").is_cut
    assert levels(factory, pins, "relay1") == levels(factory, pins, "relay2") == [False]


def test_active_low_relay_is_high_at_boot_and_low_when_cut():
    board, factory, pins = make_board(relay_active_low=True)
    assert level(factory, pins, "relay1")  # coil off = high on an active-low board
    board.relay("master").cut()
    assert not level(factory, pins, "relay1") and board.relay("master").is_cut


def test_fence_confirmed_when_the_readback_drops():
    board, factory, pins = make_board()
    factory.pin(pins["sense1"]).drive_high()
    assert board.relay("master").power_on() is True

    def power_fails_soon():
        time.sleep(0.05)
        factory.pin(pins["sense1"]).drive_low()

    import threading
    threading.Thread(target=power_fails_soon).start()
    t0 = time.monotonic()
    assert board.relay("master").cut_and_confirm(1.0)
    assert 0.04 < time.monotonic() - t0 < 0.9
    assert levels(factory, pins, "relay1") == [False, True] and levels(factory, pins, "relay2") == [False]


def test_fence_not_confirmed_when_the_readback_stays_on():
    board, factory, pins = make_board()
    factory.pin(pins["sense1"]).drive_high()
    t0 = time.monotonic()
    assert board.relay("master").cut_and_confirm(0.2) is False
    assert time.monotonic() - t0 >= 0.2


def test_active_low_sense_reads_power_on_when_low():
    board, factory, pins = make_board(sense_active_low=True)
    factory.pin(pins["sense1"]).drive_low()
    assert board.relay("master").power_on() is True


def test_one_status_led_at_a_time_and_the_alarm_relay():
    board, factory, pins = make_board()
    board.set_status("degraded")
    board.set_status("fault")
    lit = [n for n in ("led_ok", "led_degraded", "led_failover", "led_fault") if level(factory, pins, n)]
    assert lit == ["led_fault"]
    board.set_alarm(True)
    assert level(factory, pins, "alarm")
    with pytest.raises(HardwareError, match="status"):
        board.set_status("purple")


def test_ack_button_calls_back():
    board, factory, pins = make_board()
    pressed = []
    board.on_ack(lambda: pressed.append(1))
    pin = factory.pin(pins["ack_button"])
    pin.drive_low()  # pulled up; pressing pulls it low
    time.sleep(0.1)
    assert pressed == [1]


def test_the_ack_button_keeps_no_thread_awake():
    """gpiozero's Button keeps a thread for when_held that wakes ten times a second; the
    board only needs the press."""
    from gpiozero.mixins import HoldThread
    board, factory, pins = make_board()
    board.on_ack(lambda: None)
    assert not [t for t in threading.enumerate() if isinstance(t, HoldThread)]


def test_wrong_board_or_library_is_a_clear_error():
    with pytest.raises(HardwareError, match="board.pin_factory = 'rpigpio'"):
        make_factory(site_config(board={"kind": "pi4", "pin_factory": "rpigpio"}).board)
    with pytest.raises(HardwareError, match="power_sense = 'sense99'"):
        cfg = site_config(board={"kind": "hil", "pin_factory": "mock"})
        cfg = dataclasses.replace(cfg, servers=tuple(dataclasses.replace(s, power_sense="sense99") for s in cfg.servers))
        Board(cfg, MockFactory())


def test_a_pin_used_twice_is_a_start_up_error_naming_the_board():
    # the config refuses this already (test_config); the board refuses it too, whatever built the config
    cfg = site_config(board={"kind": "hil", "pin_factory": "mock"})
    cfg = dataclasses.replace(cfg, board=dataclasses.replace(cfg.board, alarm_relay="relay1"))
    with pytest.raises(HardwareError, match="board.kind = 'hil': GPIO set-up failed .*GPIOPinInUse"):
        Board(cfg, MockFactory())


def test_rig_bridge_shows_outputs_and_drives_inputs(tmp_path):
    board, factory, pins = make_board(tmp_path)
    rig = HilGpio(tmp_path / "gpio")
    try:
        assert rig.output("relay1") is False
        board.relay("master").cut()
        assert rig.wait_output("relay1", True, 1.0)
        board.set_alarm(True)
        board.set_alarm(False)
        assert rig.output("alarm") is False and levels(factory, pins, "alarm") == [False, True, False]
        rig.set_input("sense1", True)
        deadline = time.monotonic() + 1.0
        while board.relay("master").power_on() is not True and time.monotonic() < deadline:
            time.sleep(0.005)
        assert board.relay("master").power_on() is True
    finally:
        factory.close()


def test_rig_bridge_overwrites_what_an_earlier_run_left(tmp_path):
    """An appliance restarted by the rig starts with every output off, and the rig must not
    see the alarm or a cut relay of the run before."""
    rig = HilGpio(tmp_path / "gpio")
    (tmp_path / "gpio" / "out").mkdir(parents=True)
    for name in ("alarm", "relay1"):
        (tmp_path / "gpio" / "out" / name).write_text("1")
    rig.set_input("sense1", True)  # the rig powered the master before the appliance started
    board, factory, _pins = make_board(tmp_path)
    try:
        assert rig.output("alarm") is False and rig.output("relay1") is False
        assert board.relay("master").power_on() is True  # read before the first cycle, not 2 ms later
    finally:
        factory.close()


def test_rig_bridge_sees_a_second_change_inside_the_same_clock_tick(tmp_path):
    board, factory, _pins = make_board(tmp_path)
    rig = HilGpio(tmp_path / "gpio")
    inputs = tmp_path / "gpio" / "in"
    try:
        rig.set_input("sense1", True)
        deadline = time.monotonic() + 1.0
        while board.relay("master").power_on() is not True and time.monotonic() < deadline:
            time.sleep(0.002)
        seen = os.stat(inputs).st_mtime_ns
        rig.set_input("sense1", False)
        os.utime(inputs, ns=(seen, seen))  # as a coarse clock leaves it: the mtime did not move
        time.sleep(0.1)
        assert board.relay("master").power_on() is False
    finally:
        factory.close()
