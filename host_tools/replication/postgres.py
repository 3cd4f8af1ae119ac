"""The PostgreSQL adapter: streaming replication state read from the server itself, and
promote / demote / rejoin carried out with pg_promote, pg_ctl and pg_rewind.

What the agent reports, and why:

* role: ``pg_is_in_recovery()``; a server that does not answer is "unknown".
* On a primary: ``in_sync`` is true while a standby the primary treats as synchronous
  (``sync_state`` sync or quorum) is streaming, i.e. acknowledged commits exist on two
  machines; ``lag_bytes`` is the flush lag of its best standby (what a failover now could
  lose), ``lag_s`` that standby's replay lag; ``peer_alive`` is true while any standby streams.
* On a standby: ``peer_alive`` is true while the WAL receiver is streaming and has heard the
  primary within ``peer_timeout`` seconds (the primary's sender pings every
  wal_sender_timeout / 2, so a silent link is noticed without waiting for TCP);
  ``lag_bytes`` is WAL received but not yet replayed (what a promotion must still replay,
  and what grows when replay is paused or slow), ``lag_s`` the age of the last replayed
  transaction while replay is behind (0 when it is not).
* ``in_sync`` on a standby. A standby cannot see the primary's view (and after the primary's
  death nobody can), so it answers from ``synchronous_standby_names``, which the cluster
  keeps identical on every node (copied by pg_basebackup and pg_rewind; ``promote``
  rewrites it), and its own application name (``application_name``, default cluster_name):
  true only when every acknowledged commit must have been flushed here, that is when this
  standby is named and the number that must confirm is at least the number of candidates
  (``"db2"``, ``FIRST 2 (db2, db3)``, ``ANY 2 (db2, db3)``); false when it is not named.
  With fewer confirmations than candidates (``ANY 1 (db2, db3)``, ``FIRST 1 (...)``, ``*``)
  a commit may have been acknowledged by another standby alone, whatever this one's stream
  looks like: the answer is unknown (None), and the appliance does not promote it on its
  own (an operator can, with ``arbiterctl failover --force``).
  That copy is only as good as its last copying: the appliance's RestoreSync and DegradeSync
  change the primary's setting alone (ALTER SYSTEM is not replicated), so a standby rejoined
  or rebuilt from a primary promoted alone goes on reading itself "not named". The
  primary's own view therefore comes first (below); the standby's copy is what the
  appliance uses only when no primary reports one.
* ``sync_standbys`` on a primary: the standbys that hold every commit it acknowledges, by
  its own ``synchronous_standby_names`` (named, with every candidate confirming, as above)
  and its own WAL positions (``SyncHolders``). The appliance judges a standby in sync by
  this list while the primary's report has one, the last report of a dead primary too:
  nothing but a change of that setting (the appliance's own DegradeSync, which it tracks,
  or a person) lets a primary acknowledge a commit without a standby it names so.

* health: a NEW connection and ``SELECT 1``, both within the agent's ``health_timeout``
  (non-blocking libpq, so the deadline is ours and not libpq's two-second minimum). A new
  connection because the status connection, already open, keeps answering when the
  postmaster hangs (SIGSTOP, a stuck fork), while no client can connect any more.

Actions:

* promote: ``pg_promote()``; while the server ends its recovery, ``synchronous_standby_names``
  is set (ALTER SYSTEM, reload) to ``ANY 1 (sync_after_promote minus this node)``, or
  emptied when that list is empty, so that the new primary does not wait for itself; the
  server is watched until it has left recovery and the reload is seen. A primary whose
  setting still names itself (an agent restarted between the two) gets the setting again.
  Emptying it means the new primary runs with one copy until a standby is back; a site that
  prefers to stop writes instead names its standbys in ``sync_after_promote``.
* demote (planned switchover): ``pg_ctl stop -m fast`` (a clean stop sends all WAL to the
  standbys first), then standby.signal and a ``primary_conninfo`` listing every peer with
  ``target_session_attrs=read-write``, so the WAL receiver follows whichever peer becomes
  primary; start.
* rejoin(primary): stop if running, CHECKPOINT on the named primary (see ``_checkpoint``),
  ``pg_rewind`` from it, standby config with that primary first, start.
* sync_degrade(lost) (policy.sync_loss = degrade, on the primary): the names in
  ``synchronous_standby_names`` whose standby still streams, and is not one the appliance saw
  die (its sender notices only after wal_sender_timeout), are kept; if none does, one other
  streaming standby with nothing left to flush is named; if there is none either, the setting
  is emptied and commits stop waiting (ALTER SYSTEM, reload). Every one kept or named must
  confirm, so no commit is acknowledged by fewer machines than the new setting says.
* sync_restore(standbys): those standbys are named again beside the ones named now (all must
  confirm), once the appliance has seen them caught up.
* rebuild(primary): when pg_rewind cannot help (the old primary's data diverged past what
  rewind can undo, WAL gone, a damaged cluster): stop, move the data directory aside to
  ``PGDATA.before-rebuild`` (the previous one of those is removed: one copy kept for a
  post-mortem), ``pg_basebackup --progress`` from the primary with its progress as lines,
  standby config, start.
* self_fence (an isolated primary's agent): ``pg_ctl stop -m immediate``: no new
  transaction and no commit acknowledged after it; the crash recovery at the next start
  is what a power cut would have cost anyway.

Commands needing the data directory run as ``os_user`` (runuser when the agent is root),
each with ``timeout`` seconds.

Two layouts:

* Debian's (``cluster = "15/main"``): a cluster made by ``pg_createcluster``, started and
  stopped with ``pg_ctlcluster``, its configuration in ``/etc/postgresql/15/main`` and its
  data directory where that configuration's ``data_directory`` says. ``pg_rewind`` is given
  the configuration file (``--config-file``), since it is not in the data directory.
* A plain data directory (``pgdata``, ``bindir``), driven with ``pg_ctl``.
"""
from __future__ import annotations

