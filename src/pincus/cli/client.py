"""A small HTTP/1.1 client over the daemon's unix socket.

Hand-written on purpose: `http.client` imports `ssl` and costs ~50 ms per command here.
For the same reason it uses the C `_socket` module, not `socket`: `socket.py` adds nothing we
need (its enums, `selectors`, `makefile`). Nor `os`: the launcher starts Python without `site`,
which is what loads `os` (and `_collections_abc`) otherwise; `posix` is built in.
"""

from __future__ import annotations

import _socket
import io
import posix
import sys

from pincus.cli import jsonc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from os import PathLike
    from typing import Any


class ClientError(Exception):
    """A failed request; the message is what the user sees after `Error: `."""


def socket_path() -> str:
    """$PINCUS_DIR/unix.socket, as os.path.join(os.environ.get(...) or default, ...) gives it."""
    os = sys.modules.get("os")
    if os is not None:  # loaded anyway: its environ also sees changes made since start-up
        root = os.environ.get("PINCUS_DIR") or "/var/lib/pincus"
    else:
        raw = posix.environ.get(b"PINCUS_DIR")
        root = raw.decode(sys.getfilesystemencoding(), "surrogateescape") if raw else "/var/lib/pincus"
    return root + ("" if root.endswith("/") else "/") + "unix.socket"


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def q(name: str) -> str:
    """NAME as one URL path segment: `urllib.parse.quote(name, safe="")` without importing urllib."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in name.encode())


class _SocketIO(io.RawIOBase):
    """The read side of a socket for `io.BufferedReader` (what `socket.makefile("rb")` does)."""

    def __init__(self, sock: _socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        return self._sock.recv_into(buf)


def _reader(sock: _socket.socket) -> io.BufferedReader:
    return io.BufferedReader(_SocketIO(sock))


class Client:
    def __init__(self, path: str | PathLike[str] | None = None, timeout: float | None = None) -> None:
        self.path = (path if isinstance(path, str) else path.__fspath__()) if path else socket_path()
        self.timeout = timeout

    def connect(self) -> _socket.socket:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise ClientError(
                f"Cannot reach pincusd at {self.path}: {e.strerror} (is pincusd running?)"
            ) from None
        return sock

    @staticmethod
    def send(sock: _socket.socket, method: str, path: str, body: Any = None, extra: str = "") -> None:
        data = b"" if body is None else jsonc.dumps(body).encode()
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
            doc = jsonc.loads(raw)
        except ValueError:
            raise ClientError("pincusd sent a response that is not JSON") from None
        if doc.get("type") == "error":
            raise ClientError(doc.get("error") or f"request failed ({doc.get('error_code')})")
        return doc.get("metadata")

    def request(self, method: str, path: str, body: Any = None, if_match: str | None = None) -> Any:
        """The response's metadata; a background operation is waited for, and its failure raised."""
        return self.request_with_headers(method, path, body, if_match)[0]

    def request_with_headers(
        self, method: str, path: str, body: Any = None, if_match: str | None = None
    ) -> tuple[Any, dict[str, str]]:
        """As `request`, with the response's headers (an ETag to send back in If-Match)."""
        extra = "Connection: close\r\n" + (f"If-Match: {if_match}\r\n" if if_match else "")
        sock = self.connect()
        try:
            self.send(sock, method, path, body, extra)
            f = _reader(sock)
            _, headers = self.read_head(f)
            length = int(headers.get("content-length", "0"))
            raw = f.read(length)
        except (ConnectionError, TimeoutError) as e:
            # pincusd went away mid-request (killed, restarted): what it finished is its to report.
            raise ClientError(
                f"pincusd closed the connection during {method} {path} ({e.strerror or e}); "
                "check the outcome with pincus list or pincus info"
            ) from None
        finally:
            sock.close()
        metadata = self.decode(raw)
        if headers.get("location", "").startswith("/1.0/operations/") and isinstance(metadata, dict):
            return self.wait(headers["location"]), headers
        return metadata, headers

    def wait(self, operation: str) -> Any:
        """Wait for a background operation to end; its metadata, or its error raised."""
        while True:
            op = self.request("GET", f"{operation}/wait?timeout=60")
            if not isinstance(op, dict):
                raise ClientError("pincusd sent an operation that is not an object")
            if op.get("status") == "Failure":
                raise ClientError(op.get("err") or "the operation failed")
            if op.get("status") != "Running":
                return op.get("metadata") or {}

    def get_bytes(self, path: str) -> bytes:
        """A GET whose answer is not an envelope (a console log); an error answer is raised."""
        sock = self.connect()
        try:
            self.send(sock, "GET", path, None, "Connection: close\r\n")
            f = _reader(sock)
            code, headers = self.read_head(f)
            raw = f.read(int(headers["content-length"])) if "content-length" in headers else f.read()
        finally:
            sock.close()
        if code >= 400:
            self.decode(raw)  # raises the daemon's error
            raise ClientError(f"GET {path} failed ({code})")
        return bytes(raw)

    def raw_request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        """One request as it is: status, headers and the whole envelope; errors are not raised
        and background operations not waited for (`pincus query` shows them)."""
        sock = self.connect()
        try:
            self.send(sock, method, path, body, "Connection: close\r\n")
            f = _reader(sock)
            code, headers = self.read_head(f)
            raw = f.read(int(headers["content-length"])) if "content-length" in headers else f.read()
        finally:
            sock.close()
        try:
            return code, headers, jsonc.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ClientError("pincusd sent a response that is not JSON") from None

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
        sock = self.connect()
        try:
            extra = "X-Pincus-Stdio: fds\r\nConnection: close\r\n"
            self.send(sock, "POST", f"/1.0/instances/{q(name)}/exec", body, extra)
            f = _reader(sock)
            code, headers = self.read_head(f)
            if code == 100:
                # What socket.send_fds does: the descriptors as C ints in one SCM_RIGHTS message.
                rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
                sock.sendmsg([b"\0"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
                code, headers = self.read_head(f)
            elif code < 300:
                raise ClientError(f"pincusd answered exec with {code} instead of asking for the terminal")
            metadata = self.decode(f.read(int(headers.get("content-length", "0"))))
        finally:
            sock.close()
        ret = metadata.get("return") if isinstance(metadata, dict) else None
        if not isinstance(ret, int):
            raise ClientError("pincusd did not report the command's exit status")
        return ret

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        sock = self.connect()
        try:
            self.send(sock, "GET", path)
            f = _reader(sock)
            code, headers = self.read_head(f)
            if code != 200:
                self.decode(f.read(int(headers.get("content-length", "0"))))
            for line in f:
                if line.strip():
                    yield jsonc.loads(line)
        finally:
            sock.close()
