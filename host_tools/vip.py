"""Virtual IP takeover on a server: add the address (pyroute2, on one netlink socket kept from
start-up; idempotent), announce it with gratuitous ARPs (a raw packet socket,
firmware.arpcheck.Announcer), keep refreshing ARP caches for a while (stale caches after a split
are a known keepalived complaint), and release it on demote.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from firmware.arpcheck import Announcer
from firmware.errors import ActionError

log = logging.getLogger("arbiter.vip")

REFRESH_EVERY_S = 2.0
HELD_FRESH_S = 0.2  # the audit compares the flag every vip.audit_interval (1 s by default)

T = TypeVar("T")


class VipManager:
    def __init__(self, address: str, interface: str, garp_count: int = 5, garp_interval: float = 0.2,
                 refresh_s: float = 30.0, enter: Callable[[], object] = lambda: None) -> None:
        """``enter``: run first on the netlink thread (the agent's real-time priority)."""
        self.iface_addr = ipaddress.ip_interface(address)
        self.interface = interface
        self.garp_count, self.garp_interval, self.refresh_s = garp_count, garp_interval, refresh_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._announcer = Announcer(str(self.iface_addr.ip), interface)
        self._held_lock = threading.Lock()
        self._held, self._held_at, self._changes = False, -math.inf, 0
        self._ipr: IPRoute | None = None
        self._closed = False
        self._netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink", initializer=enter)
        self._netlink.submit(self._open).result()  # at start-up (see _on_link)

    def _index(self) -> int:
        """The interface's index as it is now, by one ioctl: pyroute2's link_lookup dumps every link."""
        try:
            return socket.if_nametoindex(self.interface)
        except OSError as exc:
            raise ActionError(f"vip.interface = {self.interface!r}: no such interface") from exc

    def held(self) -> bool:
        """Whether the interface has the address, read at most every HELD_FRESH_S: every reply
        to every poll carries it (50 a second on two links) and one read of the kernel's
        addresses costs ~1.4 ms (4.2 with a socket opened for it); taking or releasing the address
        here reads it afresh."""
        with self._held_lock:
            if time.monotonic() - self._held_at < HELD_FRESH_S:
                return self._held
            changes = self._changes
        value = self._read_held()
        with self._held_lock:
            if changes == self._changes:  # no take or release began meanwhile: the value holds
                self._held, self._held_at = value, time.monotonic()
        return value

    def _open(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    def _on_link(self, act: Callable[[IPRoute, int], T]) -> T:
        """``act`` with the kept netlink socket and the interface's index, looked up each time (an
        interface made again has a new one, and a stale index reads no address at all), on the
        one thread that opened the socket: pyroute2 keeps a socket's event loop for that thread
        only, and sets one up and tears it down for every call from any other. An address
        change from a fresh thread, as each command runs (rig namespace, 100 alternating, load
        9): 5.4 ms median with a socket opened for it and a dump of every link for the index,
        2.3 ms with a kept socket, 1.6 ms on the socket's own thread. One call at a time."""
        if self._closed:
            raise ActionError(f"virtual IP {self.iface_addr}: the agent is stopping")
        index = self._index()
        return self._netlink.submit(self._act, act, index).result()

    def _act(self, act: Callable[[IPRoute, int], T], index: int) -> T:
        """On the netlink thread. A socket that failed is dropped, and the next call opens another."""
        ipr = self._open()
        try:
            return act(ipr, index)
        except (NetlinkError, ActionError):
            raise  # the kernel's answer: the socket is fine
        except Exception:  # the socket may be broken or hold a half-read answer: never reused
            ipr.close()
            self._ipr = None
            raise

    def _read_held(self) -> bool:
        ip = str(self.iface_addr.ip)
        return self._on_link(lambda ipr, idx: any(a.get_attr("IFA_ADDRESS") == ip for a in ipr.get_addr(index=idx)))

    def take(self) -> None:
        """Add the address and send the first gratuitous ARP before returning."""
        self._address("add", done_code=17)  # EEXIST: already held, which is what we want
        self._garp()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._announce, args=(self._stop,), name="garp", daemon=True)
        self._thread.start()

    def _garp(self) -> None:
        try:
            self._announcer.send()
        except OSError as exc:
            log.warning("gratuitous ARP on %s failed: %s", self.interface, exc)

    def _announce(self, stop: threading.Event) -> None:
        """The rest of the burst, then a refresh every few seconds until refresh_s is over."""
        for _ in range(self.garp_count - 1):
            if stop.wait(self.garp_interval):
                return
            self._garp()
        deadline = time.monotonic() + self.refresh_s
        while time.monotonic() < deadline and not stop.wait(REFRESH_EVERY_S):
            self._garp()

    def release(self) -> None:
        self._stop.set()
        self._address("del", done_code=99)  # EADDRNOTAVAIL: not held, which is what we want

    def _address(self, op: str, done_code: int) -> None:
        """Add or delete the address; the error that means "already so" is success (idempotent)."""
        def change(ipr: IPRoute, idx: int) -> None:
            try:
                ipr.addr(op, index=idx, address=str(self.iface_addr.ip), prefixlen=self.iface_addr.network.prefixlen)
            except NetlinkError as exc:
                if exc.code != done_code:
                    raise ActionError(f"cannot {op} {self.iface_addr} on {self.interface}: {exc}") from exc
        try:
            self._on_link(change)
        finally:
            with self._held_lock:  # whatever happened, the next held() reads the kernel again
                self._changes += 1
                self._held_at = -math.inf

    def close(self) -> None:
        self._stop.set()
        self._announcer.close()
        if not self._closed:
            self._closed = True
            self._netlink.submit(self._close_socket).result()
            self._netlink.shutdown()

    def _close_socket(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
