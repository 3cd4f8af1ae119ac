"""ARP on a raw packet socket: the appliance's proof that the virtual IP moved (who answers
ARP for it?), and the new holder's gratuitous announcement.

Exactly the new primary's MAC: taken over. None: not taken over. Two: split brain suspected.

A raw packet socket bound to the ARP ethertype, standard library only: the kernel hands it
ARP frames and nothing else, so a probe costs a few system calls. The audit runs every
second; a sniffer that dissects every frame on the LAN (heartbeats included) in each window
cost more CPU than the rest of the daemon, and scapy ~25 MiB of memory and a few hundred ms
of import. Everything this needs is loaded with the module, none of it inside a failover.
"""
from __future__ import annotations

import array
import fcntl
import ipaddress
import select
import socket
import struct
import threading
import time

ETH_P_ARP = 0x0806
SIOCGIFADDR = 0x8915
BROADCAST = b"\xff" * 6
_ARP_HEAD = struct.Struct("!HHBBH")  # hardware type, protocol type, their lengths, operation
_WHO_HAS, _IS_AT = 1, 2
_ARP_AT = 14  # the ARP header follows the Ethernet header
SO_ATTACH_FILTER = 26
_BPF_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jump if true, jump if false, k
_SOCK_FPROG = struct.Struct("HP")  # struct sock_fprog: length, then a pointer to the program
_BPF_LDH, _BPF_LDW, _BPF_JEQ, _BPF_RET = 0x28, 0x20, 0x15, 0x06  # ld{h,} [k]; jeq #k; ret #k


def _frame(op: int, src_mac: bytes, src_ip: bytes, target_mac: bytes, target_ip: bytes) -> bytes:
    """A broadcast Ethernet frame carrying one ARP packet (42 bytes)."""
    return (BROADCAST + src_mac + struct.pack("!H", ETH_P_ARP)
            + _ARP_HEAD.pack(1, 0x0800, 6, 4, op) + src_mac + src_ip + target_mac + target_ip)


def request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """A broadcast who-has for ``target_ip``."""
    return _frame(_WHO_HAS, src_mac, src_ip, b"\x00" * 6, target_ip)


def gratuitous(src_mac: bytes, ip: bytes) -> bytes:
    """A broadcast is-at for our own ``ip``: every host that caches the address takes the new MAC."""
    return _frame(_IS_AT, src_mac, ip, BROADCAST, ip)


def answers_filter(ip: bytes) -> bytes:
    """A classic BPF program (SO_ATTACH_FILTER) that lets through the is-at answers for ``ip``
    and nothing else: the ARP operation (offset 20) is 2 and the sender's address (28) is ``ip``.
    Every who-has broadcast on the LAN woke the audit otherwise (on the rig, the client's ten a
    second), to be read and dropped by answer_mac."""
    return b"".join(_BPF_INSN.pack(*insn) for insn in (
        (_BPF_LDH, 0, 0, _ARP_AT + 6), (_BPF_JEQ, 0, 3, _IS_AT),
        (_BPF_LDW, 0, 0, _ARP_AT + 14), (_BPF_JEQ, 0, 1, int.from_bytes(ip, "big")),
        (_BPF_RET, 0, 0, 0xFFFF), (_BPF_RET, 0, 0, 0)))


def _socket(interface: str, answers_for: bytes) -> socket.socket:
    """The is-at answers for one address on one interface only: the filter is attached before
    the bind (no protocol at creation: the socket receives nothing until then, and the kernel
    hooks it once, at bind, instead of on every interface first)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        program = array.array("B", answers_filter(answers_for))
        address, length = program.buffer_info()  # the kernel copies the program during the call
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _SOCK_FPROG.pack(length // _BPF_INSN.size, address))
        sock.bind((interface, ETH_P_ARP))
    except OSError:
        sock.close()
        raise
    return sock


class Announcer:
    """Gratuitous ARPs for one address from one interface's MAC, on a socket kept open: sending
    is a system call (scapy took ~30 ms to build and send one), but closing a packet socket
    waits for the kernel (~10 ms), which a takeover must not pay before it reports done."""

    def __init__(self, ip: str, interface: str) -> None:
        self.ip, self.interface = ipaddress.IPv4Address(ip).packed, interface
        self._sock: socket.socket | None = None
        self._frame = b""
        self._lock = threading.Lock()  # the takeover and the refresh thread both send

    def send(self) -> None:
        """One announcement; OSError if the interface cannot send (the socket is opened again
        next time, so an interface that comes back works again)."""
        with self._lock:
            self._send()

    def _send(self) -> None:
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # sends only: no receive hook
                self._sock.bind((self.interface, 0))
                self._frame = gratuitous(self._sock.getsockname()[4], self.ip)
            self._sock.send(self._frame)
        except OSError:
            self._close()
            raise

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


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
    with _socket(interface, target) as sock:
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