import os
import pwd
import re
import select
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from firmware.errors import ActionError, ConfigError
from firmware.subproc import run_bounded, run_checked
from firmware.waiting import wait_until
from host_tools.replication import Health, ReplicationStatus

DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"
WRITABLE_LOOK_S = 0.01  # after pg_promote; at 2 ms the looking itself slowed the promotion on a loaded
# machine (five rig runs each, alternating, load 5: fence to writes 0.141 s median at 2 ms, 0.113 s at 10 ms)

_PRIMARY_SQL = """
SELECT r.application_name, r.state, r.sync_state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.flush_lsn)::bigint,
       extract(epoch FROM r.replay_lag)::float8,
       pg_wal_lsn_diff(r.flush_lsn, '0/0')::bigint,
       current_setting('synchronous_standby_names'), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
FROM (SELECT 1) AS one LEFT JOIN pg_stat_replication AS r ON true
"""
SYNC_SETTLE_S = 1.0  # a changed synchronous_standby_names reaches every backend and WAL sender well within this

_STANDBY_SQL = """
SELECT r.status,
       extract(epoch FROM clock_timestamp() - r.last_msg_receipt_time)::float8,
       greatest(0, pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()))::bigint,
       CASE WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0.0
            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 END,
       current_setting('synchronous_standby_names'), current_setting('cluster_name'),
       pg_is_wal_replay_paused()
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true
"""


@dataclass(frozen=True)
class PgSettings:
    """The [replication] table of an agent whose server runs PostgreSQL."""

    host: str = "/var/run/postgresql"  # a socket directory or a host name
    port: int = 5432
    user: str = "postgres"
    dbname: str = "postgres"
    connect_timeout: int = 2
    cluster: str = ""  # Debian's "VERSION/NAME" (pg_lsclusters); then pgdata and bindir follow from it
    pgdata: str = ""
    bindir: str = DEFAULT_BINDIR
    etc_dir: str = "/etc/postgresql"  # where Debian keeps each cluster's configuration
    os_user: str = "postgres"
    log_file: str = ""  # pg_ctl's log; default: postgresql.log beside the data directory
    application_name: str = ""  # default for status: the server's cluster_name; demote/rejoin need it
    peers: dict[str, str] = field(default_factory=dict)  # server name -> "host:port"
    replication_user: str = "postgres"
    peer_timeout: float = 3.0
    sync_after_promote: tuple[str, ...] = ()
    timeout: float = 60.0

    def conninfo(self) -> str:
        return (f"host={self.host} port={self.port} user={self.user} dbname={self.dbname} "
                f"connect_timeout={self.connect_timeout} application_name=arbiter-agent")


