"""arbiterctl: the operator's command line, over arbiterd's root-only control socket.

An order (switchover, failover, maintenance, power-on, ack) is answered with the daemon's
verdict: what its decision core made of it, accepted or refused, and why.

Exit codes: 0 done or accepted, 1 refused (by the daemon, or not confirmed; with --wait:
not completed), 2 usage, 3 daemon not reachable or no verdict.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from collections.abc import Callable
from typing import Any

from firmware import add_version
from firmware import config as config_mod
from firmware.commands import Command, Name, sudo_user
from firmware.control import NotRunning, request
from firmware.status import CHECK_UNKNOWN, check
from firmware.errors import ConfigError

DEFAULT_SOCKET = "/run/arbiter/control.sock"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EPILOG = ("exit codes: 0 done or accepted, 1 refused (by the daemon, or not confirmed; with --wait: "
          "not completed), 2 usage, 3 daemon not reachable or no verdict")


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def render_status(st: dict[str, Any]) -> str:
    alarm = st.get("alarm", {})
    head = [
        f"site {st['site']}   phase {st['phase']} for {_duration(st.get('in_phase_s'))}   primary "
        f"{st.get('primary') or '-'}   mode {st['mode']}" + ("   MAINTENANCE" if st.get("maintenance") else ""),
        f"alarm {alarm.get('severity', '-')}{' (acknowledged)' if alarm.get('acked') else ''}"
        + (f"   hold-down {st['hold_down_remaining_s']:.0f} s" if st.get("hold_down_remaining_s") else "")
        + f"   failovers {st.get('failovers', 0)}   version {st.get('version', '-')}",
        f"why: {st.get('last_reason') or '-'}",
    ]
    last = st.get("last_failover")
    if last:
        steps = ", ".join(f"{label} {_fmt(last.get(key), ' s')}" for key, label in LAST_FAILOVER_STEPS)
        head.append(f"last {last.get('operation') or 'failover'}: {last.get('old') or '-'} -> "
                    f"{last.get('target') or '-'}{'' if last.get('completed') else ' (NOT completed)'}: {steps}")
    for r in st.get("running", []):
        head.append(f"running: {r['action']} for {r['elapsed_s']:.1f} s")
    cols = ("server", "role", "alive", "fenced", "power", "healthy", "serial", "lan", "in sync", "lag", "ups")
    rows = [cols]
    for s in st.get("servers", []):
        links = s["links"]
        rows.append((
            s["name"], s["role"], _fmt(s["alive"]), _fmt(s["fenced"]), _fmt(s["power_on"]), _fmt(s["healthy"]),
            _link(links.get("serial")), _link(links.get("lan")), _fmt(s["repl"]["in_sync"]),
            _fmt(s["repl"]["lag_bytes"], " B"), (s.get("ups") or {}).get("status", "-"),
        ))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(cols))]
    table = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    dropped = st.get("frames_dropped") or {}
    tail = [f"frames dropped: {', '.join(f'{k} {v}' for k, v in sorted(dropped.items()))}"] if dropped else []
    return "\n".join(head + [""] + table + tail)


LAST_FAILOVER_STEPS = (("detection_s", "detection"), ("fence_s", "fence"), ("promote_s", "promote"),
                       ("take_ip_s", "IP moved"), ("verify_s", "verified"), ("total_s", "total"))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def render_history(records: list[dict[str, Any]]) -> str:
    """One line a record: the wall-clock stamp, what it is, and its monotonic durations."""
    lines = []
    for r in records:
        kind = r.get("kind", "")
        if kind == "alert":
            where = "/".join(x for x in (r.get("server"), r.get("channel")) if x)
            what = f"{r.get('severity', '')} {r.get('event', '')}{f' [{where}]' if where else ''}: {r.get('text', '')}"
        elif kind == "phase":
            what = f"{r.get('from')} -> {r.get('to')} after {r.get('after_s')} s (primary {r.get('primary') or '-'}" \
                   f", target {r.get('target') or '-'})"
        elif kind == "order":
            op = r.get("operator") or {}
            who = f"uid {op.get('uid')}" + (f" via sudo from {op['sudo_user']}" if op.get("sudo_user") else "") + \
                (f", loginuid {op['loginuid']}" if op.get("loginuid") is not None else "")
            what = f"{r.get('cmd')}{' ' + r['server'] if r.get('server') else ''} by {who}: " \
                   f"{'accepted' if r.get('accepted') else 'REFUSED'}: {r.get('reason', '')}"
        elif kind == "result":
            what = f"{r.get('action')} {'ok' if r.get('ok') else 'FAILED'} in {_fmt(r.get('took_s'), ' s')}" \
                   f"{': ' + r['detail'] if r.get('detail') else ''}"
        elif kind == "failover":
            what = ", ".join(f"{label} {_fmt(r.get(key), ' s')}" for key, label in LAST_FAILOVER_STEPS)
        else:
            what = r.get("reason", "") or json.dumps(r)
        lines.append(f"{r.get('ts', '-'):<29} {kind:<9} {what}")
    return "\n".join(lines)


def parse_since(text: str, now: float) -> float:
    """``--since``: 90s, 15m, 2h, 1d back from now, or an ISO time (2026-12-01T02:00:00)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since {text!r}: give 90s, 15m, 2h, 1d or an ISO time") from None


