"""HTTP/1.1 over the daemon's unix socket, on the standard library's threaded server.

A control-plane daemon answers a handful of requests a second; threads keep a slow request
(instance stop, event stream) from blocking the others without an async stack.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import socketserver
import ssl
import threading
import time
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
    def if_match(self) -> str | None:
        return self.handler.headers.get("If-Match")

    @property
    def connection(self) -> socket.socket:
        conn = self.handler.connection
        assert isinstance(conn, socket.socket)
        return conn


@dataclass(frozen=True)
class BodyLimits:
    """A route that takes its body as a stream (an image upload): at most MAX_BYTES, and a client
    silent for IDLE seconds mid-body is cut off."""

    max_bytes: int
    idle: float = 60.0


class _BodyError(PincusError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyReader:
    """The request body, read on demand: by Content-Length or in HTTP/1.1 chunks (Go's client
    sends an upload of unknown length chunked)."""

    def __init__(self, rfile: Any, conn: socket.socket, length: int | None, limits: BodyLimits) -> None:
        self._rfile = rfile
        self._conn = conn
        self._left = length  # None: chunked
        self._chunk_left = 0
        self._limits = limits
        self._total = 0
        self.done = length == 0

    def _raw(self, n: int) -> bytes:
        self._conn.settimeout(self._limits.idle)
        try:
            data: bytes = self._rfile.read1(n) if n else b""
        except TimeoutError:
            raise _BodyError(
                408, f"Timed out reading the request body (no data for {self._limits.idle:g} s)"
            ) from None
        if n and not data:
            raise _BodyError(400, "Request body shorter than announced")
        return data

    def _line(self) -> bytes:
        self._conn.settimeout(self._limits.idle)
        try:
            line: bytes = self._rfile.readline(1024)
        except TimeoutError:
            raise _BodyError(408, "Timed out reading the request body") from None
        return line

    def check_length(self) -> None:
        """Refuse at once a body announced larger than the limit."""
        if self._left is not None and self._left > self._limits.max_bytes:
            raise _BodyError(
                413, f"Request body too large ({self._left} bytes, at most {self._limits.max_bytes})"
            )

    def drain(self, max_bytes: int, seconds: float) -> None:
        """Read and drop what is left of the body, at most MAX_BYTES for at most SECONDS."""
        deadline = time.monotonic() + seconds
        left = max_bytes
        try:
            self._conn.settimeout(seconds)
            while left > 0 and time.monotonic() < deadline:
                data = self._rfile.read1(min(left, 65536))
                if not data:
                    return
                left -= len(data)
        except OSError:
            pass

    def read(self, n: int) -> bytes:
        if self.done:
            return b""
        if self._left is not None:
            data = self._raw(min(n, self._left))
            self._left -= len(data)
            self.done = self._left == 0
        else:
            if self._chunk_left == 0:
                size = self._line().split(b";")[0].strip()
                try:
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise _BodyError(400, "Malformed chunked request body") from None
                if self._chunk_left == 0:
                    while self._line() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self.done = True
                    return b""
            data = self._raw(min(n, self._chunk_left))
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self._line()  # the CRLF after the chunk
        self._total += len(data)
        if self._total > self._limits.max_bytes:
            raise _BodyError(413, f"Request body too large (more than {self._limits.max_bytes} bytes)")
        return data


@dataclass
class Stream:
    """A streaming response: each yielded dict is written as one JSON line until the generator ends."""

    lines: Iterator[dict[str, Any]]


@dataclass
class Tagged:
    """A sync response that carries the object's ETag header (a client sends it back in If-Match)."""

    metadata: Any
    etag: str


@dataclass
class Async:
    """A background operation was started: 202 with the operation as metadata."""

    operation: dict[str, Any]


@dataclass
class Raw:
    """The handler already wrote its own response on the connection."""


