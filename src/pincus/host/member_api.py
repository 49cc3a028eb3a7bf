"""One HTTP/1.1 request to another pincusd's /1.0 API over TLS, the peer pinned by fingerprint."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any

from pincus.config.server_keys import parse_address
from pincus.errors import HostError
from pincus.host import certs


def request(
    address: str,
    fingerprint: str,
    client: tuple[Path, Path] | None,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, the envelope) of METHOD PATH on the member at ADDRESS."""
    host, port = parse_address(address)
    data = b"" if body is None else json.dumps(body).encode()
    sock = certs.connect((host, port), fingerprint, client, timeout)
    try:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        raw = bytearray()
        while chunk := sock.recv(65536):
            raw += chunk
    except OSError as e:
        raise HostError(f"Request {method} {path} to {address} failed: {e}") from e
    finally:
        sock.close()
    head, _, payload = bytes(raw).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b"\r\n", 1)[0].split()[1])
        doc = json.loads(payload)
    except (IndexError, ValueError):
        raise HostError(
            f"Member {address} answered {method} {path} with something that is not the API"
        ) from None
    if not isinstance(doc, dict):
        raise HostError(f"Member {address} answered {method} {path} with something that is not the API")
    return status, doc


DATABASE_PATH = "/internal/database"


def dial_database(address: str, fingerprint: str, client: tuple[Path, Path], timeout: float) -> ssl.SSLSocket:
    """A TLS connection to the member at ADDRESS that its API has switched over to its dqlite node
    (HTTP Upgrade), as Incus carries dqlite's traffic on its cluster listener."""
    host, port = parse_address(address)
    sock = certs.connect((host, port), fingerprint, client, timeout)
    try:
        sock.sendall(
            f"POST {DATABASE_PATH} HTTP/1.1\r\nHost: {address}\r\nUpgrade: dqlite\r\n"
            "Connection: Upgrade\r\nContent-Length: 0\r\n\r\n".encode()
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: what follows is dqlite's
            byte = sock.recv(1)
            if not byte or len(head) > 8192:
                raise HostError(f"Member {address} closed the database connection it was asked for")
            head += byte
    except OSError as e:
        sock.close()
        raise HostError(f"Database connection to {address} failed: {e}") from e
    except HostError:
        sock.close()
        raise
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        raise HostError(f"Member {address} refused a database connection: {status}")
    return sock


def download(address: str, fingerprint: str, client: tuple[Path, Path], path: str, dest: Path,
             digest: Any, timeout: float = 600.0) -> bool:  # fmt: skip
    """GET PATH's raw body from the member at ADDRESS into DEST (created 0600), fed to DIGEST (a
    hashlib object) as it comes; False when the member has none (404), DEST then not made."""
    host, port = parse_address(address)
    sock = certs.connect((host, port), fingerprint, client, timeout)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
        reader = sock.makefile("rb")
        status_line = reader.readline(8192)
        headers = {}
        while (line := reader.readline(8192).strip()) != b"":
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        status = int(status_line.split()[1])
        if status == 404:
            return False
        if status != 200 or not headers.get("content-length", "").isdigit():
            raise HostError(
                f"Member {address} answered GET {path} with {status_line.decode(errors='replace').strip()}"
            )
        left = int(headers["content-length"])
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            while left > 0:
                chunk = reader.read(min(left, 1 << 20))
                if not chunk:
                    raise HostError(f"Member {address} ended GET {path} {left} bytes early")
                out.write(chunk)
                digest.update(chunk)
                left -= len(chunk)
        return True
    except (OSError, ValueError, IndexError) as e:
        raise HostError(f"GET {path} from member {address} failed: {e}") from e
    finally:
        sock.close()