def _link(link: dict[str, Any] | None) -> str:
    if not link or link["state"] == "absent":
        return "-"
    rtt = f" {link['rtt_ms']:.1f}ms" if link.get("rtt_ms") is not None else ""
    return f"{link['state']}{rtt}"


def _confirm(prompt: str, yes: bool) -> bool:
    if yes:
        print(f"arbiterctl: {prompt} (confirmed by --yes)", file=sys.stderr)
        return True
    if not sys.stdin.isatty():
        print("arbiterctl: not confirmed (no terminal); add --yes", file=sys.stderr)
        return False
    return input(f"{prompt} Type 'yes' to go on: ").strip() == "yes"


def _socket(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    if args.config:
        try:
            return config_mod.load(args.config).site.socket
        except ConfigError as exc:
            raise SystemExit(f"arbiterctl: {args.config}: {'; '.join(exc.problems)}") from exc
    return DEFAULT_SOCKET


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbiterctl", description="Operate the Billmaster Arbiter appliance (root).",
                                epilog=EPILOG)
    add_version(p)
    p.add_argument("--socket", help=f"control socket (default {DEFAULT_SOCKET}, or site.socket of --config)")
    p.add_argument("--config", help="read the socket path from this arbiterd config")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("status", help="servers, links, roles, replication, UPS, alarm, phase")
    s.add_argument("--json", action="store_true", help="print the daemon's raw answer")
    s.add_argument("--check", action="store_true", help="one line and a monitoring-plugin exit code: "
                                                         "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN")
    e = sub.add_parser("events", help="the newest events from the journal")
    e.add_argument("-n", type=int, default=20, help="how many (default %(default)s)")
    e.add_argument("--json", action="store_true")
    h = sub.add_parser("history", help="decisions, phase changes, orders, action results and alerts, oldest first")
    h.add_argument("-n", type=int, default=200, help="at most this many records (default %(default)s)")
    h.add_argument("--since", help="only records from then on: 90s, 15m, 2h, 1d ago, or an ISO time")
    h.add_argument("--json", action="store_true")
    w = sub.add_parser("why", help="the reason for the last decision")
    w.add_argument("--json", action="store_true")
    sw = sub.add_parser("switchover", help="planned, zero-loss: demote, wait for sync, promote, move the IP")
    sw.add_argument("--to", help="the standby to promote (default: the best in-sync one)")
    _wait_options(sw)
    f = sub.add_parser("failover", help="force a failover now: fences the primary; may LOSE DATA if the "
                                        "target is not in sync")
    f.add_argument("--to", required=True, help="the standby to promote")
    f.add_argument("--force", action="store_true", help="required: you accept possible data loss")
    f.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _wait_options(f)
    m = sub.add_parser("maintenance", help="on: observe only (decide and report, act on nothing); "
                                           "off: automatic again (also leaves a halt)")
    m.add_argument("state", choices=("on", "off"))
    sub.add_parser("ack", help="silence the alarm relay until something new happens")
    po = sub.add_parser("power-on", help="close a fenced server's power relay; it rejoins as a standby")
    po.add_argument("server")
    po.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rb = sub.add_parser("rebuild", help="copy a standby afresh from the primary (pg_basebackup), when it cannot"
                                        " rejoin; it becomes synchronous again once caught up")
    rb.add_argument("server")
    rb.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return p


def _wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="follow it to its end, a progress line a second; "
                                                         "exit 0 only if it completed")
    p.add_argument("--timeout", type=float, default=600.0, help="with --wait: give up after this many seconds "
                                                                 "(default %(default)g)")


