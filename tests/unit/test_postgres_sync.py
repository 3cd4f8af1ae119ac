"""Which PostgreSQL standby holds every acknowledged commit: from its own copy of the settings,
and from the primary's setting and WAL positions (``SyncHolders``)."""
from __future__ import annotations

import pytest

from firmware.errors import ActionError
from host_tools.replication.postgres import PgSettings, PostgresAdapter, SyncHolders, cluster_state, standby_holds_every_ack


@pytest.mark.parametrize("names, me, holds", [
    ("db2", "db2", True),
    ('"db2"', "db2", True),
    ("FIRST 2 (db2, db3)", "db3", True),
    ("ANY 2 (db2, db3)", "db2", True),
    ("", "db2", False),  # asynchronous replication: nothing waits for a standby
    ("db3", "db2", False),  # another standby confirms the commits
    ("ANY 1 (db2, db3)", "db2", None),  # db3 alone may have confirmed the last commits
    ("FIRST 1 (db2, db3)", "db2", None),  # db3 steps in while db2 is away
    ("db2, db3", "db2", None),
    ("*", "db2", None),
])
def test_only_a_standby_every_commit_waits_for_is_in_sync(names, me, holds):
    assert standby_holds_every_ack(names, me) is holds


CONTROLDATA = """pg_control version number:            1300
Catalog version number:               202209061
Database cluster state:               shut down in recovery
pg_control last modified:             Tue 01 Dec 2026 03:33:43 AM UTC
"""


def test_cluster_state_is_read_from_pg_controldata():
    assert cluster_state(CONTROLDATA) == "shut down in recovery"
    assert cluster_state(CONTROLDATA.replace("shut down in recovery", "in production")) == "in production"
    assert cluster_state("pg_control version number: 1300\n") == ""


def test_a_named_standby_holds_every_commit_once_it_has_flushed_past_where_the_setting_had_settled():
    h = SyncHolders(settle=1.0)
    assert h.update("", 100, {"db2": 100}, 0.0) == ()  # asynchronous: nobody holds every commit
    assert h.update("db2", 200, {"db2": 200}, 10.0) == ()  # named now: commits before may be missing
    assert h.update("db2", 300, {"db2": 300}, 10.5) == ()  # the reload may not have reached every sender
    assert h.update("db2", 400, {"db2": 399}, 11.0) == ()  # armed at 400: not flushed past it yet
    assert h.update("db2", 500, {"db2": 400}, 11.1) == ("db2",)
    assert h.update("db2", 600, {}, 12.0) == ("db2",)  # disconnected: commits now wait for it
    assert h.update("db2", 700, {"db2": None}, 12.1) == ("db2",)


def test_a_name_dropped_or_not_confirming_every_commit_starts_afresh():
    h = SyncHolders(settle=1.0)
    for t in (0.0, 1.0):
        h.update("db2", 100, {"db2": 100}, t)
    assert h.update("db2", 100, {"db2": 100}, 1.1) == ("db2",)
    assert h.update("", 200, {"db2": 200}, 2.0) == ()  # degraded: commits no longer wait for it
    assert h.update("db2", 300, {"db2": 300}, 3.0) == ()
    assert h.update("ANY 1 (db2, db3)", 400, {"db2": 400, "db3": 400}, 9.0) == ()  # either one may confirm
    h.forget()  # this server became a standby
    assert h.update("FIRST 2 (db2, db3)", 500, {"db2": 500, "db3": 500}, 20.0) == ()
    assert h.update("FIRST 2 (db2, db3)", 600, {"db2": 600, "db3": 599}, 21.0) == ("db2",)


def test_a_stop_that_finds_the_server_gone_is_a_stop(tmp_path, monkeypatch):
    """A rejoin saw the server run, then it died in its own start-up recovery before pg_ctl
    stop came: "PID file does not exist" hid the recovery's real error behind the stop's."""
    adapter = PostgresAdapter(PgSettings(pgdata=str(tmp_path / "data")))
    running = [False]

    def fails(argv, what):
        raise ActionError(f"{what} exit 1: pg_ctl: PID file does not exist")
    monkeypatch.setattr(adapter, "_run", fails)
    monkeypatch.setattr(adapter, "_running", lambda: running[0])
    adapter._pg_ctl("stop", "-m", "fast")  # gone: stopped, as asked
    running[0] = True
    with pytest.raises(ActionError, match="PID file does not exist"):
        adapter._pg_ctl("stop", "-m", "fast")  # still running: the stop did fail
    running[0] = False
    with pytest.raises(ActionError, match="exit 1"):
        adapter._pg_ctl("start")  # a start that fails is a failure, whatever runs after it
