"""The HTTP server's time and connection bounds, on a throw-away socket with a trivial router."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pincus.api import http


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(http, "REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 3)
    router = http.Router()
    router.add("GET", "/ping", lambda req: {"pong": True})
    path = tmp_path / "s.sock"
    srv = http.serve(path, router)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield path
    srv.shutdown()
    srv.server_close()


def request(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


PING = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_stalled_body_gets_408(server: Path) -> None:
    started = time.monotonic()
    got = request(server, b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    assert got.startswith(b"HTTP/1.1 408"), got
    assert time.monotonic() - started < 3


def test_connection_cap_answers_503_and_frees_slots(server: Path) -> None:
    stalled = []
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(server))
        stalled.append(s)
    time.sleep(0.1)
    assert request(server, PING).startswith(b"HTTP/1.1 503")
    for s in stalled:
        s.close()
    time.sleep(0.8)  # their threads time out or see the close
    assert request(server, PING).startswith(b"HTTP/1.1 200")


def test_a_burst_of_clients_is_queued_not_refused(tmp_path: Path) -> None:
    # Clients that connect with a timeout (or non-blocking, as Go's do) get EAGAIN from a full listen
    # queue instead of waiting: 50 clients at once must all get in while no one is accepting yet.
    srv = http.serve(tmp_path / "s.sock", http.Router())
    clients = []
    try:
        for _ in range(64):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(s)
            s.settimeout(5)
            s.connect(str(tmp_path / "s.sock"))
    finally:
        for s in clients:
            s.close()
        srv.server_close()