def command_of(args: argparse.Namespace) -> Command | None:
    """The typed command the arguments ask for; None if the operator did not confirm."""
    name = Name(args.command)
    if name is Name.EVENTS:
        return Command(name, n=args.n)
    if name is Name.HISTORY:
        since = None if args.since is None else parse_since(args.since, time.time())
        return Command(name, n=args.n, since=since)
    if name is Name.SWITCHOVER:
        return Command(name, server=args.to, sudo_user=sudo_user())
    if name is Name.FAILOVER:
        if not args.force:
            print("arbiterctl: failover needs --force: it fences the primary and promotes "
                  f"{args.to} even if it lacks transactions. Use `switchover` for a planned change.",
                  file=sys.stderr)
            return None
        warning = (f"WARNING: this fences the primary and promotes {args.to}. Transactions the primary "
                   f"acknowledged but {args.to} has not received are LOST.")
        return Command(name, server=args.to, force=True, sudo_user=sudo_user()) if _confirm(warning, args.yes) \
            else None
    if name is Name.MAINTENANCE:
        return Command(name, on=args.state == "on", sudo_user=sudo_user())
    if name is Name.POWER_ON:
        ok = _confirm(f"Restore power to {args.server}? It was fenced; it will rejoin as a standby.", args.yes)
        return Command(name, server=args.server, sudo_user=sudo_user()) if ok else None
    if name is Name.REBUILD:
        ok = _confirm(f"Rebuild {args.server}? Its database is set aside and copied afresh from the primary.",
                      args.yes)
        return Command(name, server=args.server, sudo_user=sudo_user()) if ok else None
    return Command(name, sudo_user=sudo_user())


def follow(ask: Callable[[], dict[str, Any]], target: str | None, timeout: float,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """--wait: one progress line a second until the target is the primary in phase normal
    (0), the appliance halts (1), or the timeout passes (1)."""
    started = clock()
    while True:
        st = ask()
        elapsed = clock() - started
        running = ", ".join(f"{r['action']} {r['elapsed_s']:.1f} s" for r in st.get("running", []))
        print(f"[{elapsed:5.1f} s] phase {st['phase']}, primary {st.get('primary') or '-'}, target "
              f"{target or '-'}{f', running {running}' if running else ''}", flush=True)
        if st["phase"] == "normal" and target is not None and st.get("primary") == target:
            print(f"arbiterctl: completed: {target} is the primary")
            return EXIT_OK
        if st["phase"] == "halted":
            print(f"arbiterctl: not completed: the appliance halted: {st.get('last_reason') or '-'}",
                  file=sys.stderr)
            return EXIT_REFUSED
        if elapsed >= timeout:
            print(f"arbiterctl: not completed within --timeout {timeout:g} s", file=sys.stderr)
            return EXIT_REFUSED
        sleep(1.0)


def _check(sock: str) -> int:
    try:
        st = request(sock, Command(Name.STATUS).to_wire())
    except NotRunning as exc:
        print(f"ARBITER UNKNOWN - {exc}")
        return CHECK_UNKNOWN
    if not st.get("ok"):
        print(f"ARBITER UNKNOWN - {st.get('error', 'no status')}")
        return CHECK_UNKNOWN
    code, line = check(st)
    print(line)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cmd = command_of(args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if cmd is None:
        return EXIT_REFUSED
    sock = _socket(args)
    if getattr(args, "check", False):
        return _check(sock)
    try:
        answer = request(sock, cmd.to_wire())
        if getattr(args, "wait", False) and answer.get("accepted"):
            print(f"arbiterctl: accepted: {answer.get('reason', '')}")
            return follow(lambda: request(sock, Command(Name.STATUS).to_wire()), answer.get("target"),
                          args.timeout)
    except NotRunning as exc:
        print(f"arbiterctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if answer.get("accepted", answer.get("ok")) is None:
        print(f"arbiterctl: {answer.get('error', 'no verdict')}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        print(f"arbiterctl: refused: {answer.get('error', 'no reason given')}", file=sys.stderr)
        return EXIT_REFUSED
    if getattr(args, "json", False):
        print(json.dumps(answer, indent=2))
    elif args.command == "status":
        print(render_status(answer))
    elif args.command in ("events", "history"):
        print(render_history(answer[args.command]))
    elif args.command == "why":
        print(f"[{answer['phase']} for {_duration(answer['in_phase_s'])}, decided {answer['decided_s_ago']:.1f} s ago]"
              f" {answer['reason']}")
    else:
        print(f"arbiterctl: accepted: {answer.get('reason', '')}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