_BOUNDS: dict[str, tuple[type, float, float]] = {
    "port": (int, 1, 65535), "connect_timeout": (int, 1, 60), "peer_timeout": (float, 0.5, 600.0),
    "timeout": (float, 1.0, 3600.0),
}
_TEXT = ("host", "user", "dbname", "cluster", "pgdata", "bindir", "etc_dir", "os_user", "log_file",
         "application_name", "replication_user")


def parse_settings(table: dict[str, Any]) -> PgSettings:
    """Every bad key is named with its value and bound; nothing falls back silently."""
    known = {"adapter", "peers", "sync_after_promote", *_BOUNDS, *_TEXT}
    problems = [f"replication.{k}: unknown key (known: {', '.join(sorted(known))})"
                for k in sorted(set(table) - known)]
    values: dict[str, Any] = {}
    for key, (kind, lo, hi) in _BOUNDS.items():
        if key in table:
            v = table[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) \
                    or not lo <= v <= hi:
                problems.append(f"replication.{key} = {v!r}: must be {'an integer' if kind is int else 'a number'}"
                                f" from {lo:g} to {hi:g}")
            else:
                values[key] = kind(v)
    for key in _TEXT:
        if key in table:
            if not isinstance(table[key], str):
                problems.append(f"replication.{key} = {table[key]!r}: must be a string")
            else:
                values[key] = table[key]
    problems += _peer_problems(table.get("peers", {}), table.get("sync_after_promote", []))
    problems += _cluster_problems(values)
    if problems:
        raise ConfigError(problems)
    if values.get("cluster"):
        values.setdefault("bindir", f"/usr/lib/postgresql/{values['cluster'].split('/')[0]}/bin")
    return PgSettings(**values, peers=dict(table.get("peers", {})),
                      sync_after_promote=tuple(table.get("sync_after_promote", [])))


def _cluster_problems(values: dict[str, Any]) -> list[str]:
    cluster = values.get("cluster", "")
    if not cluster:
        return []
    if not re.fullmatch(r"\d+/[A-Za-z0-9_.-]+", cluster):
        return [f"replication.cluster = {cluster!r}: must be Debian's VERSION/NAME, as pg_lsclusters lists it "
                "(for example \"15/main\")"]
    if values.get("pgdata"):
        return [f"replication.pgdata = {values['pgdata']!r}: leave it out with replication.cluster = {cluster!r} "
                "(the data directory is the cluster's data_directory)"]
    return []


def debian_data_directory(conf: Path) -> str:
    """The ``data_directory`` a Debian cluster's postgresql.conf names (pg_createcluster always
    writes one)."""
    try:
        text = conf.read_text()
    except OSError as exc:
        raise ActionError(f"replication.cluster: cannot read {conf}: {exc.strerror}") from exc
    m = re.search(r"^\s*data_directory\s*=?\s*'([^']*)'", text, flags=re.MULTILINE)
    if not m:
        raise ActionError(f"replication.cluster: {conf} names no data_directory")
    return m.group(1)


def _peer_problems(peers: object, sync: object) -> list[str]:
    problems = []
    if not isinstance(peers, dict) or not all(
            isinstance(v, str) and re.fullmatch(r"[^\s:]+:\d{1,5}", v) for v in peers.values()):
        problems.append(f"replication.peers = {peers!r}: must map server names to \"host:port\"")
    if not isinstance(sync, list) or not all(isinstance(s, str) and s for s in sync):
        problems.append(f"replication.sync_after_promote = {sync!r}: must be a list of application names")
    return problems


def parse_sync_names(value: str) -> tuple[int, tuple[str, ...]]:
    """``synchronous_standby_names`` as (how many must confirm, candidate names); '*' is kept."""
    text = value.strip()
    if not text:
        return 0, ()
    m = re.fullmatch(r"(?:(?:FIRST|ANY)\s+)?(\d+)\s*\((.*)\)", text, flags=re.IGNORECASE | re.DOTALL)
    num, body = (int(m.group(1)), m.group(2)) if m else (1, text)
    names = tuple(n.strip().strip('"') for n in body.split(",") if n.strip())
    return num, names


def standby_holds_every_ack(sync_names: str, name: str) -> bool | None:
    """Must every acknowledged commit be on standby ``name``? (see the module's notes)"""
    num, names = parse_sync_names(sync_names)
    if num == 0 or (name not in names and "*" not in names):
        return False
    if "*" in names or num < len(names):
        return None
    return True


