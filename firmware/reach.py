"""Client-side reachability: one ICMP echo to each configured ping target (Heartbeat's ping
nodes, keepalived's track scripts), answered by any of them within a timeout.

Used by every server's agent and by the appliance: a primary that reaches none of the
targets while a standby does is cut off from its clients; nobody reaching them means the
network failed, not the primary. No ``ping`` binary is needed: an unprivileged ICMP socket
where ``net.ipv4.ping_group_range`` allows it, else a raw socket (root or CAP_NET_RAW).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Sequence

ECHO_REQUEST, ECHO_REPLY = 8, 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    body = b"arbiter-reach"
    head = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, _checksum(head + body), ident, seq) + body


def _open() -> tuple[socket.socket, bool]:
    """(socket, raw): the unprivileged kind first; a raw one delivers the IP header too."""
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), False
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT):
            raise
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), True


def reaches_any(targets: Sequence[str], timeout: float) -> bool:
    """True as soon as one target answers an echo; False if none does within ``timeout``.

    An error opening the socket (no permission) raises OSError: not reaching is a finding,
    not being able to look is not, and the caller must not confuse them."""
    wanted = {str(ipaddress.ip_address(t)) for t in targets}
    sock, raw = _open()
    try:
        ident = os.getpid() & 0xFFFF
        for seq, target in enumerate(sorted(wanted), start=1):
            try:
                sock.sendto(_echo(ident, seq), (target, 0))
            except OSError:
                continue  # no route to this one (our own link is down): it is simply not reached
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, (source, _port) = sock.recvfrom(2048)
            icmp = data[(data[0] & 0x0F) * 4:] if raw else data
            if len(icmp) >= 8 and icmp[0] == ECHO_REPLY and source in wanted and (
                    not raw or struct.unpack("!H", icmp[4:6])[0] == ident):
                return True
        return False
    finally:
        sock.close()
