"""The client-visible outage probe.

``serve`` runs on every server: a UDP echo that answers with the host's name, bound to all
addresses so it answers on the virtual IP once that address is there. ``client`` runs in
the client's namespace and sends a numbered probe every interval (10 ms) to the virtual
IP; on SIGTERM it writes a JSON summary: probes sent and answered, every outage (no answer
for more than 3 intervals), the answering hosts in order, and split_brain (optional ARP
probes answered by two MACs, or answers flapping between hosts).

    python -m hil.probe serve --port 7007 --name master
    python -m hil.probe client --target 192.0.2.100 --port 7007 --interval 0.01 --out probe.json [--arp]
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

OUTAGE_INTERVALS = 3


def serve(port: int, name: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    tag = name.encode()
    while True:
        data, addr = sock.recvfrom(64)
        try:
            sock.sendto(data[:8] + tag, addr)
        except OSError:
            pass  # EPERM when netfilter drops the reply (the loss scenario): that probe is lost


def analyse(sent: list[float], answers: dict[int, tuple[float, str]], interval: float,
            arp: list[tuple[float, list[str]]] = ()) -> dict[str, Any]:
    """sent[i]: monotonic send time of probe i; answers[i]: (reply time, host)."""
    outages = []
    last_ok: float | None = None
    for i, t in enumerate(sent):
        if i in answers:
            if last_ok is not None and t - last_ok > OUTAGE_INTERVALS * interval:
                outages.append({"start": last_ok, "end": t, "duration": round(t - last_ok, 4)})
            last_ok = t
    if last_ok is not None and sent and sent[-1] - last_ok > OUTAGE_INTERVALS * interval:
        outages.append({"start": last_ok, "end": sent[-1], "duration": round(sent[-1] - last_ok, 4),
                        "open": True})
    hosts: list[dict[str, Any]] = []
    for i in sorted(answers):
        host = answers[i][1]
        if not hosts or hosts[-1]["host"] != host:
            hosts.append({"host": host, "from": sent[i]})
    flapping = len(hosts) > 2 and any(h["host"] == hosts[0]["host"] for h in hosts[2:])
    arp_split = [m for _, m in arp if len(m) > 1]
    return {
        "interval": interval, "sent": len(sent), "answered": len(answers),
        "outages": outages, "longest_outage": max((o["duration"] for o in outages), default=0.0),
        "hosts": hosts, "arp_multi": arp_split[:10],
        "split_brain": flapping or bool(arp_split),
    }


def _arp_watch(target: str, stop: threading.Event, out: list[tuple[float, list[str]]]) -> None:
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import srp
    request = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, pdst=target)
    while not stop.is_set():
        answered, _ = srp(request, iface="eth0", timeout=0.08, multi=True, verbose=False)
        out.append((time.monotonic(), sorted({r[ARP].hwsrc.lower() for _, r in answered})))
        stop.wait(0.1)


def client(target: str, port: int, interval: float, out: Path, arp: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    arp_seen: list[tuple[float, list[str]]] = []
    if arp:
        threading.Thread(target=_arp_watch, args=(target, stop, arp_seen), daemon=True).start()
    sent: list[float] = []
    answers: dict[int, tuple[float, str]] = {}
    next_t = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_t:
            try:
                sock.sendto(struct.pack(">Q", len(sent)), (target, port))
            except OSError:
                pass  # no route or ARP failure: counted as unanswered
            sent.append(now)
            next_t += interval
        while True:
            try:
                data = sock.recv(128)
            except (BlockingIOError, OSError):
                break
            if len(data) >= 8:
                seq = struct.unpack(">Q", data[:8])[0]
                if seq < len(sent) and seq not in answers:
                    answers[seq] = (time.monotonic(), data[8:].decode(errors="replace"))
        time.sleep(min(0.001, max(0.0, next_t - time.monotonic())))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(analyse(sent, answers, interval, arp_seen)))
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hil.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--interval", type=float, default=0.01)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--arp", action="store_true")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.name)
    else:
        client(args.target, args.port, args.interval, args.out, args.arp)


if __name__ == "__main__":
    main()
