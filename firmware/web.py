"""The read-only HTTP face of the appliance, off unless ``http.address`` is set.

``/health`` (200 or 503, for monitors and load balancers), ``/status`` (the JSON of
``arbiterctl status --json``), ``/metrics`` (Prometheus), ``/history`` (the newest journal
records) and ``/``, a status page that draws the site and refreshes itself. GET and HEAD
only; nothing secret is in any of them (no key, no community, no passphrase). The
standard library's threading server: one small thread per request, no framework.
"""
from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from firmware.metrics import CONTENT_TYPE, Metrics
from firmware.status import StatusView, health, status_report

log = logging.getLogger("arbiter.http")

HISTORY_ON_PAGE = 25
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"}


class StatusWeb:
    def __init__(self, address: str, port: int, view: Callable[[], StatusView], metrics: Metrics,
                 history: Callable[[int], list[dict[str, Any]]]) -> None:
        self.view = view
        self.metrics = metrics
        self.history = history
        self.page = resources.files("firmware").joinpath("static/status.html").read_bytes()
        server_class = _Server6 if ":" in address else _Server
        self.server = server_class((address, port), self._handler_class())
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()
        log.info("status page on http://%s:%d/", *self.server.server_address[:2])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        route = path.split("?", 1)[0].rstrip("/") or "/"
        if route == "/":
            return HTTPStatus.OK, "text/html; charset=utf-8", self.page
        if route == "/metrics":
            return HTTPStatus.OK, CONTENT_TYPE, self.metrics.render()
        if route == "/history":
            return _json(HTTPStatus.OK, {"history": self.history(HISTORY_ON_PAGE)})
        view = self.view()
        if route == "/status":
            return _json(HTTPStatus.OK, status_report(view))
        if route == "/health":
            ok, why = health(view)
            return _json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, {"healthy": ok, "why": why})
        return _json(HTTPStatus.NOT_FOUND, {"error": f"no such page {route!r}; try /, /health, /status, /metrics"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        web = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "arbiterd"
            sys_version = ""

            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                self._reply(with_body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._reply(with_body=False)

            def _reply(self, with_body: bool) -> None:
                try:
                    code, ctype, body = web.answer(self.path)
                except Exception:  # one bad request must not take the page down
                    log.exception("HTTP %s failed", self.path)
                    code, ctype, body = _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in _HEADERS.items():
                    self.send_header(name, value)
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("%s %s", self.address_string(), format % args)  # polled every second: not at info

        return Handler


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that left before its answer (a monitor's timeout ran out while the appliance
        stood still, then it answers a backlog) is routine: one debug line, not a traceback on
        stderr per request."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("HTTP client %s left before its answer (%s)", client_address[0], error)
        else:
            log.error("HTTP request from %s failed", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _json(code: int, data: dict[str, Any]) -> tuple[int, str, bytes]:
    return code, "application/json", json.dumps(data).encode()
