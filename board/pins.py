"""Pin maps per board: pin name -> GPIO number (BCM numbering on Raspberry Pi boards, line
offsets on gpiochip0 for the generic board, mock pin numbers on the HIL rig).

Wiring convention: fence relays switch the server's power through NORMALLY-CLOSED contacts,
so a de-energised coil means the server is powered. A daemon that is not running, starting,
stopping or crashing therefore never cuts anyone's power (fail-safe); cutting power means
energising the coil. sense<i> reads back server i's power (an opto-isolated input from its
PSU or PDU outlet). On the 40-pin header, ten servers use every free line, including the
I2C (2, 3) and UART (14, 15) pins: sites with more than six servers must use USB serial
adapters for their COM links.
"""
from __future__ import annotations

from types import MappingProxyType

_HEADER = {
    **{f"relay{i + 1}": n for i, n in enumerate((5, 6, 13, 16, 19, 20, 21, 26, 12, 7))},
    **{f"sense{i + 1}": n for i, n in enumerate((17, 27, 22, 23, 24, 25, 4, 18, 8, 11))},
    "alarm": 9, "led_ok": 10, "led_degraded": 2, "led_failover": 3, "led_fault": 14, "ack_button": 15,
}

_LINES = {name: i for i, name in enumerate(
    [f"relay{i}" for i in range(1, 11)] + [f"sense{i}" for i in range(1, 11)]
    + ["alarm", "led_ok", "led_degraded", "led_failover", "led_fault", "ack_button"])}

PIN_MAPS = MappingProxyType({
    "pi4": MappingProxyType(_HEADER),
    "pi5": MappingProxyType(_HEADER),
    "cm4": MappingProxyType(_HEADER),
    "generic": MappingProxyType(_LINES),
    "hil": MappingProxyType(_LINES),
})

STATUS_LEDS = {"ok": "led_ok", "degraded": "led_degraded", "failed-over": "led_failover", "fault": "led_fault"}
