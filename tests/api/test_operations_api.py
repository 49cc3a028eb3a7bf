"""Incus's API shape against a real pincusd: server info, background operations, ETags, recursion,
filters, the events websocket and exec over websockets (read back through a client written from
the RFC, and checked against what the container's kernel says)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.pincus_testlib import Daemon, image_source
from tests.wsclient import HandshakeRefused, WSClient


def sock(daemon: Daemon) -> str:
    return str(daemon.dir / "unix.socket")


def create(daemon: Daemon, name: str, **extra: Any) -> dict[str, Any]:
    code, headers, doc = daemon.api_full("POST", "/1.0/instances", {"name": name, **extra})
    assert code == 202, doc
    assert headers["location"] == doc["operation"]
    return daemon.wait_op(doc)


def create_runnable(daemon: Daemon, name: str, **extra: Any) -> dict[str, Any]:
    """An instance from the test image: a root with an init, so it can start."""
    daemon.image()
    return create(daemon, name, source=image_source(), **extra)


def test_server_info_has_incus_types(daemon: Daemon) -> None:
    meta = daemon.api("GET", "/1.0")[1]["metadata"]
    assert meta["auth"] == "trusted"
    env = meta["environment"]
    # Typed clients (the Go client) refuse anything but strings here.
    assert env["kernel_features"] and all(v in ("true", "false") for v in env["kernel_features"].values())
    assert env["server"] == "pincus" and env["server_name"] == os.uname().nodename
    assert env["kernel_version"] == os.uname().release
    assert env["driver"].startswith("pincus")
    exts = meta["api_extensions"]
    assert len(exts) == len(set(exts))
    for needed in (
        "instances",
        "network",
        "network_state",
        "network_leases",
        "container_full",
        "api_filtering",
    ):
        assert needed in exts


def test_instance_changes_are_background_operations(daemon: Daemon) -> None:
    op = create(daemon, "c1")
    assert op["status"] == "Success" and op["class"] == "task" and op["err"] == ""
    assert op["resources"]["instances"] == ["/1.0/instances/c1"]
    listed = daemon.api("GET", "/1.0/operations?recursion=1")[1]["metadata"]
    assert op["id"] in [o["id"] for o in listed["success"]]
    assert daemon.api("GET", f"/1.0/operations/{op['id']}")[1]["metadata"]["status"] == "Success"
    # A failure is the operation's err, with status Failure.
    code, doc = daemon.api("PUT", "/1.0/instances/c1", {"config": {"bogus.key": "1"}, "devices": {}})
    assert code == 202
    failed = daemon.wait_op(doc)
    assert failed["status"] == "Failure" and "bogus.key" in failed["err"]
    assert "bogus.key" not in daemon.api("GET", "/1.0/instances/c1")[1]["metadata"]["config"]
    # Unknown operation: 404; a finished one cannot be cancelled.
    assert daemon.api("GET", "/1.0/operations/nope")[0] == 404
    assert daemon.api("GET", "/1.0/operations/nope/wait")[0] == 404
    assert daemon.api("DELETE", f"/1.0/operations/{op['id']}")[0] == 400
    code, doc = daemon.api("DELETE", "/1.0/instances/c1")
    assert code == 202 and daemon.wait_op(doc)["status"] == "Success"
    assert daemon.api("GET", "/1.0/instances/c1")[0] == 404


def test_slow_operation_does_not_hold_other_requests(daemon: Daemon) -> None:
    create_runnable(daemon, "c1")
    daemon.cli("start", "c1")
    code, doc = daemon.api("POST", "/1.0/instances/c1/exec", {"command": ["sleep", "3"]})
    assert code == 202
    started = time.monotonic()
    assert daemon.api("GET", "/1.0")[0] == 200
    create(daemon, "c2")  # a whole other operation runs to its end meanwhile
    assert time.monotonic() - started < 2.5
    running = daemon.api("GET", f"{doc['operation']}/wait?timeout=0.1")[1]["metadata"]
    assert running["status"] == "Running"
    assert daemon.wait_op(doc)["metadata"]["return"] == 0
    daemon.cli("stop", "-f", "c1")


def test_etag_and_if_match(daemon: Daemon) -> None:
    create(daemon, "c1", config={"user.a": "1"})
    code, headers, doc = daemon.api_full("GET", "/1.0/instances/c1")
    tag = headers["etag"]
    inst = doc["metadata"]
    put = {"config": {"user.a": "2"}, "devices": inst["devices"], "profiles": inst["profiles"]}
    code, doc = daemon.api("PUT", "/1.0/instances/c1", put)  # no If-Match: no check
    assert code == 202 and daemon.wait_op(doc)["status"] == "Success"
    before = daemon.db_dump()
    code, _, doc = daemon.api_full("PUT", "/1.0/instances/c1", {**put, "config": {}}, {"If-Match": tag})
    assert code == 412, doc
    assert daemon.db_dump() == before
    fresh = daemon.api_full("GET", "/1.0/instances/c1")[1]["etag"]
    assert fresh != tag
    code, _, doc = daemon.api_full(
        "PATCH", "/1.0/instances/c1", {"config": {"user.b": "x"}}, {"If-Match": fresh}
    )
    assert code == 202 and daemon.wait_op(doc)["status"] == "Success"
    # PATCH merges: user.a stays.
    config = daemon.api("GET", "/1.0/instances/c1")[1]["metadata"]["config"]
    assert config["user.a"] == "2" and config["user.b"] == "x"
    # Networks are sync: 412 straight away.
    daemon.api("POST", "/1.0/networks", {"name": "n1", "type": "physical", "config": {"parent": "lo"}})
    ntag = daemon.api_full("GET", "/1.0/networks/n1")[1]["etag"]
    daemon.api("PATCH", "/1.0/networks/n1", {"description": "changed"})
    code, _, _ = daemon.api_full("PATCH", "/1.0/networks/n1", {"description": "lost"}, {"If-Match": ntag})
    assert code == 412
    assert daemon.api("GET", "/1.0/networks/n1")[1]["metadata"]["description"] == "changed"


def test_recursion_and_filters(daemon: Daemon) -> None:
    create_runnable(daemon, "c1", config={"user.role": "web"})
    create(daemon, "c2")
    daemon.cli("start", "c1")
    try:
        assert daemon.api("GET", "/1.0/instances")[1]["metadata"] == [
            "/1.0/instances/c1",
            "/1.0/instances/c2",
        ]
        full = {i["name"]: i for i in daemon.api("GET", "/1.0/instances?recursion=2")[1]["metadata"]}
        assert full["c1"]["state"]["status"] == "Running" and full["c2"]["state"]["status"] == "Stopped"
        assert full["c1"]["snapshots"] == [] and full["c1"]["backups"] == []
        lo = full["c1"]["state"]["network"]["lo"]
        assert {"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"} in lo["addresses"]
        one = daemon.api("GET", "/1.0/instances/c1?recursion=1")[1]["metadata"]
        assert one["state"]["pid"] > 0 and one["snapshots"] == []
        # Usage is counted over the container's own processes: one more while a command runs in it.
        before = one["state"]
        assert before["processes"] >= 1 and before["memory"]["usage"] > 0
        _, op = daemon.api("POST", "/1.0/instances/c1/exec", {"command": ["sleep", "2"]})
        time.sleep(0.5)
        during = daemon.api("GET", "/1.0/instances/c1/state")[1]["metadata"]
        assert during["processes"] == before["processes"] + 1
        daemon.wait_op(op)
        by_filter = daemon.api("GET", "/1.0/instances?recursion=1&filter=status+eq+Running")[1]["metadata"]
        assert [i["name"] for i in by_filter] == ["c1"]
        q = "/1.0/instances?filter=" + "config.user.role%20eq%20web%20or%20name%20eq%20c2"
        assert daemon.api("GET", q)[1]["metadata"] == ["/1.0/instances/c1", "/1.0/instances/c2"]
        assert daemon.api("GET", "/1.0/instances?filter=name+is+c1")[0] == 400
    finally:
        daemon.cli("stop", "-f", "c1")


def test_events_websocket_sees_lifecycle_and_operations(daemon: Daemon) -> None:
    ws = WSClient(sock(daemon), "/1.0/events?type=lifecycle,operation")
    try:
        create(daemon, "c1")
        seen: list[dict[str, Any]] = []
        # The first container also makes the default pool (storage-pool-created comes first).
        while not any(
            e["type"] == "lifecycle" and e["metadata"]["action"] == "instance-created" for e in seen
        ):
            opcode, data = ws.recv()
            assert opcode == 0x1
            seen.append(json.loads(data))
        for event in seen:
            assert set(event) >= {"type", "timestamp", "metadata", "location", "project"}
        actions = [e["metadata"]["action"] for e in seen if e["type"] == "lifecycle"]
        assert actions == ["storage-pool-created", "instance-created"]
        life = [e for e in seen if e["type"] == "lifecycle"][-1]
        assert life["metadata"]["source"] == "/1.0/instances/c1"
        assert any(e["type"] == "operation" and e["metadata"]["status"] == "Running" for e in seen)
    finally:
        ws.close()
    with pytest.raises(HandshakeRefused) as refused:
        WSClient(sock(daemon), "/1.0/events?type=bogus")
    assert refused.value.status == 400


def _exec(daemon: Daemon, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, WSClient]]:
    code, doc = daemon.api("POST", "/1.0/instances/c1/exec", {"wait-for-websocket": True, **body})
    assert code == 202, doc
    op = doc["metadata"]
    assert op["class"] == "websocket"
    base = f"/1.0/operations/{op['id']}/websocket?secret="
    return doc, {ch: WSClient(sock(daemon), base + s) for ch, s in op["metadata"]["fds"].items()}


@pytest.fixture
def running(daemon: Daemon) -> Iterator[Daemon]:
    create_runnable(daemon, "c1")
    daemon.cli("start", "c1")
    yield daemon
    daemon.cli("stop", "-f", "c1")


def test_exec_websockets_without_terminal(running: Daemon) -> None:
    doc, ws = _exec(running, {"command": ["sh", "-c", "cat; echo err >&2; exit 3"], "interactive": False})
    assert sorted(ws) == ["0", "1", "2", "control"]
    ws["0"].send(b"hello from stdin\n")
    ws["0"].send_text("")  # end of stdin
    out, err = ws["1"].read_all(), ws["2"].read_all()
    op = running.wait_op(doc)
    assert (out, err) == (b"hello from stdin\n", b"err\n")
    assert op["status"] == "Success" and op["metadata"]["return"] == 3


def test_exec_websocket_with_terminal_resize_and_signal(running: Daemon) -> None:
    doc, ws = _exec(
        running,
        {
            "command": ["sh", "-c", "tty; read x; stty size; exec sleep 30"],
            "interactive": True,
            "width": 80,
            "height": 24,
        },
    )
    assert sorted(ws) == ["0", "control"]
    got = b""
    while b"/dev/pts/" not in got:
        got += ws["0"].recv()[1]
    ws["control"].send_json({"command": "window-resize", "args": {"width": "101", "height": "33"}})
    time.sleep(0.2)
    ws["0"].send(b"go\n")
    while b"33 101" not in got:
        got += ws["0"].recv()[1]
    ws["control"].send_json({"command": "signal", "signal": 9})
    op = running.wait_op(doc)
    assert op["metadata"]["return"] == 128 + 9
    for w in ws.values():
        w.close()


def test_exec_websocket_wrong_secret_is_refused_and_nothing_runs(running: Daemon) -> None:
    marker = "/tmp/pincus-exec-marker-" + os.urandom(4).hex()
    _code, doc = running.api(
        "POST",
        "/1.0/instances/c1/exec",
        {"command": ["touch", marker], "wait-for-websocket": True, "interactive": True},
    )
    op_id = doc["metadata"]["id"]
    with pytest.raises(HandshakeRefused) as refused:
        WSClient(sock(running), f"/1.0/operations/{op_id}/websocket?secret=wrong")
    assert refused.value.status == 403
    with pytest.raises(HandshakeRefused) as missing:
        WSClient(sock(running), "/1.0/operations/nope/websocket?secret=x")
    assert missing.value.status == 404
    time.sleep(0.5)
    # The command would run in the container's own root: look for the marker there.
    _code, check = running.api("POST", "/1.0/instances/c1/exec", {"command": ["test", "-e", marker]})
    assert running.wait_op(check)["metadata"]["return"] == 1
    assert running.api("GET", f"/1.0/operations/{op_id}")[1]["metadata"]["status"] == "Running"


def test_exec_output_is_not_lost_with_many_writers(running: Daemon) -> None:
    """Output written right before the command exits still reaches the client, in order."""
    script = "i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done"
    doc, ws = _exec(running, {"command": ["sh", "-c", script], "interactive": False})
    ws["0"].send_text("")
    results: dict[str, bytes] = {}
    threads = [threading.Thread(target=lambda c=c: results.__setitem__(c, ws[c].read_all())) for c in "12"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert running.wait_op(doc)["metadata"]["return"] == 0
    lines = results["1"].decode().split()
    assert lines == [f"line{i}" for i in range(2000)]


def test_a_put_echoing_stale_volatile_values_keeps_pincus_own(daemon: Daemon, prefix: str) -> None:
    # A read-modify-write client sends back the volatile keys it read; a hot-plug since may have
    # changed them (they are outside the ETag), so the PUT must not fail on them nor change them.
    daemon.ns.add_bridge(f"{prefix}br")
    nic = {"type": "nic", "nictype": "bridged", "parent": f"{prefix}br"}
    create_runnable(daemon, "c1", profiles=[], devices={"eth0": nic})
    daemon.cli("start", "c1")
    meta = daemon.api("GET", "/1.0/instances/c1")[1]["metadata"]
    real = meta["config"]["volatile.eth0.host_name"]
    stale = {**meta["config"], "volatile.eth0.host_name": "vethstale0", "user.a": "1"}
    put = {"config": stale, "devices": meta["devices"], "profiles": []}
    code, doc = daemon.api("PUT", "/1.0/instances/c1", put)
    assert code == 202 and daemon.wait_op(doc)["err"] == ""
    config = daemon.api("GET", "/1.0/instances/c1")[1]["metadata"]["config"]
    assert config["volatile.eth0.host_name"] == real and config["user.a"] == "1"
    assert daemon.ns.link(real) is not None and daemon.ns.link("vethstale0") is None
    # A PATCH names what it means to change: a volatile key there is refused.
    code, doc = daemon.api("PATCH", "/1.0/instances/c1", {"config": {"volatile.eth0.host_name": "x"}})
    assert code == 202 and "managed by pincus" in daemon.wait_op(doc)["err"]
    daemon.cli("stop", "-f", "c1")
