"""The rig's billing load: one INSERT per transaction through the virtual IP, the way a
billing front end writes, and a ledger of every transaction whose COMMIT returned.

The ledger is the customer's view: an id in it was acknowledged, so it must exist on
whichever server is primary afterwards. A commit that raised is not in the ledger (its
outcome is unknown to the client, as in production). A commit that returned with
PostgreSQL's warning that the wait for synchronous replication was cancelled is not
acknowledged either: the server says itself that it may not have been replicated.

The client bounds its waits on a dead server as a production front end does, at socket
level: a connection's TCP handshake gets ``connect_timeout`` seconds (0.25 s by default, as a
Java client's socket connect timeout; libpq's own connect_timeout counts whole seconds, at
least 2, for the whole start-up) and is then abandoned and tried again. On a LAN a live
server answers a SYN in well under a millisecond; a SYN sent to a fenced server's dark NIC
would otherwise wait for TCP's one-second retransmission, and go on waiting after the virtual
IP has moved. The rest of the start-up (authentication, a backend forked on a loaded server)
gets the statement bound. A statement in flight to a server that went dark is given up by
the DSN's socket options (tcp_user_timeout, keepalives), which take precedence over this
module's defaults. Transactions run in autocommit: each is one INSERT, whose completion is
its commit's acknowledgement.

The ledger is appended in memory and written with fsync every ``flush_every`` seconds and
at stop, so a killed load loses at most that much of its own record (never the server's).
Run as ``python -m hil.billing --dsn DSN --ledger FILE --rate HZ [--connect-timeout S]``
until SIGTERM; a summary (acked, errors, longest gap and when it ended) goes to the ledger's
name with .json.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from host_tools.replication.postgres import wait_async

NOT_REPLICATED = "might not have been replicated"
SESSION = ("-c synchronous_commit=on -c statement_timeout=10000")
KEEPALIVE = "keepalives_idle=1 keepalives_interval=1 keepalives_count=2 tcp_user_timeout=3000"
CONNECT_TIMEOUT_S = 0.25
HANDSHAKE = 2  # libpq's CONNECTION_STARTED: waiting for the TCP handshake
STATEMENT_WAIT_S = 11.0  # past the session's statement_timeout: the server gives up first


@dataclass(frozen=True)
class LoadSummary:
    acked: int
    uncertain: int  # commits that raised, or returned with the not-replicated warning
    errors: int
    longest_gap_s: float  # longest time between two acknowledged commits (the outage seen)
    ran_s: float
    longest_gap_end: float | None = None  # monotonic time of the commit that ended it


class BillingLoad:
    def __init__(self, dsn: str, ledger: Path, rate_hz: float, flush_every: float = 0.2,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        if not 0 < rate_hz <= 10_000:
            raise ValueError(f"rate_hz = {rate_hz!r}: must be above 0 and at most 10000")
        if not 0 < connect_timeout <= 60:
            raise ValueError(f"connect_timeout = {connect_timeout!r}: must be above 0 and at most 60 s")
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.ledger = ledger
        self.interval = 1.0 / rate_hz
        self.flush_every = flush_every
        self.prefix = secrets.token_hex(4)
        self._pending: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._acked = self._uncertain = self._errors = 0
        self._longest = 0.0
        self._longest_end: float | None = None
        self._last_ack: float | None = None
        self._started = 0.0

    # ------------------------------------------------------------------ running

    def start(self) -> BillingLoad:
        self._thread = threading.Thread(target=self.run, name="billing-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> LoadSummary:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        return self.summary()

    def run(self) -> None:
        self._started = time.monotonic()
        last_flush = self._started
        seq = 0
        next_at = self._started
        try:
            while not self._stop.is_set():
                seq += 1
                self._one(f"{self.prefix}-{seq}")
                now = time.monotonic()
                if now - last_flush >= self.flush_every:
                    self._flush()
                    last_flush = now
                next_at = max(next_at + self.interval, now - 1.0)  # no burst after an outage
                self._stop.wait(max(0.0, next_at - now))
        finally:
            self._flush()
            self._disconnect()

    def _one(self, tx_id: str) -> None:
        import psycopg2
        try:
            conn = self._connect()
            del conn.notices[:]
            with conn.cursor() as cur:
                cur.execute("INSERT INTO billing (id, amount_cents) VALUES (%s, %s)", (tx_id, len(tx_id)))
                wait_async(conn, time.monotonic() + STATEMENT_WAIT_S)
        except (psycopg2.Error, TimeoutError):
            self._errors += 1
            self._uncertain += 1
            self._disconnect()
            self._stop.wait(0.05)
            return
        if any(NOT_REPLICATED in n for n in conn.notices):
            self._uncertain += 1
            return
        self._ack(tx_id)

    def _ack(self, tx_id: str) -> None:
        now = time.monotonic()
        gap = now - (self._last_ack if self._last_ack is not None else self._started)
        if gap > self._longest:
            self._longest, self._longest_end = gap, now
        self._last_ack = now
        self._acked += 1
        self._pending.append(tx_id)

    def _connect(self) -> Any:
        import psycopg2
        if self._conn is None or self._conn.closed:
            conn = psycopg2.connect(f"{KEEPALIVE} {self.dsn}", options=SESSION, async_=True)  # the DSN's own win
            try:
                wait_async(conn, time.monotonic() + self.connect_timeout, lambda: conn.info.status != HANDSHAKE)
                wait_async(conn, time.monotonic() + STATEMENT_WAIT_S)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # the connection is being dropped because it broke
                pass
        self._conn = None

    def _flush(self) -> None:
        if not self._pending:
            return
        with self.ledger.open("a") as f:
            f.write("".join(f"{i}\n" for i in self._pending))
            f.flush()
            os.fsync(f.fileno())
        self._pending.clear()

    def summary(self) -> LoadSummary:
        ran = (time.monotonic() - self._started) if self._started else 0.0
        return LoadSummary(self._acked, self._uncertain, self._errors, round(self._longest, 4), round(ran, 3),
                           self._longest_end)

    # ------------------------------------------------------------------ checking

    def verify(self, dsn: str) -> tuple[int, int, list[str]]:
        self._flush()
        return verify(dsn, self.ledger)


def verify(dsn: str, ledger: Path) -> tuple[int, int, list[str]]:
    """(acknowledged, lost, lost ids): the ledger against the billing table behind ``dsn``."""
    import psycopg2
    ids = ledger.read_text().split() if ledger.exists() else []
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM billing WHERE id = ANY(%s)", (ids,))
            present = {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    lost = [i for i in ids if i not in present]
    return len(ids), len(lost), lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hil.billing", description="billing load with a ledger of acks")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--ledger", required=True, type=Path)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S,
                        help="seconds a connection's TCP handshake may take before it is abandoned and tried again")
    args = parser.parse_args(argv)
    load = BillingLoad(args.dsn, args.ledger, args.rate, connect_timeout=args.connect_timeout)
    signal.signal(signal.SIGTERM, lambda *_: load._stop.set())
    signal.signal(signal.SIGINT, lambda *_: load._stop.set())
    load.run()
    args.ledger.with_suffix(".json").write_text(json.dumps(asdict(load.summary())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
