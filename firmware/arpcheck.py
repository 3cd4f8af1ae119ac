"""The appliance's proof that the virtual IP moved: who answers ARP for it?

Exactly the new primary's MAC: taken over. None: not taken over. Two: split brain suspected.

A raw packet socket bound to the ARP ethertype, standard library only: the kernel hands it
ARP frames and nothing else, so a probe costs a few system calls. The audit runs every
second; a sniffer that dissects every frame on the LAN (heartbeats included) in each window
cost more CPU than the rest of the daemon, and scapy ~25 MiB of memory and a few hundred ms
of import. Everything this needs is loaded with the module, none of it inside a failover.
"""
from __future__ import annotations

import fcntl
import ipaddress
import select
import socket
import struct
import time

ETH_P_ARP = 0x0806
SIOCGIFADDR = 0x8915
BROADCAST = b"\xff" * 6
_ARP_HEAD = struct.Struct("!HHBBH")  # hardware type, protocol type, their lengths, operation
_WHO_HAS, _IS_AT = 1, 2
_ARP_AT = 14  # the ARP header follows the Ethernet header


def request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """A broadcast who-has for ``target_ip`` (Ethernet frame, 42 bytes)."""
    return (BROADCAST + src_mac + struct.pack("!H", ETH_P_ARP)
            + _ARP_HEAD.pack(1, 0x0800, 6, 4, _WHO_HAS) + src_mac + src_ip + b"\x00" * 6 + target_ip)


def answer_mac(frame: bytes, target_ip: bytes) -> str | None:
    """The sender MAC of an is-at for ``target_ip``, else None. A gratuitous announcement
    counts as an answer: whoever sends it claims the address."""
    if len(frame) < _ARP_AT + 28 or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op = _ARP_HEAD.unpack_from(frame, _ARP_AT)
    if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, _IS_AT) or frame[_ARP_AT + 14:_ARP_AT + 18] != target_ip:
        return None
    return frame[_ARP_AT + 8:_ARP_AT + 14].hex(":")


def _own_ipv4(interface: str) -> bytes:
    """The interface's address as the request's sender; none: 0.0.0.0, an ARP probe
    (RFC 5227), which hosts answer too."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            ifreq = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", interface.encode()[:15]))
        except OSError:
            return b"\x00" * 4
    return ifreq[20:24]


def probe(ip: str, interface: str, timeout: float = 0.3, count: int = 2) -> frozenset[str]:
    """MACs that answered any of ``count`` who-has rounds, each listening ``timeout`` s for
    every answer (a second MAC is the point of the check)."""
    target = ipaddress.IPv4Address(ip).packed
    macs: set[str] = set()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((interface, ETH_P_ARP))
        frame = request(sock.getsockname()[4], _own_ipv4(interface), target)
        for _ in range(count):
            sock.send(frame)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                data, addr = sock.recvfrom(1514)
                mac = None if addr[2] == socket.PACKET_OUTGOING else answer_mac(data, target)
                if mac is not None:
                    macs.add(mac)
    return frozenset(macs)
