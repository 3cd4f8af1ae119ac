"""After the appliance's own loop stood still, the servers' silence over the stall is not
counted: leases still running when it began restart at its end (the arbiter-down scenario
froze the daemon with SIGSTOP and, without this, it fenced a healthy primary on SIGCONT).
A link already dead when the stall began stays dead (reviving it made a powered-off old
primary look alive after every stall of a loaded appliance, and its last report, primary
with the virtual IP, halted the site as a split brain in the endurance run)."""
from firmware.config import Timing
from firmware.detector import LEASE_MARGIN_S, Stall, first_lease_end, link_state
from firmware.model import Channel, LinkObs, LinkState, ServerObs

T = Timing()  # warn 0.12 s, dead 0.2 s


def test_silence_across_a_stall_is_not_death():
    stall = Stall(10.05, 40.0)
    assert link_state(10.0, 40.0, 0.0, T) is LinkState.DEAD  # without the stall known: dead
    assert link_state(10.0, 40.0, 0.0, T, stall) is LinkState.UP
    assert link_state(10.0, 40.15, 0.0, T, stall) is LinkState.LATE
    assert link_state(10.0, 40.2, 0.0, T, stall) is LinkState.DEAD  # a full dead time after


def test_a_reply_after_the_stall_counts_as_usual():
    assert link_state(40.1, 40.25, 0.0, T, Stall(10.05, 40.0)) is LinkState.LATE


def test_a_link_dead_before_the_stall_stays_dead_across_it():
    assert link_state(10.0, 10.3, 0.0, T) is LinkState.DEAD  # dead at the last cycle before the stall
    assert link_state(10.0, 10.5, 0.0, T, Stall(10.3, 10.45)) is LinkState.DEAD
    assert link_state(10.0, 10.5, 0.0, T, Stall(10.19, 10.45)) is LinkState.UP  # still alive when it began


def test_a_reply_during_the_stall_restarts_the_lease_at_its_end():
    """The readers ran while the loop stood still: the reply is news, and the stall's end counts."""
    assert link_state(10.2, 10.6, 0.0, T, Stall(9.0, 10.5)) is LinkState.UP


def test_after_a_stall_the_loop_wakes_a_dead_time_after_its_end_not_at_once():
    """The lease the loop waits for is the one link_state judges: counted from the last reply,
    it had already ended, and the daemon's loop spun (polling every server each turn) for a
    dead time after every stall."""
    stall = Stall(10.05, 10.3)
    servers = [ServerObs("master", (LinkObs(Channel.SERIAL, link_state(10.0, 10.3, 0.0, T, stall), 10.0),), None,
                         True, False, None)]
    assert servers[0].links[0].state is LinkState.UP
    end = first_lease_end(servers, T, stall)
    assert end == 10.3 + T.dead_time + LEASE_MARGIN_S
    assert link_state(10.0, end, 0.0, T, stall) is LinkState.DEAD
    assert link_state(10.0, end - 2 * LEASE_MARGIN_S, 0.0, T, stall) is LinkState.LATE
