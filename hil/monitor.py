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


def _get(url: str) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return None, b""


def sources(http: str, snmp: str, community: str, browser: Any) -> dict[str, Callable[[], Any]]:
    primary_oid = f".{status_oid(DEFAULT_ENTERPRISE)}.3.0"

    def status() -> Any:
        code, body = _get(f"{http}/status")
        return json.loads(body).get("primary") if code == 200 else None

    def metrics() -> Any:
        code, body = _get(f"{http}/metrics")
        found = _PRIMARY.search(body.decode(errors="replace")) if code == 200 else None
        return found.group(1) if found else None

    def walk() -> Any:
        done = subprocess.run(["snmpwalk", "-v2c", "-c", community, "-On", "-t", str(TIMEOUT_S), "-r", "0", snmp,
                               f".{status_oid(DEFAULT_ENTERPRISE)}"], capture_output=True, text=True, check=False)
        line = next((x for x in done.stdout.splitlines() if x.startswith(primary_oid + " ")), "")
        return line.split("STRING: ", 1)[1].strip('"') if "STRING: " in line else None

    out: dict[str, Callable[[], Any]] = {"health": lambda: _get(f"{http}/health")[0], "status": status,
                                         "metrics": metrics, "snmpwalk": walk}
    if browser is not None:
        out["page"] = lambda: browser.text("primary") or None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.monitor")
    p.add_argument("--http", required=True)
    p.add_argument("--snmp", required=True)
    p.add_argument("--community", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--browser", action="store_true", help="also watch the status page in chromium")
    p.add_argument("--screenshot", type=Path, help="with --browser: save the page here when stopped")
    p.add_argument("--interval", type=float, default=0.05)
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    browser = None
    if args.browser:
        from hil.browser import Browser
        browser = Browser()
        browser.open(f"{args.http}/")
    seen: dict[str, Any] = {}
    reads = sources(args.http, args.snmp, args.community, browser)
    try:
        with open(args.out, "a") as out:
            while not stop.is_set():
                for name, read in reads.items():
                    value = read()
                    if name not in seen or seen[name] != value:
                        seen[name] = value
                        out.write(json.dumps({"t": time.monotonic(), "source": name, "value": value}) + "\n")
                        out.flush()
                stop.wait(args.interval)
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


def shown_between(changes: list[dict[str, Any]], source: str, start: float, end: float) -> set[Any]:
    """Every value ``source`` showed from ``start`` to ``end``: the one in effect at ``start``
    and each it changed to before ``end``."""
    mine = [c for c in changes if c["source"] == source]
    before = [c["value"] for c in mine if c["t"] < start]
    return set(before[-1:]) | {c["value"] for c in mine if start <= c["t"] < end}


if __name__ == "__main__":
    sys.exit(main())
