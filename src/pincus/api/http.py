"""HTTP/1.1 over the daemon's unix socket, on the standard library's threaded server.

A control-plane daemon answers a handful of requests a second; threads keep a slow request
(instance stop, event stream) from blocking the others without an async stack.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import socketserver
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pincus.api import envelope
from pincus.errors import PincusError

log = logging.getLogger(__name__)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    handler: BaseHTTPRequestHandler
    params: dict[str, str] = field(default_factory=dict)

    @property
    def connection(self) -> socket.socket:
        conn = self.handler.connection
        assert isinstance(conn, socket.socket)
        return conn


@dataclass
class Stream:
    """A streaming response: each yielded dict is written as one JSON line until the generator ends."""

    lines: Iterator[dict[str, Any]]


@dataclass
class Raw:
    """The handler already wrote its own response on the connection."""


Handler = Callable[[Request], Any]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method, re.compile(regex), handler))

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for m, regex, handler in self._routes:
            match = regex.match(path)
            if match:
                if m == method:
                    return handler, {k: unquote(v) for k, v in match.groupdict().items()}
                allowed = True
        if allowed:
            raise _HTTPStatus(405, f"Method {method} not allowed on {path}")
        raise _HTTPStatus(404, "not found")


class _HTTPStatus(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def make_handler(router: Router) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pincusd"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("api: " + format, *args)

        def address_string(self) -> str:
            return "unix"

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                body = self._read_body()
                handler, params = router.resolve(self.command, url.path.rstrip("/") or "/")
                req = Request(self.command, url.path, query, body, self, params)
                result = handler(req)
            except _HTTPStatus as e:
                self._send_json(e.code, envelope.error(e.code, str(e)))
                return
            except PincusError as e:
                self._send_json(e.status, envelope.error(e.status, str(e)))
                return
            except Exception as e:
                log.exception("Unhandled error on %s %s", self.command, self.path)
                self._send_json(500, envelope.error(500, f"Internal error: {e}"))
                return
            if isinstance(result, Raw):
                self.close_connection = True
            elif isinstance(result, Stream):
                self._send_stream(result)
            else:
                self._send_json(200, envelope.sync(result))

        def _read_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            if length == 0:
                return None
            raw = self.rfile.read(length)
            try:
                return json.loads(raw)
            except ValueError:
                raise _HTTPStatus(400, "Request body is not valid JSON") from None

        def _send_json(self, code: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_stream(self, stream: Stream) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            try:
                for item in stream.lines:
                    self.wfile.write(json.dumps(item).encode() + b"\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                close = getattr(stream.lines, "close", None)
                if close is not None:
                    close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    return _Handler


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False


def serve(path: Path, router: Router) -> UnixHTTPServer:
    """Bind the socket (caller holds the daemon lock, so a leftover socket file is stale)."""
    path.unlink(missing_ok=True)
    return UnixHTTPServer(str(path), make_handler(router))