class SyncHolders:
    """Which standbys hold every commit the primary acknowledges, from the primary's own
    setting and WAL positions, read at each status call.

    A standby named so that it must confirm every commit (``standby_holds_every_ack``) holds
    the commits acknowledged after it was named. Those acknowledged before were flushed here
    at a WAL position no later than the current one at the time it was named; a reload reaches
    each backend and WAL sender on its own time, so that position is taken ``settle`` seconds
    after the name was first seen (the "arm" position). Once the standby has flushed past it,
    it holds every acknowledged commit, and goes on holding them while it stays named: a
    standby that disconnects then makes commits wait, not go on without it. A name dropped
    from the setting starts afresh when it comes back; so does every name after the agent
    restarts (it cannot know what happened while it was not looking).
    """

    def __init__(self, settle: float = SYNC_SETTLE_S) -> None:
        self.settle = settle
        self.forget()

    def forget(self) -> None:
        """While this server is a standby: a later promotion starts afresh."""
        self._seen: dict[str, float] = {}  # name -> when first seen named
        self._arm: dict[str, int] = {}  # name -> WAL position it must flush past
        self._holding: set[str] = set()

    def update(self, sync_names: str, current_lsn: int, flushed: dict[str, int | None],
               now: float) -> tuple[str, ...]:
        """``flushed``: each connected standby's flush position (None: not known yet)."""
        named = {n for n in parse_sync_names(sync_names)[1]
                 if n != "*" and standby_holds_every_ack(sync_names, n) is True}
        for gone in set(self._seen) - named:
            self._seen.pop(gone)
            self._arm.pop(gone, None)
            self._holding.discard(gone)
        for name in named:
            first = self._seen.setdefault(name, now)
            if name not in self._arm and now - first >= self.settle:
                self._arm[name] = current_lsn
            flush = flushed.get(name)
            if name in self._arm and flush is not None and flush >= self._arm[name]:
                self._holding.add(name)
        return tuple(sorted(self._holding))


def cluster_state(controldata: str) -> str:
    """The "Database cluster state" line of pg_controldata's output ("" if it has none)."""
    for line in controldata.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Database cluster state":
            return value.strip()
    return ""


def as_os_user(user: str, argv: list[str], netns: str | None = None) -> list[str]:
    """Data-directory commands must not run as root; runuser is skipped when we already are ``user``."""
    cmd = argv if os.geteuid() == pwd.getpwnam(user).pw_uid else ["runuser", "-u", user, "--", *argv]
    return ["ip", "netns", "exec", netns, *cmd] if netns else cmd


def standby_conninfo(hosts: list[str], user: str, application_name: str) -> str:
    """One conninfo naming every candidate primary: libpq tries them in order and keeps the
    one that accepts writes, so a standby follows a failover without being reconfigured."""
    names = [h.rsplit(":", 1)[0] for h in hosts]
    ports = [h.rsplit(":", 1)[1] for h in hosts]
    return (f"host={','.join(names)} port={','.join(ports)} user={user} application_name={application_name} "
            "target_session_attrs=read-write connect_timeout=2 keepalives_idle=1 keepalives_interval=1 "
            "keepalives_count=3")


def write_standby_config(pgdata: Path, conninfo: str) -> None:
    """What ``pg_basebackup -R`` writes: standby.signal and primary_conninfo in postgresql.auto.conf,
    owned by the data directory's owner."""
    owner = pgdata.stat()
    auto = pgdata / "postgresql.auto.conf"
    lines = auto.read_text().splitlines() if auto.exists() else []
    kept = [ln for ln in lines if not ln.strip().startswith("primary_conninfo")]
    quoted = conninfo.replace("'", "''")
    auto.write_text("\n".join([*kept, f"primary_conninfo = '{quoted}'"]) + "\n")
    signal = pgdata / "standby.signal"
    signal.touch()
    for path in (auto, signal):
        os.chown(path, owner.st_uid, owner.st_gid)