Handler = Callable[[Request], Any]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._patterns: list[tuple[str, str]] = []
        self._streamed: dict[Handler, BodyLimits] = {}

    def add(self, method: str, pattern: str, handler: Handler, stream: BodyLimits | None = None) -> None:
        """STREAM: the handler gets the body as a BodyReader (req.body) instead of parsed JSON."""
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method, re.compile(regex), handler))
        self._patterns.append((method, pattern))
        if stream is not None:
            self._streamed[handler] = stream

    def extend(self, other: Router) -> None:
        """OTHER's routes too (after this one's)."""
        self._routes += other._routes
        self._patterns += other._patterns
        self._streamed.update(other._streamed)

    def body_limits(self, handler: Handler) -> BodyLimits | None:
        return self._streamed.get(handler)

    def routes(self) -> list[tuple[str, str]]:
        """(method, pattern) of every route, as added: what the OpenAPI document must describe."""
        return list(self._patterns)

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
        raise _HTTPStatus(404, f'"{path or "/"}" not found')


class _HTTPStatus(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


MAX_BODY = 16 * 1024 * 1024  # bytes: a request body past this is refused with 413
REQUEST_TIMEOUT = 30.0  # seconds for a client to send a whole request (line, headers, body)
MAX_CONNECTIONS = 512  # at once, event streams and websockets included
MAX_JSON_DEPTH = 64
DRAIN_BYTES = 64 * 1024 * 1024  # of a refused upload's body, read and dropped before closing
DRAIN_SECONDS = 5.0


# A JSON string: from a quote to the next quote that no backslash escapes (the unrolled form
# keeps the regex engine linear on long strings).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET_OR_QUOTE = bytes(b for b in range(256) if b not in b'[]{}"')


def _json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest (brackets inside strings do not count).

    Strings are cut out and everything but brackets dropped in C before the one Python loop, which
    then sees two bytes per object or array: a PUT of an instance with 500 NICs is 150 KB."""
    skeleton = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET_OR_QUOTE)
    skeleton = skeleton.split(b'"', 1)[0]  # a string with no end runs to the end of the body
    depth = deepest = 0
    for byte in skeleton:
        if byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser takes them); a timeout of NaN waits oddly."""
    raise ValueError(f"{name} is not a JSON number")


def make_handler(
    router: Router, public: frozenset[tuple[str, str]] | None = None
) -> type[BaseHTTPRequestHandler]:
    """PUBLIC: on a TLS listener, the only (method, path) a peer without the trusted certificate
    may call; None: every route (the unix socket, guarded by its file mode)."""

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pincusd"

        def handle_one_request(self) -> None:
            # A stalled client must not hold its thread for ever; once a request is in, the
            # answer (an event stream, a websocket) may take as long as it needs.
            self.connection.settimeout(REQUEST_TIMEOUT)
            super().handle_one_request()

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("api: " + format, *args)

        def address_string(self) -> str:
            return "unix"

        def _dispatch(self) -> None:
            self._streamed: BodyReader | None = None
            try:
                self._answer()
            finally:
                if self._streamed is not None and not self._streamed.done:
                    # A refused upload: the rest of its body is still on the wire. Read a bounded
                    # part of it first, as closing a unix socket on unread data resets it before the
                    # client has read our answer.
                    self.close_connection = True
                    self._streamed.drain(DRAIN_BYTES, DRAIN_SECONDS)

        def _answer(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                if public is not None and not self._trusted(url.path.rstrip("/")):
                    raise _HTTPStatus(403, "Not authorized: this listener serves cluster members only")
                # "/" and "/1.0/" are the routes "" and "/1.0".
                try:
                    handler, params = router.resolve(self.command, url.path.rstrip("/"))
                except _HTTPStatus:
                    self._read_body()  # a body too large or malformed says so first, as before
                    raise
                limits = router.body_limits(handler)
                if limits is None:
                    body = self._read_body()
                else:
                    body = self._streamed = self._body_reader(limits)
                    body.check_length()
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
            elif isinstance(result, Async):
                location = {"Location": f"/1.0/operations/{result.operation['id']}"}
                self._send_json(202, envelope.async_(result.operation), location)
            elif isinstance(result, Tagged):
                self._send_json(200, envelope.sync(result.metadata), {"ETag": f'"{result.etag}"'})
            else:
                self._send_json(200, envelope.sync(result))

        def _trusted(self, path: str) -> bool:
            conn = self.connection
            # CERT_OPTIONAL: a certificate was presented only if it verified against the trusted one.
            if isinstance(conn, ssl.SSLSocket) and conn.getpeercert():
                return True
            return public is not None and (self.command, path) in public

        def _body_reader(self, limits: BodyLimits) -> BodyReader:
            chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
            text = self.headers.get("Content-Length") or "0"
            if not chunked and not text.isdigit():
                raise _HTTPStatus(400, f'Invalid Content-Length "{text}"')
            return BodyReader(self.rfile, self.connection, None if chunked else int(text), limits)

        def _read_body(self) -> Any:
            if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
                raise _HTTPStatus(411, "Chunked request bodies are not supported: send Content-Length")
            text = self.headers.get("Content-Length") or "0"
            if not text.isdigit():
                raise _HTTPStatus(400, f'Invalid Content-Length "{text}"')
            length = int(text)
            if length > MAX_BODY:
                raise _HTTPStatus(413, f"Request body too large ({length} bytes, at most {MAX_BODY})")
            if length == 0:
                self.connection.settimeout(None)
                return None
            try:
                raw = self.rfile.read(length)
            except TimeoutError:
                self.close_connection = True
                raise _HTTPStatus(408, "Timed out reading the request body") from None
            self.connection.settimeout(None)
            if len(raw) < length:
                self.close_connection = True
                raise _HTTPStatus(400, "Request body shorter than its Content-Length")
            if _json_depth(raw) > MAX_JSON_DEPTH:
                raise _HTTPStatus(400, f"Request body nests deeper than {MAX_JSON_DEPTH} levels")
            try:
                return json.loads(raw, parse_constant=_no_constant)
            except ValueError as e:
                raise _HTTPStatus(400, f"Request body is not valid JSON: {e}") from None

        def _send_json(self, code: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(doc).encode()
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
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
    # socketserver's default queue of 5 refuses a burst of clients: one that connects with a timeout
    # or non-blocking (Go's client) gets EAGAIN instead of waiting for the accepting thread.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, path: str, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(path, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Over the cap: a short answer on the accepting thread, no new thread.
            body = json.dumps(envelope.error(503, "Too many connections to pincusd")).encode()
            with contextlib.suppress(OSError):
                # Read what the client already sent: closing on unread data resets the connection
                # before the client can read our answer.
                request.settimeout(0.1)
                request.recv(65536)
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve(path: Path, router: Router) -> UnixHTTPServer:
    """Bind the socket (caller holds the daemon lock, so a leftover socket file is stale)."""
    path.unlink(missing_ok=True)
    return UnixHTTPServer(str(path), make_handler(router))


class TLSHTTPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The same API over TLS on a TCP address; the handshake runs on the connection's own thread,
    so a slow peer does not hold up the accepting one."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN
    HANDSHAKE_TIMEOUT = 10.0

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], ctx: ssl.SSLContext
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._ctx = ctx
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        return self._ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.HANDSHAKE_TIMEOUT)
        try:
            request.do_handshake()
        except (OSError, ssl.SSLError) as e:
            log.debug("TLS handshake with %s failed: %s", client_address, e)
            return
        super().finish_request(request, client_address)


def serve_tls(address: tuple[str, int], router: Router, ctx: ssl.SSLContext,
              public: frozenset[tuple[str, str]]) -> TLSHTTPServer:  # fmt: skip
    return TLSHTTPServer(address, make_handler(router, public), ctx)
