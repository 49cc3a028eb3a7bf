"""Property tests of the API's building blocks: envelope, ETag/If-Match, filters, operations, and
websocket framing (against a client written from the RFC)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pincus.api import envelope, filters
from pincus.api.websocket import BINARY, TEXT, WebSocket, WebSocketClosed
from pincus.errors import InvalidError, NotFoundError, PincusError, PreconditionFailedError
from pincus.events import EventHub
from pincus.server import etag
from pincus.server.operations import Operations

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_sync_envelope_carries_metadata(meta: Any) -> None:
    doc = envelope.sync(meta)
    assert doc["type"] == "sync" and doc["status_code"] == 200 and doc["error_code"] == 0
    assert doc["metadata"] == ({} if meta is None else meta)


@given(st.integers(400, 599), st.text())
def test_error_envelope(code: int, message: str) -> None:
    doc = envelope.error(code, message)
    assert doc["type"] == "error" and doc["error_code"] == code and doc["error"] == message


def test_async_envelope_points_at_the_operation() -> None:
    doc = envelope.async_({"id": "abc"})
    assert doc["type"] == "async" and doc["status_code"] == 100
    assert doc["operation"] == "/1.0/operations/abc" and doc["metadata"] == {"id": "abc"}


@given(json_values, json_values)
def test_etag_matches_only_its_own_fields(a: Any, b: Any) -> None:
    tag = etag.etag(a)
    etag.check_if_match(tag, a)
    etag.check_if_match(f'"{tag}"', a)
    etag.check_if_match(f'W/"{tag}", "other"', a)
    etag.check_if_match("*", b)
    etag.check_if_match(None, b)
    if etag.etag(b) != tag:
        with pytest.raises(PreconditionFailedError):
            etag.check_if_match(tag, b)


def test_instance_etag_ignores_volatile_keys() -> None:
    doc = {"config": {"user.a": "1", "volatile.eth0.hwaddr": "x"}, "devices": {}, "profiles": ["default"]}
    same = {**doc, "config": {"user.a": "1", "volatile.eth0.hwaddr": "y"}}
    assert etag.etag(etag.instance_fields(doc)) == etag.etag(etag.instance_fields(same))
    other = {**doc, "profiles": []}
    assert etag.etag(etag.instance_fields(doc)) != etag.etag(etag.instance_fields(other))


names = st.text(alphabet="abcxyz019-", min_size=1, max_size=6)


@given(
    st.lists(st.fixed_dictionaries({"name": names, "status": st.sampled_from(["Running", "Stopped"])})), names
)
def test_filter_eq_and_ne_split_the_collection(items: list[dict[str, Any]], name: str) -> None:
    eq = [i for i in items if filters.parse(f"name eq {name}")(i)]
    ne = [i for i in items if filters.parse(f"name ne {name}")(i)]
    assert eq == [i for i in items if i["name"] == name]
    assert sorted(map(str, eq + ne)) == sorted(map(str, items))
    negated = [i for i in items if filters.parse(f"not name eq {name}")(i)]
    assert negated == ne


def test_filter_and_binds_tighter_than_or() -> None:
    p = filters.parse("name eq a or name eq b and status eq Running")
    assert p({"name": "a", "status": "Stopped"})
    assert not p({"name": "b", "status": "Stopped"})
    assert p({"name": "b", "status": "Running"})
    assert filters.parse("config.user.role eq 'web server'")({"config": {"user.role": "web server"}})
    assert filters.parse("")({})
    for bad in ("name", "name is a", "and name eq a", "name eq a or", "name eq 'open"):
        with pytest.raises(InvalidError):
            filters.parse(bad)


def test_operations_run_in_background_fail_and_are_dropped() -> None:
    hub = EventHub()
    sub = hub.subscribe({"operation"})
    ops = Operations(hub, keep=0.2)
    gate = threading.Event()
    op = ops.start("Waiting", {}, lambda op: (gate.wait(5), {"x": 1})[1])
    assert ops.wait(op.id, 0.05).status[0] == "Running"
    gate.set()
    done = ops.wait(op.id, 5)
    assert done.status == ("Success", 200) and done.metadata == {"x": 1}

    def fail(op: Any) -> None:
        raise PincusError("it broke")

    bad = ops.wait(ops.start("Failing", {}, fail).id, 5)
    assert bad.status[0] == "Failure" and bad.err == "it broke"
    seen = []
    while not sub.queue.empty():
        event = sub.queue.get()
        assert event is not None
        seen.append((event["metadata"]["id"], event["metadata"]["status"]))
    assert (op.id, "Running") in seen and (op.id, "Success") in seen and (bad.id, "Failure") in seen
    time.sleep(0.3)
    with pytest.raises(NotFoundError):
        ops.get(op.id)


def _client_frame(payload: bytes, opcode: int, mask: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=70000), st.binary(min_size=4, max_size=4), st.integers(1, 4))
def test_websocket_reads_masked_fragmented_messages(payload: bytes, mask: bytes, parts: int) -> None:
    a, b = socket.socketpair()
    try:
        ws = WebSocket(a, a.makefile("rb"))
        size = max(1, len(payload) // parts)
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        frames = b"".join(
            _client_frame(c, BINARY if i == 0 else 0, mask, fin=i == len(chunks) - 1)
            for i, c in enumerate(chunks)
        )
        # A ping between fragments is answered and does not end the message.
        frames = _client_frame(b"hi", 0x9, mask) + frames
        threading.Thread(target=b.sendall, args=(frames,), daemon=True).start()
        kind, got = ws.receive()
        assert (kind, got) == (BINARY, payload)
        b.settimeout(5)
        assert b.recv(4) == bytes([0x8A, 2]) + b"hi"
    finally:
        a.close()
        b.close()


def test_websocket_close_and_server_frames() -> None:
    a, b = socket.socketpair()
    with a, b:
        ws = WebSocket(a, a.makefile("rb"))
        ws.send_text("x" * 300)
        head = b.recv(4)
        assert head[0] == 0x80 | TEXT and head[1] == 126 and int.from_bytes(head[2:4], "big") == 300
        b.sendall(_client_frame(b"\x03\xe8", 0x8, b"abcd"))
        with pytest.raises(WebSocketClosed):
            ws.receive()
        assert ws.closed