class PostgresAdapter:
    """One connection, reused across status reads (the agent reads every few tens of ms) and
    guarded by a lock (status and actions run on different threads)."""

    def __init__(self, settings: PgSettings) -> None:
        self.s = settings
        self._conn: Any = None
        self._lock = threading.Lock()
        self._holders = SyncHolders()

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> PostgresAdapter:
        return cls(parse_settings(table))

    # ------------------------------------------------------------------ reading

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg2
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg2.connect(self.s.conninfo())
                    self._conn.autocommit = True
                with self._conn.cursor() as cur:
                    cur.execute(sql)
                    return cur.fetchall() if cur.description else []
            except psycopg2.Error:
                self._close()
                raise

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # a broken connection may fail to close; it is dropped either way
                pass
        self._conn = None

    def status(self) -> ReplicationStatus:
        import psycopg2
        try:
            if self._query("SELECT pg_is_in_recovery()")[0][0]:
                self._holders.forget()
                return self._standby_status()
            return self._primary_status()
        except psycopg2.Error as exc:
            return ReplicationStatus("unknown", detail=f"postgres at {self.s.host}:{self.s.port}: "
                                                       f"{_first_line(exc)}")

    def health(self, timeout: float) -> Health:
        import psycopg2
        where = f"postgres at {self.s.host}:{self.s.port}"
        deadline = time.monotonic() + timeout
        try:
            conn = psycopg2.connect(self.s.conninfo(), async_=True)
        except psycopg2.Error as exc:
            return Health(False, f"{where}: {_first_line(exc)}")
        try:
            wait_async(conn, deadline)
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                wait_async(conn, deadline)
                cur.fetchone()
            return Health(True)
        except TimeoutError:
            return Health(False, f"{where}: no answer to a new connection and SELECT 1 within"
                                 f" agent.health_timeout = {timeout:g} s (hung?)")
        except psycopg2.Error as exc:
            return Health(False, f"{where}: {_first_line(exc)}")
        finally:
            conn.close()

    def _primary_status(self) -> ReplicationStatus:
        all_rows = self._query(_PRIMARY_SQL)
        sync_names, current_lsn = all_rows[0][6], all_rows[0][7]
        rows = [r for r in all_rows if r[0] is not None]  # no standby connected: one row of NULLs
        streaming = [r for r in rows if r[1] == "streaming"]
        sync = [r for r in streaming if r[2] in ("sync", "quorum")]
        best = min(sync or streaming, key=lambda r: r[3] if r[3] is not None else 2 ** 62, default=None)
        holders = self._holders.update(sync_names, current_lsn, {r[0]: r[5] for r in rows}, time.monotonic())
        detail = ", ".join(f"{r[0]} {r[1]}/{r[2]}" for r in rows) or "no standby connected"
        return ReplicationStatus("primary", in_sync=bool(sync), lag_bytes=None if best is None else best[3],
                                 lag_s=None if best is None else (best[4] or 0.0), peer_alive=bool(streaming),
                                 detail=detail[:200], sync_standbys=holders)

    def _standby_status(self) -> ReplicationStatus:
        status, age, lag_bytes, lag_s, sync_names, cluster_name, paused = self._query(_STANDBY_SQL)[0]
        alive = status == "streaming" and age is not None and age < self.s.peer_timeout
        in_sync = standby_holds_every_ack(sync_names, self.s.application_name or cluster_name)
        detail = f"receiver {status or 'stopped'}" + (f", last heard {age:.1f} s ago" if age is not None else "")
        return ReplicationStatus("standby", in_sync=in_sync, lag_bytes=lag_bytes, lag_s=lag_s, peer_alive=alive,
                                 detail=detail + (", replay paused" if paused else ""))

    # ------------------------------------------------------------------ acting

    def promote(self) -> None:
        """pg_promote first; the new primary's synchronous_standby_names is written while the
        server ends its recovery (ALTER SYSTEM's fsync took 3 to 40 ms on the loaded rig, in
        the failover's way). Done when the server accepts writes and this session sees the
        new setting: the postmaster has reloaded it, so no client's commit waits for a
        standby that is this very server."""
        import psycopg2
        try:
            me = self.s.application_name or self._query("SHOW cluster_name")[0][0]
            want = self._sync_value_after_promote(me)
            if self._query("SELECT pg_is_in_recovery()")[0][0]:
                self._query("SELECT pg_promote(wait => false)")
            elif me not in parse_sync_names(self._query("SHOW synchronous_standby_names")[0][0])[1]:
                return  # promoted earlier, its setting made (and perhaps changed since by sync_degrade/restore)
            self._alter_sync_names(want)  # also after an agent restart between pg_promote and this
            done = wait_until(lambda: self._promoted(want), self.s.timeout, WRITABLE_LOOK_S)
        except psycopg2.Error as exc:
            raise ActionError(f"promote: postgres at {self.s.host}:{self.s.port}: {str(exc).strip()[:200]}") from exc
        if not done:
            raise ActionError(f"promote: still in recovery, or synchronous_standby_names not yet {want!r}, after"
                              f" replication.timeout = {self.s.timeout:g} s")

    def _promoted(self, want: str) -> bool:
        """Out of recovery, and the reload seen. pg_promote(wait => true) looks only every
        100 ms; this looks every WRITABLE_LOOK_S, one query on the open connection."""
        in_recovery, setting = self._query(
            "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')")[0]
        return not in_recovery and setting == want

    def _sync_value_after_promote(self, me: str) -> str:
        """ANY 1 of sync_after_promote other than this server, or empty: never this server itself."""
        others = [n for n in self.s.sync_after_promote if n != me]
        return f"ANY 1 ({', '.join(_quote_ident(n) for n in others)})" if others else ""

    def _alter_sync_names(self, value: str) -> None:
        """ALTER SYSTEM and a reload; the postmaster's reload reaches new sessions only."""
        self._query("ALTER SYSTEM SET synchronous_standby_names = '{}'".format(value.replace("'", "''")))
        self._query("SELECT pg_reload_conf()")

    def demote(self) -> None:
        if self._in_recovery() is True:
            return
        self._pg_ctl("stop", "-m", "fast")
        self._become_standby(list(self.s.peers))

    def rejoin(self, primary: str) -> None:
        if primary not in self.s.peers:
            raise ActionError(f"rejoin: primary {primary!r} is not in replication.peers "
                              f"({', '.join(sorted(self.s.peers)) or 'empty'})")
        if self._running():
            self._pg_ctl("stop", "-m", "fast")
        self._finish_crash_recovery()
        host, port = self.s.peers[primary].rsplit(":", 1)
        source = f"host={host} port={port} user={self.s.user} dbname={self.s.dbname} connect_timeout=2"
        _checkpoint(source, primary)
        argv = [f"{self.s.bindir}/pg_rewind", "-D", self._pgdata(), "--source-server", source]
        if self.s.cluster:  # the configuration is not in the data directory
            argv.append(f"--config-file={self._conf_dir() / 'postgresql.conf'}")
        self._run(argv, "pg_rewind")
        self._become_standby([primary, *[p for p in self.s.peers if p != primary]])

    # ------------------------------------------------------------------ losing and regaining sync

    def sync_degrade(self, lost: list[str]) -> str:
        import psycopg2
        try:
            before = self._query("SHOW synchronous_standby_names")[0][0]
            rows = self._query("SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::bigint"
                               " FROM pg_stat_replication WHERE state = 'streaming'")
            keep = degraded_names(before, {name: lag for name, lag in rows if name not in lost})
            self._set_sync_names(keep)
        except psycopg2.Error as exc:
            raise ActionError(f"sync_degrade: postgres at {self.s.host}:{self.s.port}: {str(exc).strip()[:200]}") from exc
        return f"synchronous_standby_names {before!r} -> {sync_value(keep)!r}"

    def sync_restore(self, standbys: list[str]) -> str:
        import psycopg2
        try:
            before = self._query("SHOW synchronous_standby_names")[0][0]
            names = [*parse_sync_names(before)[1], *standbys]
            self._set_sync_names(list(dict.fromkeys(n for n in names if n != "*")))
            after = self._query("SHOW synchronous_standby_names")[0][0]
        except psycopg2.Error as exc:
            raise ActionError(f"sync_restore: postgres at {self.s.host}:{self.s.port}: {str(exc).strip()[:200]}") from exc
        return f"synchronous_standby_names {before!r} -> {after!r}"

    def _set_sync_names(self, names: list[str]) -> None:
        self._alter_sync_names(sync_value(names))
        wait_until(lambda: self._fresh_setting() == sync_value(names), self.s.timeout, 0.01)

    def _fresh_setting(self) -> str:
        """The setting as a new session sees it: this one keeps the value it had at its start
        until it processes the reload signal."""
        with self._lock:
            self._close()
        return str(self._query("SHOW synchronous_standby_names")[0][0])

    # ------------------------------------------------------------------ rebuilding and self-fencing

    def rebuild(self, primary: str, progress: Callable[[str], None]) -> str:
        if primary not in self.s.peers:
            raise ActionError(f"rebuild: primary {primary!r} is not in replication.peers "
                              f"({', '.join(sorted(self.s.peers)) or 'empty'})")
        if self._in_recovery() is False:
            raise ActionError("rebuild: this server runs as a primary; refusing to overwrite it")
        if self._running():
            self._pg_ctl("stop", "-m", "fast")
        data = Path(self._pgdata())
        aside = data.with_name(data.name + ".before-rebuild")
        self._run(["rm", "-rf", str(aside)], "removing the previous copy set aside")
        self._run(["mv", str(data), str(aside)], f"moving {data} aside")
        host, port = self.s.peers[primary].rsplit(":", 1)
        started = time.monotonic()
        argv = [f"{self.s.bindir}/pg_basebackup", "-D", str(data), "-h", host, "-p", port, "-U",
                self.s.replication_user, "-X", "stream", "-c", "fast", "--progress"]
        run_with_progress(as_os_user(self.s.os_user, argv), "pg_basebackup", self.s.timeout * 10, progress)
        self._become_standby([primary, *[p for p in self.s.peers if p != primary]])
        return f"rebuilt from {primary} in {time.monotonic() - started:.1f} s; old data in {aside}"

    def self_fence(self, timeout: float) -> str:
        argv = [f"{self.s.bindir}/pg_ctl", "stop", "-D", self._pgdata(), "-m", "immediate", "-w", "-t",
                str(max(1, int(timeout)))]
        done = run_bounded(as_os_user(self.s.os_user, argv), timeout)
        if done.returncode != 0 and "Is server running?" in done.stderr:
            return "database already stopped"
        if done.returncode != 0:
            raise ActionError(f"pg_ctl stop -m immediate exit {done.returncode}: {done.stderr.strip()[-200:]}")
        with self._lock:
            self._close()
        return "database stopped (pg_ctl stop -m immediate)"

    def _finish_crash_recovery(self) -> None:
        """An old primary stopped in the middle of its crash recovery (its boot started the
        server, the rejoin stopped it) reads "shut down in recovery" and holds WAL it never
        replayed, past the new primary's fork. pg_rewind takes that state as a clean stop and
        looks no further than the last checkpoint: it may find nothing to rewind, and the
        server then cannot follow the new timeline. Single-user mode finishes the recovery and
        shuts down cleanly first, as pg_rewind itself does after an unclean stop. A standby
        (standby.signal) stopped that way is clean and left alone."""
        if (Path(self._pgdata()) / "standby.signal").exists() or self._cluster_state() != "shut down in recovery":
            return
        argv = [f"{self.s.bindir}/postgres", "--single", "-F", "-D", self._pgdata()]
        if self.s.cluster:  # the configuration is not in the data directory
            argv += ["-c", f"config_file={self._conf_dir() / 'postgresql.conf'}"]
        self._run([*argv, "template1"], "crash recovery before pg_rewind (postgres --single)")

    def _cluster_state(self) -> str:
        out = run_checked(as_os_user(self.s.os_user, [f"{self.s.bindir}/pg_controldata", "-D", self._pgdata()]),
                          "pg_controldata", self.s.timeout)
        return cluster_state(out)

    def _become_standby(self, order: list[str]) -> None:
        if not self.s.application_name:
            raise ActionError("replication.application_name is not set: a standby needs it to be named "
                              "in synchronous_standby_names")
        conninfo = standby_conninfo([self.s.peers[p] for p in order], self.s.replication_user,
                                   self.s.application_name)
        write_standby_config(Path(self._pgdata()), conninfo)
        self._pg_ctl("start")

    def _in_recovery(self) -> bool | None:
        import psycopg2
        try:
            return bool(self._query("SELECT pg_is_in_recovery()")[0][0])
        except psycopg2.Error:
            return None

    def _running(self) -> bool:
        done = run_bounded(as_os_user(self.s.os_user, [f"{self.s.bindir}/pg_ctl", "status", "-D", self._pgdata()]),
                           self.s.timeout)
        return done.returncode == 0

    def _conf_dir(self) -> Path:
        return Path(self.s.etc_dir) / self.s.cluster

    def _pgdata(self) -> str:
        if self.s.cluster:
            return debian_data_directory(self._conf_dir() / "postgresql.conf")
        if not self.s.pgdata:
            raise ActionError("replication.pgdata is not set: it is needed to stop, rewind and start the server "
                              "(or replication.cluster, for a cluster made by pg_createcluster)")
        return self.s.pgdata

    def _pg_ctl(self, *args: str) -> None:
        """pg_ctl, or for a Debian cluster pg_ctlcluster, which logs where the cluster's
        configuration says (/var/log/postgresql by default)."""
        if self.s.cluster:
            version, name = self.s.cluster.split("/", 1)
            log_file = self.s.log_file or f"/var/log/postgresql/postgresql-{version}-{name}.log"
            argv = ["pg_ctlcluster", version, name, *args, "--", "-w", "-t", str(int(self.s.timeout))]
        else:
            log_file = self.s.log_file or str(Path(self._pgdata()).parent / "postgresql.log")
            argv = [f"{self.s.bindir}/pg_ctl", *args, "-D", self._pgdata(), "-w", "-t", str(int(self.s.timeout))]
            if args[0] == "start":
                argv += ["-l", log_file]
        try:
            self._run(argv, f"pg_ctl {args[0]}")
        except ActionError as exc:
            if args[0] != "stop" or self._running():
                raise ActionError(f"{exc}; {log_file} ends: {_tail(log_file)}") from exc
            # it stopped on its own after the caller saw it run (a boot's recovery that failed): stopped, as asked
        with self._lock:
            self._close()

    def _run(self, argv: list[str], what: str) -> None:
        run_checked(as_os_user(self.s.os_user, argv), what, self.s.timeout + 5)


