"""Alerts go out on the executor's reporter thread: those still queued when the next decision
is saved are saved with it, so that an appliance killed before sending them sends them after
its restart (the arbiter-restart scenario lost failover-started without this)."""
from firmware.daemon import with_unsent
from firmware.model import Notify, SetStatus
from firmware.site_state import SavedAlert, State


def test_queued_alerts_are_saved_before_the_decisions_own_in_order():
    state = State(since=0.0).evolve(alerts=(SavedAlert("fence-done", "master"),))
    queued = (Notify("failover-started", "master", text="failover: master -> standby"), SetStatus("degraded"))
    saved = with_unsent(state, queued)
    assert saved.alerts == (SavedAlert("failover-started", "master", "", "failover: master -> standby"),
                            SavedAlert("fence-done", "master"))


def test_nothing_queued_saves_the_state_as_it_is():
    state = State(since=0.0)
    assert with_unsent(state, ()) is state
    assert with_unsent(state, (SetStatus("ok"),)) is state
