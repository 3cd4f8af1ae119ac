"""The client-visible outage probe.

``serve`` runs on every server: a UDP echo that answers with the host's name, bound to all
addresses so it answers on the virtual IP once that address is there. ``client`` runs in the
client's namespace and sends a numbered probe every interval (10 ms) to the virtual IP; on
SIGTERM or SIGINT it writes a JSON summary (see ``analyse``). ``--arp`` adds an ARP who-has
for the virtual IP every 100 ms and records which MACs answer each one. ``ask`` sends one
probe and prints the host that answered (exit 1 if none did).

    python -m hil.probe serve --port 7007 --name master
    python -m hil.probe client --target 192.0.2.100 --port 7007 --interval 0.01 --out probe.json [--arp]
    python -m hil.probe ask --target 192.0.2.11 --port 7007 [--timeout 1]
"""
from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from firmware.state import write_atomic

OUTAGE_INTERVALS = 3  # a gap longer than this many intervals without an answer is an outage
REPLY_TIMEOUT = 0.05  # a later reply was queued somewhere (ARP resolution): not an answer
FLAP_WINDOW = 0.05  # two hosts answering this close after each other: both hold the address
FLAP_LIMIT = 1  # one close change is a fast switchover; more is flapping
EPS = 1e-6  # monotonic times are floats: a gap of exactly 3 intervals must not read as 3.0000001
ARP_INTERVAL = 0.1
ARP_WAIT = 0.08
SEQ = struct.Struct(">Q")


@dataclass(frozen=True)
class Record:
    """One probe: monotonic send time, monotonic time of its first reply and who sent it."""
    seq: int
    sent: float
    answered: float | None = None
    host: str | None = None


@dataclass(frozen=True)
class ArpRecord:
    """One ARP who-has for the virtual IP and the MACs that answered it."""
    at: float
    macs: tuple[str, ...]