def wait_async(conn: Any, deadline: float, until: Callable[[], bool] = lambda: False) -> None:
    """Drive a non-blocking psycopg2 connection until its operation is done (or ``until()``
    holds, a step of it), or TimeoutError at the monotonic ``deadline`` (libpq's own
    connect_timeout counts whole seconds, at least 2)."""
    import psycopg2.extensions as ext
    while True:
        state = conn.poll()
        if state == ext.POLL_OK or until():
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        fd = conn.fileno()
        select.select([fd] if state == ext.POLL_READ else [], [fd] if state == ext.POLL_WRITE else [], [], left)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def sync_value(names: list[str]) -> str:
    """``synchronous_standby_names`` requiring every one of ``names`` to confirm."""
    quoted = ", ".join(_quote_ident(n) for n in names)
    return "" if not names else quoted if len(names) == 1 else f"FIRST {len(names)} ({quoted})"


def degraded_names(current: str, streaming: dict[str, int | None]) -> list[str]:
    """Who stays (or becomes) synchronous when a synchronous standby is lost: the named ones
    still streaming; else one streaming standby with nothing left to flush; else nobody."""
    named = [n for n in parse_sync_names(current)[1] if n in streaming]
    if named:
        return named
    caught_up = sorted(n for n, lag in streaming.items() if lag == 0)
    return caught_up[:1]


