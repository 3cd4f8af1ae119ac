"""A rogue host for the protocol scenarios, run inside a rig namespace: it records the
heartbeat traffic a host sends and receives (what a mirrored switch port shows), sends
frames from its own address or from any forged one (raw IP sockets), and floods a port.

    python -m hil.rogue sniff --out FILE [--port 5405]        (until SIGTERM)
    python -m hil.rogue send --plan FILE --out FILE [--listen 1.0]
    python -m hil.rogue flood --target IP:PORT --source IP:PORT ... --seconds S --out FILE

A plan is a JSON list of {"dst": [ip, port], "data": hex, "src": [ip, port] or null}; null
sends from the rogue's own socket, whose answers are counted: an answer means a receiver
accepted the frame.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800


def _stop(*_: Any) -> None:
    raise SystemExit(0)


def sniff(out: Path, port: int) -> None:
    """Every UDP datagram from or to ``port`` seen on any interface, one JSON line each."""
    signal.signal(signal.SIGTERM, _stop)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    with open(out, "a") as f:
        while True:
            frame = sock.recv(65535)
            if len(frame) < 14 + 20 + 8 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != socket.IPPROTO_UDP or len(ip) < ihl + 8:
                continue
            sport, dport, length = struct.unpack_from("!HHH", ip, ihl)
            if port not in (sport, dport):
                continue
            data = ip[ihl + 8:ihl + length]
            f.write(json.dumps({"src": [socket.inet_ntoa(ip[12:16]), sport],
                                "dst": [socket.inet_ntoa(ip[16:20]), dport], "data": data.hex()}) + "\n")
            f.flush()


def udp_packet(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bytes:
    """An IPv4 UDP packet with a source of our choosing (the kernel fills in the IP checksum
    and length; a UDP checksum of zero means none, as IPv4 allows)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    return ip + struct.pack("!HHHH", src[1], dst[1], 8 + len(data), 0) + data


def _raw_socket() -> socket.socket:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    return raw


def send(plan: list[dict[str, Any]], listen: float) -> dict[str, int]:
    raw, own = _raw_socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    own.bind(("0.0.0.0", 0))
    counts = {"sent_forged": 0, "sent_own": 0, "answered": 0}
    for item in plan:
        dst, data = (item["dst"][0], int(item["dst"][1])), bytes.fromhex(item["data"])
        if item.get("src"):
            raw.sendto(udp_packet((item["src"][0], int(item["src"][1])), dst, data), (dst[0], 0))
            counts["sent_forged"] += 1
        else:
            own.sendto(data, dst)
            counts["sent_own"] += 1
        time.sleep(0.002)
    own.settimeout(0.1)
    deadline = time.monotonic() + listen
    while time.monotonic() < deadline:
        try:
            own.recv(65535)
            counts["answered"] += 1
        except (TimeoutError, socket.timeout):
            continue
    return counts


def flood(target: tuple[str, int], sources: list[tuple[str, int]], seconds: float) -> dict[str, float]:
    """Well-formed version 2 frames with a wrong MAC, as fast as one core sends them, from
    each forged source in turn."""
    from firmware.protocol import Frame, Kind, encode

    raw = _raw_socket()
    packets = [udp_packet(src, target, encode(Frame(Kind.REPLY, "master", "arbiter", 1, i, {"re": i}),
                                              os.urandom(32)))
               for i, src in enumerate(sources * 64, start=1)]
    sent, errors, started = 0, 0, time.monotonic()
    end = started + seconds
    while time.monotonic() < end:
        for packet in packets:
            try:
                raw.sendto(packet, (target[0], 0))
                sent += 1
            except OSError:  # the socket buffer is full: the kernel drops, as a switch would
                errors += 1
    elapsed = time.monotonic() - started
    return {"sent": sent, "send_errors": errors, "seconds": round(elapsed, 2), "rate": round(sent / elapsed)}


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.rogue", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sniff")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--port", type=int, default=5405)
    p = sub.add_parser("send")
    p.add_argument("--plan", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--listen", type=float, default=1.0)
    p = sub.add_parser("flood")
    p.add_argument("--target", type=_addr, required=True)
    p.add_argument("--source", type=_addr, action="append", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "sniff":
        sniff(args.out, args.port)
    elif args.command == "send":
        args.out.write_text(json.dumps(send(json.loads(args.plan.read_text()), args.listen)))
    else:
        args.out.write_text(json.dumps(flood(args.target, args.source, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