def analyse(records: Sequence[Record], interval: float, arp: Sequence[ArpRecord] = (),
            timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """The JSON summary: a pure function of what the client saw, so every rule is unit tested.

    A probe counts as answered only if its reply came within ``timeout``. Outages are gaps
    between answered probes longer than OUTAGE_INTERVALS intervals, from the send time of
    the last answered probe to that of the next one (``open`` if none came, ``leading`` if
    nothing was answered before it). Split brain: any ARP probe answered by two MACs, or
    answers changing host within FLAP_WINDOW more than FLAP_LIMIT times.
    """
    ordered = sorted(records, key=lambda r: r.seq)
    ok = [r for r in ordered if _in_time(r, timeout)]
    outages = _outages(ordered, ok, interval)
    hosts = _host_runs(ok)
    close = _close_changes(ok)
    arp_multi = [a for a in arp if len(a.macs) > 1]
    why = ([f"{close} changes of answering host within {FLAP_WINDOW:g} s"] if close > FLAP_LIMIT else []) + \
          ([f"{len(arp_multi)} ARP probes answered by more than one MAC"] if arp_multi else [])
    return {
        "interval": interval, "timeout": timeout,
        "sent": len(ordered), "answered": len(ok),
        "late": sum(1 for r in ordered if r.answered is not None and not _in_time(r, timeout)),
        "first_sent": ordered[0].sent if ordered else None,
        "last_sent": ordered[-1].sent if ordered else None,
        "outages": outages,
        "longest_outage": max((o["duration"] for o in outages), default=0.0),
        "hosts": hosts, "host_changes": max(len(hosts) - 1, 0), "close_host_changes": close,
        "arp_probes": len(arp), "arp_macs": _mac_runs(arp),
        "arp_multi": [{"at": a.at, "macs": list(a.macs)} for a in arp_multi[:10]],
        "split_brain": bool(why), "split_brain_why": why,
    }


def _in_time(r: Record, timeout: float) -> bool:
    return r.answered is not None and r.answered - r.sent <= timeout + EPS


def _outages(ordered: list[Record], ok: list[Record], interval: float) -> list[dict[str, Any]]:
    limit = OUTAGE_INTERVALS * interval + EPS
    if not ordered:
        return []
    if not ok:
        return [_outage(ordered[0].sent, ordered[-1].sent, open_=True, leading=True)]
    found = []
    if ok[0].sent - ordered[0].sent > limit:
        found.append(_outage(ordered[0].sent, ok[0].sent, leading=True))
    found += [_outage(a.sent, b.sent) for a, b in pairwise(ok) if b.sent - a.sent > limit]
    if ordered[-1].sent - ok[-1].sent > limit:
        found.append(_outage(ok[-1].sent, ordered[-1].sent, open_=True))
    return found


def _outage(start: float, end: float, open_: bool = False, leading: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"start": start, "end": end, "duration": round(end - start, 4)}
    if open_:
        out["open"] = True
    if leading:
        out["leading"] = True
    return out


def _host_runs(ok: list[Record]) -> list[dict[str, Any]]:
    """Answering hosts in order, each with the send time of its first probe in the run."""
    runs: list[dict[str, Any]] = []
    for r in ok:
        if not runs or runs[-1]["host"] != r.host:
            runs.append({"host": r.host, "from": r.sent})
    return runs


def _close_changes(ok: list[Record]) -> int:
    return sum(1 for a, b in pairwise(ok) if a.host != b.host and b.sent - a.sent <= FLAP_WINDOW)


def _mac_runs(arp: Sequence[ArpRecord]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for a in arp:
        if a.macs and (not runs or runs[-1]["macs"] != list(a.macs)):
            runs.append({"macs": list(a.macs), "from": a.at})
    return runs


# ---------------------------------------------------------------------- the processes


def serve(port: int, name: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    tag = name.encode()
    while True:
        data, addr = sock.recvfrom(64)
        try:
            sock.sendto(data[:SEQ.size] + tag, addr)
        except OSError:
            pass  # EPERM when netfilter drops the reply (packet loss): that probe is lost


def ask(target: str, port: int, timeout: float) -> str | None:
    """One probe, one answer: who serves ``target`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(SEQ.pack(0), (target, port))
            return sock.recv(128)[SEQ.size:].decode(errors="replace")
        except OSError:
            return None


class _ArpWatch(threading.Thread):
    """ARP who-has on a fixed 100 ms grid. scapy is imported here only, and only its layer 2
    and send/receive modules, so the plain probe needs none of it."""

    def __init__(self, target: str, iface: str, stop: threading.Event) -> None:
        super().__init__(name="arp-watch", daemon=True)
        self.target, self.iface, self.stop = target, iface, stop
        self.records: list[ArpRecord] = []

    def run(self) -> None:
        from scapy.layers.l2 import ARP, Ether
        from scapy.sendrecv import srp
        request = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, pdst=self.target)
        next_t = time.monotonic()
        while not self.stop.is_set():
            at = time.monotonic()
            answered, _ = srp(request, iface=self.iface, timeout=ARP_WAIT, multi=True, verbose=False)
            self.records.append(ArpRecord(at, tuple(sorted({r[ARP].hwsrc.lower() for _, r in answered}))))
            next_t = max(next_t + ARP_INTERVAL, time.monotonic())
            self.stop.wait(next_t - time.monotonic())


class _Prober:
    """Sends on a fixed grid and never blocks on a reply: a lost one must not delay the next."""

    def __init__(self, target: str, port: int, interval: float) -> None:
        self.target, self.port, self.interval = target, port, interval
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sent: list[float] = []
        self.replies: dict[int, tuple[float, str]] = {}

    def run(self, stop: threading.Event) -> None:
        next_t = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_t:
                self._send()
                next_t = max(next_t + self.interval, now)  # after a stall: no burst of catch-ups
            readable, _, _ = select.select([self.sock], [], [], max(0.0, next_t - time.monotonic()))
            if readable:
                self._drain()

    def _send(self) -> None:
        seq = len(self.sent)
        self.sent.append(time.monotonic())
        try:
            self.sock.sendto(SEQ.pack(seq), (self.target, self.port))
        except OSError:
            pass  # no route, or netfilter: this probe goes unanswered

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(128)
            except OSError:
                return
            now = time.monotonic()
            if len(data) >= SEQ.size:
                seq = SEQ.unpack(data[:SEQ.size])[0]
                if seq < len(self.sent) and seq not in self.replies:
                    self.replies[seq] = (now, data[SEQ.size:].decode(errors="replace"))

    def records(self) -> list[Record]:
        return [Record(i, t, *self.replies.get(i, (None, None))) for i, t in enumerate(self.sent)]


def client(target: str, port: int, interval: float, out: Path, arp: bool,
           timeout: float = REPLY_TIMEOUT, iface: str = "eth0") -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watch = _ArpWatch(target, iface, stop) if arp else None
    if watch:
        watch.start()
    prober = _Prober(target, port, interval)
    prober.run(stop)
    if watch:
        watch.join(1.0)
    summary = analyse(prober.records(), interval, list(watch.records) if watch else [], timeout)
    write_atomic(out, json.dumps(summary, indent=1), durable=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="UDP echo that answers with this host's name")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    c = sub.add_parser("client", help="probe every interval until SIGTERM, then write JSON")
    c.add_argument("--target", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--interval", type=float, default=0.01)
    c.add_argument("--timeout", type=float, default=REPLY_TIMEOUT, help="a later reply does not count")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--arp", action="store_true", help="also ARP who-has every 100 ms (scapy)")
    c.add_argument("--iface", default="eth0")
    a = sub.add_parser("ask", help="one probe: print who answers, exit 1 if nobody")
    a.add_argument("--target", required=True)
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.name)
    elif args.command == "client":
        client(args.target, args.port, args.interval, args.out, args.arp, args.timeout, args.iface)
    else:
        host = ask(args.target, args.port, args.timeout)
        print(host or "")
        return 0 if host else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
