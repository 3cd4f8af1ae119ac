"""The rig's billing database: a real PostgreSQL 15 primary with a synchronous streaming
standby and any number of asynchronous ones, built from Debian's binaries as the postgres
user, on loopback (tests) or inside the rig's network namespaces.

Layout: ``workdir/NAME/data`` is a node's data directory, ``workdir/NAME/node.conf`` its own
settings (address, port, socket directory, cluster_name), included by a relative path from
postgresql.conf. The include stays right when pg_basebackup or pg_rewind copy postgresql.conf
from another node, which they do.

Durability: fsync stays on. A power cut is simulated by SIGKILL of every server process,
which does not lose the kernel's page cache, so fsync=off would not show up here; it is
kept on so that the timings are those of a real server. Every node's primary_conninfo names
all other nodes with target_session_attrs=read-write, so standbys follow a promotion by
themselves.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.lifecycle import Built
from host_tools.replication.postgres import (DEFAULT_BINDIR, as_os_user, standby_conninfo,
                                             write_standby_config)

OS_USER = "postgres"
BILLING_TABLE = ("CREATE TABLE IF NOT EXISTS billing (id text PRIMARY KEY, amount_cents bigint NOT NULL, "
                 "created timestamptz NOT NULL DEFAULT now())")

_CLUSTER_CONF = """
include_if_exists = '../node.conf'
wal_level = replica
wal_log_hints = on
max_wal_senders = 10
wal_keep_size = '256MB'
hot_standby = on
hot_standby_feedback = on
synchronous_commit = on
synchronous_standby_names = '{sync}'
wal_sender_timeout = '2s'
wal_receiver_timeout = '2s'
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '200ms'
shared_buffers = '32MB'
max_connections = 40
fsync = on
checkpoint_timeout = '5min'
log_min_messages = warning
"""

_HBA = """
local all all trust
local replication all trust
host all all samenet trust
host replication all samenet trust
host all all 127.0.0.0/8 trust
host replication all 127.0.0.0/8 trust
"""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    host: str  # the address the server listens on
    port: int
    netns: str | None
    role: str  # "primary", "sync" or "async"


class PgCluster(Built):
    def __init__(self, workdir: Path, nodes: list[NodeSpec], bindir: str = DEFAULT_BINDIR,
                 listen_all: bool = False, wal_segsize_mb: int | None = None) -> None:
        """``listen_all``: in the rig's namespaces every server listens on every address, so
        it answers on the virtual IP once it holds it; on loopback each keeps its own.
        ``wal_segsize_mb``: initdb's --wal-segsize (None: PostgreSQL's 16). A promotion copies the last WAL segment to
        the new timeline, all of it written and fsynced: with PostgreSQL's 16 MB that was ~50
        of the ~70 ms from pg_promote to accepting writes on the rig, with 1 MB ~20 ms."""
        self.listen_all = listen_all
        self.wal_segsize_mb = wal_segsize_mb
        roles = [n.role for n in nodes]
        if roles.count("primary") != 1 or any(r not in ("primary", "sync", "async") for r in roles):
            raise ValueError(f"nodes: need exactly one primary and sync/async standbys, got roles {roles}")
        self.workdir = workdir
        self.nodes = {n.name: n for n in nodes}
        self.bindir = bindir

    # ------------------------------------------------------------------ building

    def build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _let_os_user_through(self.workdir)
        primary = next(n for n in self.nodes.values() if n.role == "primary")
        self._prepare(primary)
        self._cmd(primary, [f"{self.bindir}/initdb", "-D", str(self.data(primary.name)), "-U", OS_USER,
                            "--data-checksums", "-A", "trust", "--no-sync",
                            *([f"--wal-segsize={self.wal_segsize_mb}"] if self.wal_segsize_mb else [])])
        sync = [n.name for n in self.nodes.values() if n.role == "sync"]
        with (self.data(primary.name) / "postgresql.conf").open("a") as conf:
            conf.write(_CLUSTER_CONF.format(sync=", ".join(f'"{s}"' for s in sync)))
        (self.data(primary.name) / "pg_hba.conf").write_text(_HBA)
        self.start(primary.name)
        # no synchronous standby exists yet: a synchronous commit here would wait forever
        self.sql(primary.name, f"SET synchronous_commit = local; {BILLING_TABLE}")
        for node in self.nodes.values():
            if node.role != "primary":
                self._add_standby(node, primary)
        for node in self.nodes.values():
            if node.role != "primary":
                self.wait_streaming(primary.name, node.name)

    def _prepare(self, node: NodeSpec) -> None:
        home = self.workdir / node.name
        socket = home / "sock" / f".s.PGSQL.{node.port}"
        if len(str(socket)) > 107:
            raise RuntimeError(f"{node.name}: socket path {socket} is {len(str(socket))} bytes, over the 107 a Unix "
                               "socket allows; use a shorter work directory")
        home.mkdir(exist_ok=True)
        (home / "sock").mkdir(exist_ok=True)
        (home / "node.conf").write_text(
            f"listen_addresses = '{'*' if self.listen_all else node.host}'\nport = {node.port}\n"
            f"unix_socket_directories = '{home / 'sock'}'\ncluster_name = '{node.name}'\n")
        subprocess.run(["chown", "-R", f"{OS_USER}:{OS_USER}", str(home)], check=True)

    def _add_standby(self, node: NodeSpec, primary: NodeSpec) -> None:
        self._prepare(node)
        self._cmd(node, [f"{self.bindir}/pg_basebackup", "-D", str(self.data(node.name)), "-h", primary.host,
                         "-p", str(primary.port), "-U", OS_USER, "-X", "stream", "-c", "fast", "--no-sync"])
        write_standby_config(self.data(node.name), self.conninfo_for(node.name, first=primary.name))
        self.start(node.name)

    def conninfo_for(self, name: str, first: str) -> str:
        order = [first] + [n for n in self.nodes if n not in (name, first)]
        return standby_conninfo([f"{self.nodes[n].host}:{self.nodes[n].port}" for n in order], OS_USER, name)

    # ------------------------------------------------------------------ paths and settings

    def data(self, name: str) -> Path:
        return self.workdir / name / "data"

    def socket_dir(self, name: str) -> Path:
        return self.workdir / name / "sock"

    def dsn(self, name: str, via_socket: bool = True) -> str:
        node = self.nodes[name]
        host = self.socket_dir(name) if via_socket else node.host
        return f"host={host} port={node.port} user={OS_USER} dbname=postgres connect_timeout=2"

    def adapter_settings(self, name: str) -> dict[str, Any]:
        """The agent's [replication] table for the server ``name`` (adapter key excluded)."""
        node = self.nodes[name]
        return {"host": str(self.socket_dir(name)), "port": node.port, "pgdata": str(self.data(name)),
                "bindir": self.bindir, "application_name": name, "connect_timeout": 2, "timeout": 60.0,
                "peers": {n.name: f"{n.host}:{n.port}" for n in self.nodes.values() if n.name != name}}

    # ------------------------------------------------------------------ running

    def _cmd(self, node: NodeSpec, argv: list[str], timeout: float = 120.0) -> str:
        done = subprocess.run(as_os_user(OS_USER, argv, node.netns), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{node.name}: {' '.join(argv[:2])}: exit {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done.stdout

    def start(self, name: str) -> None:
        """After a simulated power cut the killed postmaster can linger as a zombie, which
        PostgreSQL's lock checks (kill(pid, 0)) take for a running server; a reboot leaves no
        such process, so each lock file naming a dead or zombie process is removed first: the
        data directory's postmaster.pid and the socket's .lock, which names the postmaster too
        (left alone, the server refuses to start: "lock file ... already exists")."""
        node = self.nodes[name]
        for lock in (self.data(name) / "postmaster.pid", *self.socket_dir(name).glob(".s.PGSQL.*.lock")):
            try:
                if not _alive(int(lock.read_text().split("\n", 1)[0])):
                    lock.unlink()
            except (OSError, ValueError):
                pass
        self._cmd(node, [f"{self.bindir}/pg_ctl", "start", "-D", str(self.data(name)), "-w", "-t", "60",
                         "-l", str(self.workdir / name / "postgresql.log")])

    def stop(self, name: str, mode: str = "fast") -> None:
        if self.pid(name) is not None:
            self._cmd(self.nodes[name], [f"{self.bindir}/pg_ctl", "stop", "-D", str(self.data(name)), "-m", mode,
                                         "-w", "-t", "60"])

    def pid(self, name: str) -> int | None:
        """The running postmaster's pid, or None."""
        try:
            pid = int((self.data(name) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def kill(self, name: str) -> None:
        """Power loss: SIGKILL the postmaster and every one of its children at once.

        The stale postmaster.pid and socket lock are removed as a reboot would make them harmless: the dead
        postmaster can linger as a zombie whose pid still answers, and the server would refuse
        to start over a lock file whose owner looks alive. They are removed also when the
        postmaster is dead already: the rig's power cut kills every process of the host's
        namespace first, and leaving the files then made the next start fail now and then."""
        pid = self.pid(name)
        victims = [] if pid is None else [pid, *_children(pid)]
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in victims) and time.monotonic() < deadline:
            time.sleep(0.01)
        (self.data(name) / "postmaster.pid").unlink(missing_ok=True)
        for leftover in self.socket_dir(name).glob(".s.PGSQL.*"):  # /run is a tmpfs: a reboot empties it
            leftover.unlink(missing_ok=True)

    def freeze(self, name: str) -> int:
        """A hung database: the postmaster stops (SIGSTOP) and accepts no new connection, while
        its children (open sessions, WAL senders) go on. Returns the pid for ``thaw``."""
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"{name}: no postmaster to freeze")
        os.kill(pid, signal.SIGSTOP)
        return pid

    def thaw(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # fenced meanwhile: nothing left to wake

    def sql(self, name: str, query: str, timeout: float = 30.0) -> list[tuple[Any, ...]]:
        import psycopg2
        conn = psycopg2.connect(self.dsn(name))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"SET statement_timeout = {int(timeout * 1000)}")
                cur.execute(query)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        """Until the server accepts queries (a standby: read-only ones)."""
        import psycopg2
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sql(name, "SELECT 1")
                return
            except psycopg2.Error as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: not accepting queries within {timeout:g} s: {exc}") from exc
                time.sleep(0.05)

    def wait_streaming(self, primary: str, standby: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sql(primary, "SELECT state FROM pg_stat_replication WHERE application_name = "
                                     f"'{standby}'")
            if rows and rows[0][0] == "streaming":
                return
            time.sleep(0.05)
        raise TimeoutError(f"{standby}: not streaming from {primary} within {timeout:g} s")

    def close(self) -> None:
        for name in self.nodes:
            if self.pid(name) is not None:
                try:
                    self.stop(name, "immediate")
                except (RuntimeError, subprocess.TimeoutExpired):
                    self.kill(name)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _let_os_user_through(path: Path) -> None:
    """The postgres user must reach the data directories. Temp dirs are made 0700, so the
    execute bit for others is added to ``path`` and its ancestors inside the temp dir; any
    other ancestor it cannot pass is an error, never silently changed."""
    tmp = Path(tempfile.gettempdir()).resolve()
    for p in [path.resolve(), *path.resolve().parents]:
        mode = p.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        if p != tmp and tmp in p.parents:
            os.chmod(p, mode | stat.S_IXOTH)
        else:
            raise PermissionError(f"{p}: the {OS_USER} user cannot pass it (mode {oct(mode & 0o777)}); "
                                  "choose a work directory it can reach")
