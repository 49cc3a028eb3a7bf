"""A small HTTP/1.1 client over the daemon's unix socket.

Hand-written on purpose: `http.client` imports `ssl` and costs ~50 ms per command here.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote


class ClientError(Exception):
    """A failed request; the message is what the user sees after `Error: `."""


def socket_path() -> Path:
    return Path(os.environ.get("PINCUS_DIR") or "/var/lib/pincus") / "unix.socket"


def q(name: str) -> str:
    return quote(name, safe="")


class Client:
    def __init__(self, path: Path | None = None, timeout: float | None = None) -> None:
        self.path = path or socket_path()
        self.timeout = timeout

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as e:
            sock.close()
            raise ClientError(
                f"Cannot reach pincusd at {self.path}: {e.strerror} (is pincusd running?)"
            ) from None
        return sock

    @staticmethod
    def send(sock: socket.socket, method: str, path: str, body: Any = None, extra: str = "") -> None:
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: pincus\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra}\r\n"
        )
        sock.sendall(head.encode() + data)

    @staticmethod
    def read_head(f: Any) -> tuple[int, dict[str, str]]:
        status_line = f.readline().decode("latin-1")
        if not status_line:
            raise ClientError("pincusd closed the connection")
        code = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = f.readline().decode("latin-1").strip()
            if not line:
                break
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return code, headers

    @staticmethod
    def decode(raw: bytes) -> Any:
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ClientError("pincusd sent a response that is not JSON") from None
        if doc.get("type") == "error":
            raise ClientError(doc.get("error") or f"request failed ({doc.get('error_code')})")
        return doc.get("metadata")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        with self.connect() as sock:
            self.send(sock, method, path, body, "Connection: close\r\n")
            f = sock.makefile("rb")
            _, headers = self.read_head(f)
            length = int(headers.get("content-length", "0"))
            return self.decode(f.read(length))

    def exec(
        self,
        name: str,
        command: list[str],
        environment: dict[str, str] | None = None,
        cwd: str | None = None,
        fds: tuple[int, int, int] = (0, 1, 2),
    ) -> int:
        """Run COMMAND in instance NAME on our own stdin/stdout/stderr; return its exit status.

        The daemon answers `100 Continue` once the request is valid; only then do we pass the
        three descriptors (SCM_RIGHTS on one byte), so an error costs us nothing to clean up.
        One buffered reader serves the whole conversation: the daemon sends nothing after the
        100 until it has the descriptors, so the reader cannot swallow the final response.
        """
        body = {"command": command, "environment": environment or {}, "cwd": cwd}
        with self.connect() as sock:
            extra = "X-Pincus-Stdio: fds\r\nConnection: close\r\n"
            self.send(sock, "POST", f"/1.0/instances/{q(name)}/exec", body, extra)
            f = sock.makefile("rb")
            code, headers = self.read_head(f)
            if code == 100:
                socket.send_fds(sock, [b"\0"], list(fds))
                code, headers = self.read_head(f)
            elif code < 300:
                raise ClientError(f"pincusd answered exec with {code} instead of asking for the terminal")
            metadata = self.decode(f.read(int(headers.get("content-length", "0"))))
            ret = metadata.get("return") if isinstance(metadata, dict) else None
            if not isinstance(ret, int):
                raise ClientError("pincusd did not report the command's exit status")
            return ret

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        sock = self.connect()
        try:
            self.send(sock, "GET", path)
            f = sock.makefile("rb")
            code, headers = self.read_head(f)
            if code != 200:
                self.decode(f.read(int(headers.get("content-length", "0"))))
            for line in f:
                if line.strip():
                    yield json.loads(line)
        finally:
            sock.close()
