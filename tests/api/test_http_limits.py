"""The HTTP server's bounds against a real pincusd: bad lengths, huge or deeply nested bodies, stalled
clients and NUL bytes get a 4xx, never a 500 or silence, and change nothing."""

from __future__ import annotations

import json
import socket
import time

from tests.pincus_testlib import Daemon


def raw(daemon: Daemon, data: bytes, timeout: float = 60) -> tuple[int, dict[str, object]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(daemon.dir / "unix.socket"))
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    head, _, payload = got.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def post(path: str, body: bytes, length: str | None = None) -> bytes:
    n = str(len(body)) if length is None else length
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def test_bad_lengths_and_bodies_are_4xx_and_change_nothing(daemon: Daemon) -> None:
    before = daemon.db_dump()
    body = json.dumps({"name": "n1", "type": "physical", "config": {"parent": "lo"}}).encode()
    assert raw(daemon, post("/1.0/networks", body, "-5"))[0] == 400
    assert raw(daemon, post("/1.0/networks", body, "abc"))[0] == 400
    assert raw(daemon, post("/1.0/networks", b"x" * 10, str(17 * 1024 * 1024)))[0] == 413
    code, doc = raw(daemon, post("/1.0/networks", b"[" * 100000 + b"]" * 100000))
    assert code == 400 and "nests" in str(doc["error"])
    code, doc = raw(daemon, post("/1.0/networks", b"{not json"))
    assert code == 400 and "not valid JSON" in str(doc["error"])
    nul = json.dumps({"name": "n2", "type": "physical", "config": {"parent": "lo\u0000x"}}).encode()
    code, doc = raw(daemon, post("/1.0/networks", nul))
    assert code == 400 and "NUL" in str(doc["error"])
    listy = json.dumps({"name": "n3", "type": "physical", "config": {"parent": ["lo"]}}).encode()
    assert raw(daemon, post("/1.0/networks", listy))[0] == 400
    assert daemon.db_dump() == before


def test_a_stalled_client_does_not_hold_the_daemon(daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.connect(str(daemon.dir / "unix.socket"))
        stalled.sendall(b"POST /1.0/networks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        # Others are served meanwhile.
        started = time.monotonic()
        assert daemon.api("GET", "/1.0")[0] == 200
        assert time.monotonic() - started < 2
