"""Watching each server's UPS through NUT's own client, PyNUTClient (not nut2, which imports
telnetlib, gone in Python 3.13).

``UpsWatch.poll`` never raises: an unreachable upsd, a stale or missing driver or a bad
answer becomes ``UpsObs(reachable=False, error=...)``, its own alert and never a failover.
(``firmware.ups_policy.ups_events`` turns two readings into events on real changes only.)
"""
from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Mapping

from PyNUTClient.PyNUT import PyNUTClient, PyNUTError

from firmware.errors import ActionError, ConfigError
from firmware.model import UpsObs

_SPEC = re.compile(r"^(?P<ups>[\w.-]+)@(?P<host>[\w.-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d{1,5}))?$")


def parse_spec(spec: str) -> tuple[str, str, int]:
    m = _SPEC.match(spec)
    if not m or not 1 <= int(m["port"] or 3493) <= 65535:
        raise ConfigError([f"servers[].ups = {spec!r}: must be ups@host[:port] (port 1..65535)"])
    return m["ups"], m["host"].strip("[]"), int(m["port"] or 3493)


RECV_BYTES = 4096  # PyNUTClient asks for 50 bytes a call: a LIST VAR answer took twenty system calls


class _Closing:
    """PyNUTClient reads with recv() in a loop and spins forever when upsd closes the
    connection (recv returns b""). This wrapper turns that into an error, and reads what has
    arrived in one call (PyNUTClient keeps what follows the line it wanted for the next read)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, n: int) -> bytes:
        data = self._sock.recv(max(n, RECV_BYTES))
        if not data:
            raise ConnectionError("upsd closed the connection")
        return data

    def __getattr__(self, name: str):  # send, close, ... go to the socket
        return getattr(self._sock, name)


def read_ups(spec: str, username: str = "", password: str = "", timeout: float = 2.0) -> UpsObs:
    """One reading on a connection of its own."""
    watch = UpsWatch({"": spec}, username, password, timeout)
    try:
        return watch.poll()[""]
    finally:
        watch.close()


def _client(host: str, port: int, username: str, password: str, timeout: float) -> PyNUTClient:
    client = PyNUTClient(host=host, port=port, login=username or None, password=password or None, timeout=timeout)
    client._PyNUTClient__srv_handler = _Closing(client._PyNUTClient__srv_handler)  # see _Closing
    return client


def cut_outlet(spec: str, command: str, username: str, password: str, timeout: float,
               sensed_off: Callable[[], bool] = lambda: False) -> str:
    """Fence level 2 (Pacemaker's fencing topology: the next device when one is not confirmed):
    ``command`` (load.off or outlet.N.load.off) on the server's UPS through upsd, then wait for
    the power to read off: the UPS's own readback (``ups.status`` OFF, or ``outlet.N.status``
    off) or ``sensed_off`` (the power-sense input). upsd answers OK once the command is handed
    to the driver, not once it is done, so only the readback confirms; ActionError otherwise."""
    ups, host, port = parse_spec(spec)
    deadline = time.monotonic() + timeout
    try:
        _client(host, port, username, password, timeout).RunUPSCommand(ups, command)
    except PyNUTError as exc:
        hint = " (fence.ups_username needs this instcmd in upsd.users)" if "ACCESS" in str(exc) else ""
        raise ActionError(f"level 2: {command} on {spec} refused: {_short(str(exc))}{hint}") from exc
    except (OSError, ConnectionError, ValueError, EOFError) as exc:
        raise ActionError(f"level 2: {command} on {spec}: upsd {host}:{port}: {exc.__class__.__name__}: {exc}") from exc
    outlet = command.rsplit(".load.off", 1)[0] if command.startswith("outlet.") else ""
    while time.monotonic() < deadline:
        if sensed_off():
            return f"{command} on {spec}; power-sense input reads off"
        readback = _readback(ups, host, port, username, password, max(0.1, deadline - time.monotonic()), outlet)
        if readback:
            return f"{command} on {spec}; {readback}"
        time.sleep(0.05)
    raise ActionError(f"level 2: {command} on {spec} accepted, but the power does not read off within"
                      f" timing.fence_timeout = {timeout:g} s")


def _readback(ups: str, host: str, port: int, username: str, password: str, timeout: float, outlet: str) -> str:
    """What the UPS says about the fenced load: empty while it still feeds it or cannot say."""
    try:
        values = {k.decode(): v.decode() for k, v in _client(host, port, username, password, timeout)
                  .GetUPSVars(ups).items()}
    except (PyNUTError, OSError, ConnectionError, ValueError, EOFError, UnicodeDecodeError):
        return ""
    if outlet and values.get(f"{outlet}.status", "").lower() == "off":
        return f"{outlet}.status reads off"
    if "OFF" in values.get("ups.status", "").split():
        return "ups.status reads OFF"
    return ""


def _short(text: str) -> str:
    text = text.strip()
    return {"ERR DRIVER-NOT-CONNECTED": "driver not connected", "ERR DATA-STALE": "data stale",
            "ERR UNKNOWN-UPS": "unknown UPS name", "ERR ACCESS-DENIED": "access denied (ups.username)"}.get(text, text)


def _parse_vars(spec: str, raw: Mapping[bytes, bytes]) -> UpsObs:
    try:
        values = {k.decode(): v.decode() for k, v in raw.items()}
        flags = frozenset(values["ups.status"].split())
        charge = float(values["battery.charge"]) if "battery.charge" in values else None
        runtime = float(values["battery.runtime"]) if "battery.runtime" in values else None
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        return UpsObs(spec, reachable=False, error=f"bad answer from upsd: {exc}")
    if not flags:
        return UpsObs(spec, reachable=False, error="empty ups.status")
    return UpsObs(spec, reachable=True, flags=flags, charge=charge, runtime_s=runtime)


class UpsWatch:
    """Reads every server's UPS on one connection per upsd, kept from poll to poll as upsmon
    keeps its own: a connection, a login and a LIST UPS for every reading cost the watch
    thread more than the reading did."""

    def __init__(self, specs: Mapping[str, str], username: str = "", password: str = "",
                 timeout: float = 2.0) -> None:
        for spec in specs.values():
            parse_spec(spec)
        self.specs = dict(specs)
        self.username, self.password, self.timeout = username, password, timeout
        self._sessions: dict[tuple[str, int], PyNUTClient] = {}

    def poll(self) -> dict[str, UpsObs]:
        """One reading per server; blocking, bounded by ``timeout`` per UPS (twice for a kept
        connection that turns out broken)."""
        return {server: self._read(spec) for server, spec in self.specs.items()}

    def close(self) -> None:
        for client in self._sessions.values():
            _hang_up(client)
        self._sessions.clear()

    def _read(self, spec: str) -> UpsObs:
        ups, host, port = parse_spec(spec)
        kept = self._sessions.pop((host, port), None)
        obs, client = self._ask(kept, spec, ups, host, port)
        if client is None and kept is not None:  # a kept connection may only have gone stale (upsd restarted)
            obs, client = self._ask(None, spec, ups, host, port)
        if client is not None:
            self._sessions[(host, port)] = client
        return obs

    def _ask(self, client: PyNUTClient | None, spec: str, ups: str, host: str,
             port: int) -> tuple[UpsObs, PyNUTClient | None]:
        """A reading, and the connection if it can serve the next one: after an error line
        from upsd it can; after a broken, timed-out or garbled exchange nobody knows where
        the stream stands, and it is closed."""
        try:
            if client is None:
                client = _client(host, port, self.username, self.password, self.timeout)
            return _parse_vars(spec, client.GetUPSVars(ups)), client
        except PyNUTError as exc:
            return UpsObs(spec, reachable=False, error=_short(str(exc))), client
        except (OSError, ConnectionError, socket.timeout) as exc:
            error = f"upsd {host}:{port}: {exc.__class__.__name__}: {exc}"
        except (ValueError, IndexError, AttributeError, EOFError) as exc:  # PyNUT chokes on a garbled answer
            error = f"bad answer from upsd {host}:{port}: {exc.__class__.__name__}"
        if client is not None:
            _hang_up(client)
        return UpsObs(spec, reachable=False, error=error), None


def _hang_up(client: PyNUTClient) -> None:
    try:
        client._PyNUTClient__srv_handler.close()  # see _client
    except OSError:
        pass
