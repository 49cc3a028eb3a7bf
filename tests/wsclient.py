"""A minimal RFC 6455 client over a unix socket, for tests: written from the RFC, not from pincus's
server code, so the two cannot share a misreading."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeRefused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class WSClient:
    def __init__(self, socket_path: str, path: str, timeout: float = 30) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(socket_path)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        head = self._read_until(b"\r\n\r\n")
        status = int(head.split()[1])
        if status != 101:
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            raise HandshakeRefused(status, self._read_n(length))
        want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
        assert want in head, head

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _read_n(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text: str) -> None:
        self.send(text.encode(), 0x1)

    def send_json(self, doc: Any) -> None:
        self.send_text(json.dumps(doc))

    def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame; opcode 8 is the server's close."""
        b1, b2 = self._read_n(2)
        n = b2 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_n(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_n(8))
        assert not b2 & 0x80, "server frames must not be masked"
        return b1 & 0x0F, self._read_n(n)

    def read_all(self) -> bytes:
        """Binary data until the server's close (or end-of-stream marker, an empty text message)."""
        out = b""
        while True:
            try:
                opcode, data = self.recv()
            except (ConnectionError, OSError):
                return out
            if opcode == 0x8 or (opcode == 0x1 and not data):
                return out
            out += data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send(struct.pack("!H", 1000), 0x8)
        self.sock.close()
