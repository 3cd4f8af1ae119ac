"""Which PostgreSQL standby holds every acknowledged commit, from its own settings alone."""
from __future__ import annotations

import pytest

from host_tools.replication.postgres import cluster_state, standby_holds_every_ack


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
