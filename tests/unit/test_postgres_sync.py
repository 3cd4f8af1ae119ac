"""Which PostgreSQL standby holds every acknowledged commit, from its own settings alone."""
from __future__ import annotations

import pytest

from host_tools.replication.postgres import standby_holds_every_ack


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
