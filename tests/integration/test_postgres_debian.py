"""The PostgreSQL adapter on Debian's own layout: two clusters made by ``pg_createcluster``
(configuration in /etc/postgresql/15/NAME, data in /var/lib/postgresql/15/NAME), driven
with ``pg_ctlcluster``. A standby is promoted after its primary dies, and the old primary
rejoins with pg_rewind, which must be given the configuration file Debian keeps outside
the data directory.
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.replication import ReplicationStatus
from host_tools.replication.postgres import PostgresAdapter, debian_data_directory, parse_settings, \
    write_standby_config
from tests.integration.test_postgres import _free_ports

VERSION = "15"
SOCKETS = "/var/run/postgresql"


def as_postgres(*argv: str) -> str:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr.strip()}"
    return done.stdout


def sql(port: int, query: str) -> list[tuple]:
    out = as_postgres("psql", "-h", SOCKETS, "-p", str(port), "-XAtc", query)
    return [tuple(line.split("|")) for line in out.splitlines()]


@pytest.fixture
def clusters() -> Iterator[dict[str, int]]:
    """Two Debian clusters, db1 primary and db2 its synchronous standby, on free ports."""
    tag = f"ba{os.getpid()}"
    names = {f"{tag}db1": 0, f"{tag}db2": 0}
    for (name, _), port in zip(list(names.items()), _free_ports(2)):
        names[name] = port
        subprocess.run(["pg_createcluster", VERSION, name, "-p", str(port), "-o", "wal_log_hints=on", "-o", "wal_keep_size=128MB",
                        "-o", "listen_addresses=", "-o", f"unix_socket_directories={SOCKETS}"],
                       check=True, capture_output=True, timeout=120)
        hba = Path(f"/etc/postgresql/{VERSION}/{name}/pg_hba.conf")
        # the agent connects as postgres from root over the socket; the rig trusts local sockets
        hba.write_text("local all all trust\nlocal replication all trust\n" + hba.read_text())
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["pg_dropcluster", "--stop", VERSION, name], capture_output=True, timeout=120)


def adapter(name: str, port: int, peers: dict[str, int]) -> PostgresAdapter:
    return PostgresAdapter(parse_settings({
        "adapter": "postgres", "cluster": f"{VERSION}/{name}", "host": SOCKETS, "port": port,
        "application_name": name, "timeout": 60.0,
        "peers": {n: f"{SOCKETS}:{p}" for n, p in peers.items()}}))


def wait_for(ad: PostgresAdapter, check, timeout: float, what: str) -> ReplicationStatus:
    deadline = time.monotonic() + timeout
    status = ad.status()
    while not check(status):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s; last {status}"
        time.sleep(0.05)
        status = ad.status()
    return status


def test_promote_and_rewind_on_clusters_made_by_debians_tools(clusters: dict[str, int]) -> None:
    (db1, p1), (db2, p2) = clusters.items()
    ad1, ad2 = adapter(db1, p1, clusters), adapter(db2, p2, clusters)
    data2 = Path(debian_data_directory(Path(f"/etc/postgresql/{VERSION}/{db2}/postgresql.conf")))
    assert data2 == Path(f"/var/lib/postgresql/{VERSION}/{db2}")

    ad1._pg_ctl("start")
    sql(p1, "CREATE TABLE billing (id text PRIMARY KEY)")
    sql(p1, f"ALTER SYSTEM SET synchronous_standby_names = '{db2}'")
    sql(p1, "SELECT pg_reload_conf()")
    # db2 becomes db1's standby: its data directory is a base backup of db1
    for entry in data2.iterdir():
        subprocess.run(["rm", "-rf", str(entry)], check=True)
    as_postgres("pg_basebackup", "-h", SOCKETS, "-p", str(p1), "-D", str(data2), "-X", "stream")
    write_standby_config(data2, f"host={SOCKETS} port={p1} user=postgres application_name={db2}")
    ad2._pg_ctl("start")

    wait_for(ad1, lambda s: s.role == "primary" and s.in_sync, 20, "db1 primary with db2 in sync")
    wait_for(ad2, lambda s: s.role == "standby" and s.in_sync and s.peer_alive, 20, "db2 streaming")
    sql(p1, "INSERT INTO billing VALUES ('before')")

    subprocess.run(["pg_ctlcluster", VERSION, db1, "stop", "-m", "immediate"], check=True, capture_output=True)
    ad2.promote()
    assert ad2.status().role == "primary"
    sql(p2, "INSERT INTO billing VALUES ('after')")

    ad1.rejoin(db2)  # pg_rewind with --config-file, then pg_ctlcluster start as a standby
    back = wait_for(ad1, lambda s: s.role == "standby" and s.peer_alive, 30, "db1 back as db2's standby")
    assert back.role == "standby"
    deadline = time.monotonic() + 10
    while sql(p1, "SELECT id FROM billing ORDER BY id") != [("after",), ("before",)]:
        assert time.monotonic() < deadline, "db1 did not replay db2's commit after the rewind"
        time.sleep(0.05)
