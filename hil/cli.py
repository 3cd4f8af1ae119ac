"""arbiter-hil: the hardware-in-the-loop rig's command line (root; builds network namespaces)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from hil.report import render
from hil.scenarios import SCENARIOS, run_scenario
from hil.site import cleanup_stale


def _workdir(args: argparse.Namespace, name: str) -> Path:
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="arbiter-hil-"))
    return base / f"{name}-{time.strftime('%H%M%S')}"


def _run(name: str, args: argparse.Namespace) -> int:
    workdir = _workdir(args, name)
    print(f"[rig] building a site for scenario {name} in {workdir} ...", file=sys.stderr, flush=True)
    report = run_scenario(name, workdir)
    if args.json:
        report.write(Path(args.json))
    print(render(report))
    print(f"[rig] logs: {workdir / 'logs'}", file=sys.stderr)
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arbiter-hil",
        description="Build a whole site (master, standby, arbiter, client) on this machine with network "
                    "namespaces, serial cables as pty pairs, real NUT, snmptrapd and PostgreSQL; inject "
                    "faults; report detection time, client-visible outage, lost transactions and alerts. "
                    "Needs root.")
    parser.add_argument("--workdir", help="where sites, logs and reports go (default: a new temp dir)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="build a site, cut the master's power, print the report")
    run = sub.add_parser("run", help="run one scenario")
    run.add_argument("scenario", choices=sorted(SCENARIOS))
    run.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    sub.add_parser("list", help="list the scenarios")
    bench = sub.add_parser("bench", help="power-loss outage: the arbiter's defaults side by side with keepalived")
    bench.add_argument("--runs", type=int, default=5, help="runs per contender (default %(default)s)")
    bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    sub.add_parser("cleanup", help="remove namespaces and processes left by a crashed run")
    args = parser.parse_args(argv)

    if args.command == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:<20} {s.about}")
        return 0
    if os.geteuid() != 0:
        print("arbiter-hil: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    cleanup_stale("ba")
    if args.command == "cleanup":
        return 0
    if args.command == "demo":
        args.json = None
        return _run("power-loss", args)
    if args.command == "run":
        return _run(args.scenario, args)
    from hil.bench import run_bench
    figures = run_bench(args.runs, _workdir(args, "bench"))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
