"""After the appliance's own loop stood still, the servers' silence over the stall is not
counted: leases restart at its end (the arbiter-down scenario froze the daemon with SIGSTOP
and, without this, it fenced a healthy primary on SIGCONT)."""
from firmware.config import Timing
from firmware.detector import link_state
from firmware.model import LinkState

T = Timing()  # warn 0.12 s, dead 0.2 s


def test_silence_across_a_stall_is_not_death():
    assert link_state(10.0, 40.0, 0.0, T) is LinkState.DEAD  # without the stall known: dead
    assert link_state(10.0, 40.0, 0.0, T, resumed_at=40.0) is LinkState.UP
    assert link_state(10.0, 40.15, 0.0, T, resumed_at=40.0) is LinkState.LATE
    assert link_state(10.0, 40.2, 0.0, T, resumed_at=40.0) is LinkState.DEAD  # a full dead time after


def test_a_reply_after_the_stall_counts_as_usual():
    assert link_state(40.1, 40.25, 0.0, T, resumed_at=40.0) is LinkState.LATE