def run_with_progress(argv: list[str], what: str, timeout: float, progress: Callable[[str], None]) -> None:
    """Run a command whose stderr carries progress (pg_basebackup rewrites one line with \\r):
    each new line, at most one a second, goes to ``progress``; failure is an ActionError."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    last, tail, sent = 0.0, "", ""
    try:
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            tail = (tail + chunk.decode(errors="replace"))[-2000:]
            lines = [ln.strip() for ln in re.split(r"[\r\n]", tail) if ln.strip()]
            if lines and lines[-1] != sent and time.monotonic() - last >= 1.0:
                sent, last = lines[-1], time.monotonic()
                progress(f"{what}: {sent}")
        code = proc.wait()
    finally:
        killer.cancel()
    lines = [ln.strip() for ln in re.split(r"[\r\n]", tail) if ln.strip()]
    if lines and lines[-1] != sent:
        progress(f"{what}: {lines[-1]}")
    if code != 0:
        raise ActionError(f"{what} exit {code}: {tail.strip()[-300:]}")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _checkpoint(source: str, name: str) -> None:
    """A freshly promoted primary names its new timeline in pg_control only after its first
    checkpoint; before that pg_rewind sees one timeline and wrongly decides that no rewind is
    needed, and the rejoined server then refuses the new primary's WAL."""
    import psycopg2
    try:
        conn = psycopg2.connect(source)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CHECKPOINT")
        finally:
            conn.close()
    except psycopg2.Error as exc:
        raise ActionError(f"rejoin: CHECKPOINT on the new primary {name}: {str(exc).strip()[:200]}") from exc


def _tail(path: str, size: int = 400) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode(errors="replace").strip()
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"
