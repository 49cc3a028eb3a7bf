"""The cluster database for real: three dqlite members, each its own process (libdqlite through
ctypes) on a free 127.0.0.1 port, with pincus's own schema and repositories on top (DqliteStore)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pincus.db import dqlite_client, instances, networks
from pincus.db.dqlite_store import DqliteStore
from pincus.db.migrations import MIGRATIONS
from pincus.db.store import Store, open_store
from pincus.errors import ConflictError, HostError

pytest.importorskip("ctypes")
if not Path("/usr/lib/x86_64-linux-gnu/libdqlite.so.0").exists():
    pytest.skip("libdqlite0 is not installed", allow_module_level=True)

SRC = Path(__file__).resolve().parents[2] / "src"
MEMBER = """
import signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from pincus.host.dqlite_node import DqliteNode
node = DqliteNode(int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), network_latency_ms=67)
signal.signal(signal.SIGTERM, lambda *_: (node.stop(), sys.exit(0)))
print("ready", flush=True)
while True:
    signal.pause()
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def members(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Three members, joined as voters; every process is killed afterwards, failure included."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for i, port in enumerate(_free_ports(3), start=1):
            addr = f"127.0.0.1:{port}"
            procs[addr] = subprocess.Popen(
                [sys.executable, "-c", MEMBER, str(SRC), str(i), addr, str(tmp_path / f"m{i}")],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            out = procs[addr].stdout
            assert out is not None and out.readline() == b"ready\n"
        first, *others = procs
        leader = dqlite_client.connect_leader([first], None)
        for i, addr in enumerate(others, start=2):
            leader.add(i, addr)
        assert sorted((i, role) for i, _, role in leader.members()) == [(1, 0), (2, 0), (3, 0)]
        leader.close()
        yield procs
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def _leader(addresses: list[str]) -> str:
    conn = dqlite_client.connect_leader(addresses, None)
    conn.close()
    return conn.address


def test_an_instance_written_through_one_member_is_read_through_another_after_the_leader_dies(
    members: dict[str, subprocess.Popen[bytes]],
) -> None:
    addresses = list(members)
    leader = _leader(addresses)
    writer = DqliteStore([leader])
    assert writer.schema_version == len(MIGRATIONS)
    rec = instances.InstanceRecord(name="c1", type="container", config={"limits.cpu": "1"})
    instances.create(writer, rec)
    networks.create(writer, networks.NetworkRecord("br0", "bridge", config={"ipv4.address": "10.250.7.1/24"}))
    with pytest.raises(ConflictError):
        instances.create(writer, instances.InstanceRecord(name="c1", type="container"))
    writer.close()

    members[leader].send_signal(signal.SIGKILL)
    members[leader].wait()
    survivors = [a for a in addresses if a != leader]
    reader = DqliteStore([survivors[1]])  # redirected to whichever survivor leads now
    got = instances.get(reader, "c1")
    assert got is not None and got.config == {"limits.cpu": "1"}
    assert networks.get(reader, "br0") is not None
    assert _leader(survivors) in survivors

    # The two survivors are a quorum: writes go on.
    t0 = time.monotonic()
    instances.create(reader, instances.InstanceRecord(name="c2", type="container"))
    assert time.monotonic() - t0 < 10
    assert instances.names(DqliteStore([survivors[0]])) == ["c1", "c2"]


def test_a_cluster_without_quorum_refuses_writes_with_a_clear_error(
    members: dict[str, subprocess.Popen[bytes]],
) -> None:
    addresses = list(members)
    store = DqliteStore(addresses, timeout=1.0)
    for addr in addresses[:2]:
        members[addr].send_signal(signal.SIGKILL)
        members[addr].wait()
    store.close()
    with pytest.raises(HostError, match="No dqlite leader reachable"):
        DqliteStore(addresses[2:], timeout=2.0)


def test_one_store_carries_on_with_the_new_leader_after_its_leader_is_killed(
    members: dict[str, subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """The Store a daemon holds is not re-made: its next transaction begins on the new leader."""
    assert type(open_store(tmp_path / "pincus.db")) is Store  # no cluster: plain SQLite
    store = open_store(tmp_path / "pincus.db", list(members))
    instances.create(store, instances.InstanceRecord(name="before", type="container"))
    leader = _leader(list(members))
    members[leader].send_signal(signal.SIGKILL)
    members[leader].wait()
    instances.create(store, instances.InstanceRecord(name="after", type="container"))
    assert instances.names(store) == ["after", "before"]
    assert _leader(list(members)) != leader
