"""A monitoring station on the rig's client host: polls the appliance's /health, /status,
/metrics and SNMP status objects (with net-snmp's snmpwalk), and watches the status page in
a headless chromium, and writes one JSON line each time what a source shows changes:
``{"t": monotonic, "source": ..., "value": ...}`` (the monotonic clock is the machine's, the
same in every namespace, so the scenario compares it with its own).

    python -m hil.monitor --http http://IP:8080 --snmp IP:1161 --community C --out FILE [--browser]
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.mib import DEFAULT_ENTERPRISE, status_oid

TIMEOUT_S = 0.5
_PRIMARY = re.compile(r'^arbiter_primary\{server="([^"]+)"\} 1\.0$', re.M)
_FAILOVERS = re.compile(r"^arbiter_failovers_total (\S+)$", re.M)

Read = Callable[[], dict[str, Any]]


def _get(url: str) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return None, b""


def metrics_values(code: int | None, body: bytes) -> dict[str, Any]:
    """The primary and failovers_total as /metrics exposes them; None for what it does not show."""
    text = body.decode(errors="replace") if code == 200 else ""
    primary, failovers = _PRIMARY.search(text), _FAILOVERS.search(text)
    return {"metrics": primary.group(1) if primary else None,
            "metrics_failovers": int(float(failovers.group(1))) if failovers else None}


def walk_values(stdout: str, enterprise_oid: str = DEFAULT_ENTERPRISE) -> dict[str, Any]:
    """arbPrimary and arbFailovers from ``snmpwalk -On`` output; None for what it does not show."""
    base = f".{status_oid(enterprise_oid)}"
    lines = {line.split(" = ", 1)[0]: line.split(" = ", 1)[1] for line in stdout.splitlines() if " = " in line}
    primary, failovers = lines.get(f"{base}.3.0", ""), lines.get(f"{base}.4.0", "")
    return {"snmpwalk": primary.split("STRING: ", 1)[1].strip('"') if primary.startswith("STRING: ") else None,
            "snmp_failovers": int(failovers.split(": ", 1)[1]) if failovers.startswith("Counter32: ") else None}


def sources(http: str, snmp: str, community: str, browser: Any) -> list[Read]:
    """One read per thing polled (each endpoint once, snmpwalk once, the page), each giving the
    values it shows by name."""
    def status() -> dict[str, Any]:
        code, body = _get(f"{http}/status")
        return {"status": json.loads(body).get("primary") if code == 200 else None}

    def walk() -> dict[str, Any]:
        done = subprocess.run(["snmpwalk", "-v2c", "-c", community, "-On", "-t", str(TIMEOUT_S), "-r", "0", snmp,
                               f".{status_oid(DEFAULT_ENTERPRISE)}"], capture_output=True, text=True, check=False)
        return walk_values(done.stdout)

    out: list[Read] = [lambda: {"health": _get(f"{http}/health")[0]}, status,
                       lambda: metrics_values(*_get(f"{http}/metrics")), walk]
    if browser is not None:
        out.append(lambda: {"page": browser.text("primary") or None, "page_failovers": browser.text("failovers")})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.monitor")
    p.add_argument("--http", required=True)
    p.add_argument("--snmp", required=True)
    p.add_argument("--community", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--browser", action="store_true", help="also watch the status page in chromium")
    p.add_argument("--screenshot", type=Path, help="with --browser: save the page here when stopped")
    p.add_argument("--interval", type=float, default=0.05, help="start a round of reads this often (s)")
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    browser = None
    if args.browser:
        from hil.browser import Browser
        browser = Browser()  # chromium's start, the heavy part: the rig may run it before the appliance's
        with open(args.out, "a") as out:
            out.write(json.dumps({"t": time.monotonic(), "source": "browser", "value": "ready"}) + "\n")
        while _get(f"{args.http}/health")[0] is None and not stop.wait(0.2):
            pass  # a page opened before the appliance answers would be chromium's error page
        browser.open(f"{args.http}/")
    seen: dict[str, Any] = {}
    reads = sources(args.http, args.snmp, args.community, browser)
    try:
        with open(args.out, "a") as out:
            next_round = time.monotonic()
            while not stop.is_set():
                next_round += args.interval
                for read in reads:
                    for name, value in read().items():
                        if name not in seen or seen[name] != value:
                            seen[name] = value
                            out.write(json.dumps({"t": time.monotonic(), "source": name, "value": value}) + "\n")
                            out.flush()
                stop.wait(max(0.0, next_round - time.monotonic()))  # a fixed rate, as a poller's schedule
        if browser is not None and args.screenshot is not None:
            browser.screenshot(args.screenshot)
    finally:
        if browser is not None:
            browser.close()
    return 0


def read_changes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def first_shown(changes: list[dict[str, Any]], source: str, value: Any, after: float) -> float | None:
    """When ``source`` first showed ``value`` at or after ``after``: ``after`` itself if it
    already showed it then, None if it never did."""
    mine = [c for c in changes if c["source"] == source]
    before = [c for c in mine if c["t"] < after]
    if before and before[-1]["value"] == value:
        return after
    return next((c["t"] for c in mine if c["t"] >= after and c["value"] == value), None)


def shown_between(changes: list[dict[str, Any]], source: str, start: float, end: float) -> set[Any]:
    """Every value ``source`` showed from ``start`` to ``end``: the one in effect at ``start``
    and each it changed to before ``end``."""
    mine = [c for c in changes if c["source"] == source]
    before = [c["value"] for c in mine if c["t"] < start]
    return set(before[-1:]) | {c["value"] for c in mine if start <= c["t"] < end}


if __name__ == "__main__":
    sys.exit(main())
