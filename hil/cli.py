"""arbiter-hil: the hardware-in-the-loop rig's command line (root; builds network namespaces)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from firmware import add_version
from hil import bench as bench_mod
from hil.report import render
from hil.scenarios import SCENARIOS, run_scenario
from hil.keepalived import site_prefix
from hil.site import DEFAULT_PREFIX, check_prefix, cleanup_stale


def _workdir(args: argparse.Namespace, name: str) -> Path:
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="arbiter-hil-"))
    return base / f"{name}-{time.strftime('%H%M%S')}"


def _run(name: str, args: argparse.Namespace) -> int:
    workdir = _workdir(args, name)
    print(f"[rig] building a site for scenario {name} in {workdir} ...", file=sys.stderr, flush=True)
    report = run_scenario(name, workdir, prefix=args.prefix)
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
    add_version(parser)
    parser.add_argument("--workdir", help="where sites, logs and reports go (default: a new temp dir)")
    parser.add_argument("--prefix", type=_prefix, default=DEFAULT_PREFIX,
                        help="names the rig's network namespaces (PREFIX-master, ...), its serial cables' "
                             "run directory and its CPU-budget cgroup; a second rig with another prefix "
                             "runs beside the first (default %(default)s; cleanup removes only this prefix's)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="build a site, cut the master's power, print the report")
    run = sub.add_parser("run", help="run one scenario")
    run.add_argument("scenario", choices=sorted(SCENARIOS))
    run.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    sub.add_parser("list", help="list the scenarios")
    bench = sub.add_parser("bench", help="the arbiter's defaults side by side with keepalived: outage, soak, "
                                         "cost, a Pi-class CPU budget, endurance")
    bench.add_argument("--runs", type=_count, default=10, help="power-loss runs per contender (default %(default)s)")
    bench.add_argument("--soak-seconds", type=float, default=600.0,
                       help="soak length, the arbiter and keepalived each (default %(default)g)")
    bench.add_argument("--budget-soak-seconds", type=float, default=120.0,
                       help="soak length on a quarter of one core (default %(default)g)")
    bench.add_argument("--endurance", type=_count, default=0, metavar="N",
                       help="N failovers in a row on one site (default %(default)s: not run)")
    bench.add_argument("--cost-seconds", type=float, default=60.0,
                       help="how long the daemon's CPU time is measured, per site size and per half of "
                            "the monitored part (default %(default)g)")
    bench.add_argument("--parts", default="", help=f"comma-separated subset of {', '.join(bench_mod.PARTS)} (default: all; "
                                                   "endurance only with --endurance N)")
    bench.add_argument("--pg-wal-segsize", type=_segsize, default=None, metavar="MB",
                       help="the billing database's WAL segment size (initdb --wal-segsize: 1, 2, 4 ... 1024;"
                            " default PostgreSQL's 16): a promotion writes and fsyncs a whole segment")
    bench.add_argument("--json", metavar="FILE", default="reports/bench.json",
                       help="figures merged into this file, the plot beside it as .png (default %(default)s)")
    sub.add_parser("cleanup", help="remove namespaces and processes left by a crashed run")
    args = parser.parse_args(argv)

    if args.command == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:<20} {s.about}")
        return 0
    if os.geteuid() != 0:
        print("arbiter-hil: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    cleanup_stale(args.prefix)
    cleanup_stale(site_prefix(args.prefix))
    if args.command == "cleanup":
        return 0
    if args.command == "demo":
        args.json = None
        return _run("power-loss", args)
    if args.command == "run":
        return _run(args.scenario, args)
    return _bench(args)


def _bench(args: argparse.Namespace) -> int:
    parts = [p for p in args.parts.split(",") if p] or [p for p in bench_mod.PARTS if p != "endurance" or args.endurance]
    out = Path(args.json)
    figures = bench_mod.run_bench(parts, _workdir(args, "bench"), runs=args.runs, soak_s=args.soak_seconds,
                        budget_soak_s=args.budget_soak_seconds, endurance=args.endurance, cost_s=args.cost_seconds,
                        prefix=args.prefix, wal_segsize_mb=args.pg_wal_segsize)
    if out.exists():
        figures = bench_mod.merge(json.loads(out.read_text()), figures)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    bench_mod.plot(figures, out.with_suffix(".png"))
    print(bench_mod.render(figures))
    print(f"[bench] figures: {out}, plot: {out.with_suffix('.png')}", file=sys.stderr)
    return 0


def _segsize(text: str) -> int:
    """initdb accepts a power of two from 1 to 1024 (MB)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1024 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"{text!r}: a power of two from 1 to 1024 (MB), as initdb --wal-segsize")
    return value


def _prefix(text: str) -> str:
    """The rig's prefix, and keepalived's derived from it, must both be good names."""
    try:
        site_prefix(check_prefix(text))
        return text
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n}: must be 0 or more")
    return n


if __name__ == "__main__":
    sys.exit(main())
