"""One HTTP/1.1 request to another pincusd's /1.0 API over TLS, the peer pinned by fingerprint."""

from __future__ import annotations

import json
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
