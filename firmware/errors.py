"""The appliance's error hierarchy, in one place. The daemon catches ArbiterError at the
cycle boundary; anything else is a bug and is logged with its traceback."""
from __future__ import annotations


class ArbiterError(Exception):
    """Base of every error the firmware raises on purpose."""


class ProtocolError(ArbiterError):
    """A frame that must be dropped. ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ConfigError(ArbiterError):
    """A config that must not be used. ``problems`` lists every bad key, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ActionError(ArbiterError):
    """An action the executor could not carry out (timeout, refusal, lost confirmation).

    ``code`` tells decide what kind of failure it was, where the kind changes the outcome."""

    code = ""


class SplitBrainSuspected(ActionError):
    """More than one MAC answers for the virtual IP."""

    code = "split-brain"


class HardwareError(ArbiterError):
    """A board, pin or device that is missing or not what the config says."""


class StateError(ArbiterError):
    """The persisted state cannot be read or written."""


class DamagedFile(StateError):
    """A file the appliance keeps (state, run counter, journal, alarm, outbox) holds what it
    never writes: the message names the file. The daemon starts in safe halted mode."""

    def __init__(self, path: object, detail: str) -> None:
        super().__init__(f"{path}: corrupt ({detail})")
        self.path = path


class TransitionError(Exception):
    """decide tried a change of phase that the transition table does not have: a bug. Not an
    ArbiterError on purpose: the daemon handles it as an internal error (alarm, safe halt)."""
