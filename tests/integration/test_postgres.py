"""The PostgreSQL adapter and the rig's cluster against real PostgreSQL 15 servers on
loopback (random free ports): a primary, a synchronous and an asynchronous standby.

Loopback has no virtual IP, so the billing load's DSN names both servers with
target_session_attrs=read-write: libpq then finds the new primary as a client would
through the moved address.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.errors import ActionError, ConfigError
from hil.billing import BillingLoad
from hil.postgres import NodeSpec, PgCluster
from host_tools.replication import Health, ReplicationStatus, make_adapter
from host_tools.replication.postgres import PostgresAdapter, parse_sync_names


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def make_cluster() -> Iterator:
    made: list[tuple[PgCluster, Path]] = []

    def build() -> PgCluster:
        workdir = Path(tempfile.mkdtemp(prefix="ba-pg-"))
        ports = _free_ports(3)
        nodes = [NodeSpec("n1", "127.0.0.1", ports[0], None, "primary"),
                 NodeSpec("n2", "127.0.0.1", ports[1], None, "sync"),
                 NodeSpec("n3", "127.0.0.1", ports[2], None, "async")]
        cluster = PgCluster(workdir, nodes)
        made.append((cluster, workdir))
        return cluster.__enter__()

    try:
        yield build
    finally:
        for cluster, workdir in made:
            cluster.close()
            shutil.rmtree(workdir, ignore_errors=True)


def adapters(cluster: PgCluster) -> dict[str, PostgresAdapter]:
    return {n: make_adapter({"adapter": "postgres", **cluster.adapter_settings(n)})  # type: ignore[misc]
            for n in cluster.nodes}


def wait_status(adapter: PostgresAdapter, check, timeout: float, what: str) -> ReplicationStatus:
    deadline = time.monotonic() + timeout
    status = adapter.status()
    while not check(status):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s; last {status}")
        time.sleep(0.02)
        status = adapter.status()
    return status


def wait_replayed(cluster, name: str, tag: str, timeout: float) -> None:
    """Waits until standby ``name`` shows the committed row ``tag``."""
    deadline = time.monotonic() + timeout
    while not cluster.sql(name, f"SELECT 1 FROM billing WHERE id = '{tag}'"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} has not replayed {tag!r} within {timeout:g} s")
        time.sleep(0.02)


def test_roles_sync_and_a_paused_async_standby(make_cluster) -> None:
    cluster = make_cluster()
    ad = adapters(cluster)
    primary = wait_status(ad["n1"], lambda s: s.in_sync, 10, "primary with its sync standby")
    assert primary.role == "primary" and primary.peer_alive and "n2 streaming/sync" in primary.detail
    before = ad["n3"].status()
    assert (before.role, before.in_sync, before.peer_alive) == ("standby", False, True)

    # lag_s is the age of the last replayed commit: NULL in PostgreSQL until a standby has
    # replayed one, so both standbys must have replayed this row before lag_s is asked for.
    cluster.sql("n1", "INSERT INTO billing VALUES ('replayed', 0)")
    for name in ("n2", "n3"):
        wait_replayed(cluster, name, "replayed", 5)
    sync = ad["n2"].status()
    assert (sync.role, sync.in_sync, sync.peer_alive) == ("standby", True, True)
    assert sync.lag_bytes is not None and sync.lag_s is not None
    cluster.sql("n3", "SELECT pg_wal_replay_pause()")
    for i in range(20):
        cluster.sql("n1", f"INSERT INTO billing VALUES ('paused-{i}', {i})")
    paused = wait_status(ad["n3"], lambda s: (s.lag_bytes or 0) > 0, 5, "replay lag on the paused standby")
    assert paused.in_sync is False and "replay paused" in paused.detail and paused.lag_s > 0
    assert ad["n2"].status().lag_bytes == 0 or ad["n2"].status().in_sync
    cluster.sql("n3", "SELECT pg_wal_replay_resume()")
    wait_status(ad["n3"], lambda s: s.lag_bytes == 0, 5, "paused standby catching up")


def test_kill_promote_rejoin_under_billing_load(make_cluster, capsys) -> None:
    cluster = make_cluster()
    ad = adapters(cluster)
    p1, p2 = cluster.nodes["n1"].port, cluster.nodes["n2"].port
    dsn = (f"host=127.0.0.1,127.0.0.1 port={p1},{p2} target_session_attrs=read-write user=postgres "
           "dbname=postgres connect_timeout=2")
    ledger = cluster.workdir / "ledger.txt"
    load = BillingLoad(dsn, ledger, rate_hz=200.0).start()
    try:
        deadline = time.monotonic() + 10
        while load.summary().acked < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert load.summary().acked >= 100, load.summary()

        killed = time.monotonic()
        cluster.kill("n1")
        lost_peer = wait_status(ad["n2"], lambda s: s.peer_alive is False, 5, "standby noticing the dead primary")
        assert lost_peer.role == "standby" and lost_peer.in_sync is True  # sole sync candidate: holds every ack
        ad["n2"].promote()
        cluster.sql("n2", "INSERT INTO billing VALUES ('after-promote', 1)")
        promoted_s = time.monotonic() - killed
        assert ad["n2"].status().role == "primary"

        before = load.summary().acked
        deadline = time.monotonic() + 10
        while load.summary().acked < before + 100 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        summary = load.stop()
    acked, lost, lost_ids = load.verify(cluster.dsn("n2"))
    assert acked == summary.acked and acked >= 200
    assert lost == 0, lost_ids[:10]
    assert summary.longest_gap_s < 10.0

    ad["n1"].rejoin("n2")
    rejoined = wait_status(ad["n1"], lambda s: s.peer_alive, 15, "old primary streaming from the new one")
    assert rejoined.role == "standby"
    wait_status(ad["n2"], lambda s: "n1 streaming" in s.detail, 10, "new primary seeing the old one")
    count = "SELECT count(*) FROM billing"
    deadline = time.monotonic() + 10
    while (rows := (cluster.sql("n1", count)[0][0], cluster.sql("n2", count)[0][0]))[0] != rows[1]:
        assert time.monotonic() < deadline, f"rejoined standby did not catch up: n1 {rows[0]}, n2 {rows[1]} rows"
        time.sleep(0.05)
    # The new primary runs alone; its RestoreSync names n1, whose own copy of the setting is
    # what it was given by pg_rewind: only the primary can say n1 now holds every commit.
    assert ad["n2"].status().sync_standbys == ()
    ad["n2"].sync_restore(["n1"])
    listed = wait_status(ad["n2"], lambda s: s.sync_standbys == ("n1",), 10, "new primary naming n1 a holder")
    assert listed.in_sync and ad["n1"].status().in_sync is not True
    with capsys.disabled():
        print(f"\n[postgres] kill -> promoted and accepting writes through the adapter: {promoted_s:.3f} s; "
              f"billing load: {acked} acked, {lost} lost, longest gap {summary.longest_gap_s:.3f} s")


def test_planned_switchover_demote_then_promote(make_cluster) -> None:
    cluster = make_cluster()
    ad = adapters(cluster)
    cluster.sql("n1", "INSERT INTO billing VALUES ('before-switchover', 1)")
    ad["n1"].demote()
    ad["n2"].promote()
    assert ad["n2"].status().role == "primary"
    assert cluster.sql("n2", "SELECT count(*) FROM billing WHERE id = 'before-switchover'") == [(1,)]
    demoted = wait_status(ad["n1"], lambda s: s.peer_alive, 15, "demoted primary following the new one")
    assert demoted.role == "standby"
    wait_status(ad["n3"], lambda s: s.peer_alive, 15, "async standby following the new primary")
    cluster.sql("n2", "INSERT INTO billing VALUES ('after-switchover', 1)")


def test_promote_answers_once_the_new_setting_is_in_force_and_mends_a_half_done_promotion(make_cluster) -> None:
    """pg_promote comes first and synchronous_standby_names is written during the end of
    recovery; promote returns only when a new session gets the new setting (the rig's
    cluster names n2 as the synchronous standby: left so, n2's own commits would wait for
    itself). An agent restarted between pg_promote and the setting finds a primary that
    still names itself and sets it; one that names others is left as it is."""
    cluster = make_cluster()
    ad = adapters(cluster)
    cluster.kill("n1")
    wait_status(ad["n2"], lambda s: s.peer_alive is False, 5, "standby noticing the dead primary")
    assert cluster.sql("n2", "SHOW synchronous_standby_names") == [('"n2"',)]
    ad["n2"].promote()
    assert cluster.sql("n2", "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')") == \
        [(False, "")]

    def named(value: str) -> None:
        cluster.sql("n2", f"ALTER SYSTEM SET synchronous_standby_names = '{value}'")
        cluster.sql("n2", "SELECT pg_reload_conf()")
        deadline = time.monotonic() + 5
        while cluster.sql("n2", "SHOW synchronous_standby_names") != [(value,)]:
            assert time.monotonic() < deadline, f"reload to {value!r} not seen"
            time.sleep(0.02)
    named('"n2"')
    ad["n2"].promote()
    assert cluster.sql("n2", "SHOW synchronous_standby_names") == [("",)]
    named('"n3"')
    ad["n2"].promote()
    assert cluster.sql("n2", "SHOW synchronous_standby_names") == [('"n3"',)]


def test_unreachable_server_is_unknown_and_actions_fail(make_cluster) -> None:
    cluster = make_cluster()
    ad = adapters(cluster)
    cluster.kill("n3")
    status = ad["n3"].status()
    assert status.role == "unknown" and str(cluster.nodes["n3"].port) in status.detail
    with pytest.raises(ActionError, match="promote"):
        ad["n3"].promote()
    with pytest.raises(ActionError, match="not in replication.peers"):
        ad["n3"].rejoin("nobody")


def test_health_sees_a_crash_and_a_hang_within_the_timeout(make_cluster) -> None:
    """A hung postmaster (SIGSTOP) still serves connections already open, such as the status
    one, but accepts no new one: the health check must say unhealthy within its timeout."""
    cluster = make_cluster()
    ad = adapters(cluster)
    assert ad["n1"].health(1.0) == Health(True) and ad["n2"].health(1.0) == Health(True)
    assert ad["n1"].status().role == "primary"  # the status connection is open now
    pid = cluster.pid("n1")
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        hung = ad["n1"].health(0.3)
        took = time.monotonic() - started
        assert not hung.ok and "within agent.health_timeout = 0.3 s" in hung.detail
        assert 0.25 < took < 0.6
        assert ad["n1"].status().role == "primary"  # what the role alone would have believed
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ad["n1"].health(1.0).ok
    cluster.kill("n3")
    crashed = ad["n3"].health(1.0)
    assert not crashed.ok and str(cluster.nodes["n3"].port) in crashed.detail


def test_bad_settings_name_key_value_and_bound() -> None:
    with pytest.raises(ConfigError) as err:
        make_adapter({"adapter": "postgres", "port": 70000, "peer_timeout": 0.1, "peers": {"a": "nohost"},
                      "colour": "red"})
    text = str(err.value)
    assert "replication.port = 70000" in text and "1 to 65535" in text
    assert "replication.peer_timeout = 0.1" in text and "replication.peers" in text
    assert "replication.colour: unknown key" in text


@pytest.mark.parametrize("value, parsed", [
    ("", (0, ())), ("n2", (1, ("n2",))), ('"n2", n3', (1, ("n2", "n3"))),
    ("FIRST 2 (a, b, c)", (2, ("a", "b", "c"))), ("ANY 1 (\"x\")", (1, ("x",))), ("2 (a,b)", (2, ("a", "b"))),
])
def test_synchronous_standby_names_parsing(value: str, parsed: tuple) -> None:
    assert parse_sync_names(value) == parsed


def _insert_in_background(cluster: PgCluster, node: str, row: str) -> threading.Thread:
    t = threading.Thread(target=cluster.sql, args=(node, f"INSERT INTO billing VALUES ('{row}', 1)"), daemon=True)
    t.start()
    return t


def test_sync_loss_degrade_names_a_caught_up_standby_then_restore(make_cluster) -> None:
    cluster = make_cluster()
    ad = adapters(cluster)
    wait_status(ad["n1"], lambda s: s.in_sync and s.sync_standbys == ("n2",), 10, "n2 holding every commit")
    cluster.sql("n1", "INSERT INTO billing VALUES ('before-loss', 1)")
    wait_status(ad["n3"], lambda s: s.lag_bytes == 0, 5, "async standby caught up")
    cluster.kill("n2")
    waiting = _insert_in_background(cluster, "n1", "during-loss")
    waiting.join(1.0)
    assert waiting.is_alive(), "a commit must wait while its synchronous standby is gone"
    detail = ad["n1"].sync_degrade(["n2"])
    assert detail == "synchronous_standby_names '\"n2\"' -> '\"n3\"'"
    assert ad["n1"].status().sync_standbys == ()  # n3 named now: commits before may be on n2 alone
    waiting.join(5.0)
    assert not waiting.is_alive(), "the caught-up n3 now confirms the commit"
    assert cluster.sql("n3", "SELECT count(*) FROM billing WHERE id = 'during-loss'") == [(1,)]
    cluster.start("n2")
    cluster.wait_streaming("n1", "n2")
    assert ad["n1"].sync_restore(["n2"]) == "synchronous_standby_names '\"n3\"' -> 'FIRST 2 (\"n3\", \"n2\")'"
    status = wait_status(ad["n1"], lambda s: s.in_sync and s.sync_standbys == ("n2", "n3"), 10,
                         "both synchronous, and both holding every commit")
    assert "n2 streaming/sync" in status.detail and "n3 streaming/sync" in status.detail


def test_sync_loss_degrade_with_no_standby_left_stops_waiting(make_cluster) -> None:
    cluster = make_cluster()
    ad = adapters(cluster)
    wait_status(ad["n1"], lambda s: s.in_sync, 10, "primary with its sync standby")
    cluster.kill("n3")
    cluster.kill("n2")
    waiting = _insert_in_background(cluster, "n1", "alone")
    waiting.join(1.0)
    assert waiting.is_alive()
    assert ad["n1"].sync_degrade(["n2"]) == "synchronous_standby_names '\"n2\"' -> ''"
    waiting.join(5.0)
    assert not waiting.is_alive()
    assert ad["n1"].status().in_sync is False


def test_rebuild_makes_a_fresh_standby_with_progress_lines(make_cluster) -> None:
    cluster = make_cluster()
    ad = adapters(cluster)
    cluster.kill("n3")
    lines: list[str] = []
    detail = ad["n3"].rebuild("n1", lines.append)
    assert detail.startswith("rebuilt from n1 in ") and detail.endswith(".before-rebuild")
    assert lines and all(ln.startswith("pg_basebackup: ") for ln in lines)
    assert any("kB" in ln for ln in lines), lines
    assert Path(str(cluster.data("n3")) + ".before-rebuild").is_dir()
    cluster.sql("n1", "INSERT INTO billing VALUES ('after-rebuild', 1)")
    wait_status(ad["n3"], lambda s: s.peer_alive and s.lag_bytes == 0, 15, "rebuilt standby streaming")
    assert cluster.sql("n3", "SELECT count(*) FROM billing WHERE id = 'after-rebuild'") == [(1,)]
    with pytest.raises(ActionError, match="runs as a primary; refusing to overwrite it"):
        ad["n1"].rebuild("n2", lines.append)


def test_self_fence_stops_the_primary_at_once(make_cluster) -> None:
    cluster = make_cluster()
    ad = adapters(cluster)
    started = time.monotonic()
    assert ad["n1"].self_fence(5.0) == "database stopped (pg_ctl stop -m immediate)"
    assert time.monotonic() - started < 5.0 and cluster.pid("n1") is None
    assert ad["n1"].status().role == "unknown"
    assert ad["n1"].self_fence(5.0) == "database already stopped"


def test_a_power_cut_leaves_no_lock_that_stops_the_next_start(make_cluster) -> None:
    """The rig's power cut kills every process of the host before PgCluster.kill looks, and a
    killed postmaster can linger as a zombie, which answers kill(pid, 0) as PostgreSQL's lock
    check sends it: its lock files must not stop the next start ("lock file ... already exists")."""
    import subprocess
    from hil.postgres import _alive, _children
    cluster = make_cluster()
    locks = [cluster.data("n2") / "postmaster.pid", *cluster.socket_dir("n2").glob(".s.PGSQL.*.lock")]
    assert len(locks) == 2
    saved = {lock: lock.read_text() for lock in locks}
    pid = cluster.pid("n2")
    victims = [pid, *_children(pid)]
    for p in victims:
        os.kill(p, signal.SIGKILL)
    while any(_alive(p) for p in victims):
        time.sleep(0.01)
    cluster.kill("n2")  # finds it dead already
    assert not any(lock.exists() for lock in locks)
    # never waited for until the end: a zombie meanwhile, of the postgres user as a postmaster is
    zombie = subprocess.Popen(["true"], user="postgres")
    while _alive(zombie.pid):
        time.sleep(0.01)
    try:
        for lock, text in saved.items():  # as a zombie postmaster's would read
            lock.write_text("\n".join([str(zombie.pid), *text.split("\n")[1:]]))
        cluster.start("n2")
        cluster.wait_streaming("n1", "n2")
    finally:
        zombie.wait()
