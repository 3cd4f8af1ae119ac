"""The rig's billing load: one INSERT per transaction through the virtual IP, the way a
billing front end writes, and a ledger of every transaction whose COMMIT returned.

The ledger is the customer's view: an id in it was acknowledged, so it must exist on
whichever server is primary afterwards. A commit that raised is not in the ledger (its
outcome is unknown to the client, as in production). A commit that returned with
PostgreSQL's warning that the wait for synchronous replication was cancelled is not
acknowledged either: the server says itself that it may not have been replicated.

The ledger is appended in memory and written with fsync every ``flush_every`` seconds and
at stop, so a killed load loses at most that much of its own record (never the server's).
Run as ``python -m hil.billing --dsn DSN --ledger FILE --rate HZ`` until SIGTERM; a summary
(acked, errors, longest gap) goes to the ledger's name with .json.
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

NOT_REPLICATED = "might not have been replicated"
SESSION = ("-c synchronous_commit=on -c statement_timeout=10000")
KEEPALIVE = "keepalives_idle=1 keepalives_interval=1 keepalives_count=2 tcp_user_timeout=3000"


@dataclass(frozen=True)
class LoadSummary:
    acked: int
    uncertain: int  # commits that raised, or returned with the not-replicated warning
    errors: int
    longest_gap_s: float  # longest time between two acknowledged commits (the outage seen)
    ran_s: float


class BillingLoad:
    def __init__(self, dsn: str, ledger: Path, rate_hz: float, flush_every: float = 0.2) -> None:
        if not 0 < rate_hz <= 10_000:
            raise ValueError(f"rate_hz = {rate_hz!r}: must be above 0 and at most 10000")
        self.dsn = dsn
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
            with conn.cursor() as cur:
                cur.execute("INSERT INTO billing (id, amount_cents) VALUES (%s, %s)", (tx_id, len(tx_id)))
            del conn.notices[:]
            conn.commit()
        except psycopg2.Error:
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
        self._longest = max(self._longest, now - (self._last_ack if self._last_ack is not None else self._started))
        self._last_ack = now
        self._acked += 1
        self._pending.append(tx_id)

    def _connect(self) -> Any:
        import psycopg2
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(f"{self.dsn} {KEEPALIVE}", options=SESSION)
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
        return LoadSummary(self._acked, self._uncertain, self._errors, round(self._longest, 4), round(ran, 3))

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
    args = parser.parse_args(argv)
    load = BillingLoad(args.dsn, args.ledger, args.rate)
    signal.signal(signal.SIGTERM, lambda *_: load._stop.set())
    signal.signal(signal.SIGINT, lambda *_: load._stop.set())
    load.run()
    args.ledger.with_suffix(".json").write_text(json.dumps(asdict(load.summary())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
