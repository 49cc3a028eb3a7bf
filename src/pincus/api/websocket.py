"""RFC 6455 websockets on a connection the HTTP server already accepted (server side only).

Incus streams events and exec's stdio over websockets; clients (the Go client, pylxd) send
masked frames, we send unmasked ones. Reads and writes may come from different threads: a
lock keeps one frame from interleaving with another.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 16 * 1024 * 1024


class WebSocketClosed(Exception):
    """The peer closed the websocket (or the connection went away)."""


def is_upgrade(handler: BaseHTTPRequestHandler) -> bool:
    return (
        "websocket" in handler.headers.get("Upgrade", "").lower()
        and "upgrade" in handler.headers.get("Connection", "").lower()
    )


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def upgrade(handler: BaseHTTPRequestHandler) -> WebSocket:
    """Answer the handshake with 101 and hand the connection over to a WebSocket."""
    key = handler.headers.get("Sec-WebSocket-Key", "")
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept_key(key))
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True
    conn = handler.connection
    assert isinstance(conn, socket.socket)
    return WebSocket(conn, handler.rfile)


class WebSocket:
    def __init__(self, sock: socket.socket, rfile: object) -> None:
        self.sock = sock
        # The request's buffered reader may already hold the first frame's bytes.
        self._rfile = rfile
        self._send_lock = threading.Lock()
        self.closed = False

    # --- sending ---------------------------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        with self._send_lock:
            try:
                self.sock.sendall(head + payload)
            except OSError as e:
                raise WebSocketClosed(str(e)) from None

    def send_text(self, text: str) -> None:
        self._send_frame(TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        self._send_frame(BINARY, data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame once; the peer's answer is not waited for."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(WebSocketClosed):
            self._send_frame(CLOSE, struct.pack("!H", code) + reason.encode())

    def shutdown(self) -> None:
        self.close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    # --- receiving -------------------------------------------------------------------------------

    def _read_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                chunk = self._rfile.read1(n - len(out))  # type: ignore[attr-defined]
            except OSError as e:
                raise WebSocketClosed(str(e)) from None
            if not chunk:
                raise WebSocketClosed("connection closed")
            out += chunk
        return out

    def _read_frame(self) -> tuple[bool, int, bytes]:
        b1, b2 = self._read_exact(2)
        fin, opcode = bool(b1 & 0x80), b1 & 0x0F
        masked, n = bool(b2 & 0x80), b2 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_exact(8))
        if n > MAX_MESSAGE:
            self.close(1009, "message too big")
            raise WebSocketClosed("message too big")
        mask = self._read_exact(4) if masked else b""
        data = self._read_exact(n)
        if masked and n:
            key = (mask * (n // 4 + 1))[:n]
            data = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
        return fin, opcode, data

    def receive(self) -> tuple[int, bytes]:
        """The next whole message (TEXT or BINARY, payload); control frames are handled here."""
        message = b""
        kind = 0
        while True:
            fin, opcode, data = self._read_frame()
            if opcode == CLOSE:
                self.close()
                raise WebSocketClosed("closed by peer")
            if opcode == PING:
                self._send_frame(PONG, data)
                continue
            if opcode == PONG:
                continue
            if opcode != CONT:
                kind = opcode
            message += data
            if len(message) > MAX_MESSAGE:
                self.close(1009, "message too big")
                raise WebSocketClosed("message too big")
            if fin:
                return kind, message
