"""Three pincusd, each in its own network namespace and PINCUS_DIR, joined into one cluster with
join tokens through `admin init --preseed`; the members reach each other over veths on a bridge
in a fourth namespace (10.250.N.0/24)."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.pincus_testlib import Daemon, NetNS, cleanup_dir, kill_leftovers
from tests.storagelib import seen_by_daemon, subvolume_show

if not Path("/usr/lib/x86_64-linux-gnu/libdqlite.so.0").exists():
    pytest.skip("libdqlite0 is not installed", allow_module_level=True)

PORT = 8443


class Cluster:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.subnet = f"10.250.{random.randint(100, 250)}"
        self.switch = NetNS(f"{prefix}sw")
        self.switch.add_bridge("br0")
        self.members: list[Daemon] = []

    def address(self, i: int) -> str:
        return f"{self.subnet}.{i + 1}:{PORT}"

    def form(self) -> tuple[Daemon, Daemon, Daemon]:
        """Three members: m1 enables the cluster, m2 and m3 join it with tokens."""
        d1, d2, d3 = (self.add_daemon() for _ in range(3))
        d1.cli("config", "set", "cluster.https_address", self.address(0))
        d1.cli("cluster", "enable", "m1")
        for i, d in ((1, d2), (2, d3)):
            d.cli(
                "admin",
                "init",
                "--preseed",
                stdin=_preseed(f"m{i + 1}", self.address(i), _token(d1, f"m{i + 1}")),
            )
        return d1, d2, d3

    def add_daemon(self) -> Daemon:
        i = len(self.members)
        ns = NetNS(f"{self.prefix}m{i}")
        self.switch.ip("link", "add", f"p{i}", "type", "veth", "peer", "name", "eth1", "netns", ns.path)
        self.switch.ip("link", "set", f"p{i}", "master", "br0", "up")
        ns.ip("addr", "add", f"{self.subnet}.{i + 1}/24", "dev", "eth1")
        ns.ip("link", "set", "eth1", "up")
        d = Daemon(ns, Path(tempfile.mkdtemp(prefix="pincus-test-")))
        self.members.append(d)
        d.start()
        return d

    def close(self) -> None:
        # SIGKILL: a member whose peers are gone would wait for a quorum to shut down cleanly.
        for d in self.members:
            log = d.dir / "pincusd.stderr"
            print(f"--- {d.ns.name}\n" + (log.read_text()[-3000:] if log.exists() else "(no log)"))
            d.stop(signal.SIGKILL)
            kill_leftovers(d.dir)
            d.ns.delete()
            cleanup_dir(d.dir)
        self.switch.delete()


def _eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.3)


def _token(d: Daemon, name: str) -> str:
    out = d.cli("cluster", "add", name).stdout.splitlines()
    assert out[0] == f"Member {name} join token:"
    return out[1]


def _preseed(name: str, address: str, token: str) -> str:
    return json.dumps({"cluster": {"enabled": True, "server_name": name, "server_address": address,
                                   "cluster_token": token}})  # fmt: skip


def _create_profile(d: Daemon, name: str) -> bool:
    """True once it exists (a write whose answer was lost to a leader change may have been applied)."""
    r = d.cli("profile", "create", name, check=False)
    return r.returncode == 0 or "already exists" in r.stderr


def _clustered(d: Daemon) -> bool | None:
    """Whether D says it is clustered; None while it restarts."""
    try:
        status, doc = d.api("GET", "/1.0/cluster")
    except (OSError, ValueError):
        return None
    return bool(doc["metadata"]["enabled"]) if status == 200 else None


def _members(d: Daemon) -> dict[str, str]:
    return {
        m["server_name"]: m["status"] for m in json.loads(d.cli("cluster", "list", "--format", "json").stdout)
    }


@pytest.fixture
def cluster(prefix: str) -> Iterator[Cluster]:
    c = Cluster(prefix)
    try:
        yield c
    finally:
        c.close()


def test_three_members_share_state_survive_a_killed_member_and_catch_it_up(cluster: Cluster) -> None:
    d1, d2, d3 = (cluster.add_daemon() for _ in range(3))
    d1.cli("config", "set", "core.https_address", cluster.address(0))
    assert d1.cli("config", "get", "core.https_address").stdout.strip() == cluster.address(0)
    d1.cli("config", "set", "cluster.offline_threshold=4")
    t0 = time.monotonic()
    d1.cli("cluster", "enable", "m1")
    print(f"cluster enable (copy into dqlite, restart): {time.monotonic() - t0:.2f} s")
    assert (d1.dir / "pincus.db.pre-cluster").exists() and not (d1.dir / "pincus.db").exists()
    assert oct((d1.dir / "cluster.key").stat().st_mode & 0o777) == "0o600"

    for i, d in ((1, d2), (2, d3)):
        token = _token(d1, f"m{i + 1}")
        t0 = time.monotonic()
        d.cli("admin", "init", "--preseed", stdin=_preseed(f"m{i + 1}", cluster.address(i), token))
        print(f"join of m{i + 1} (admin init --preseed, restart, voter): {time.monotonic() - t0:.2f} s")
    assert d3.cli("config", "get", "cluster.offline_threshold").stdout.strip() == "4"
    for d in (d1, d2, d3):
        assert _members(d) == {"m1": "Online", "m2": "Online", "m3": "Online"}
    # The database's own traffic rides on the API listener (TLS): no other TCP port is open.
    for i, d in enumerate((d1, d2, d3)):
        listening = {line.split()[3] for line in d.ns.run("ss", "-ltnH").stdout.splitlines()}
        assert listening == {cluster.address(i)}
    roles = {m["server_name"]: m["roles"] for m in json.loads(d2.cli("cluster", "list", "-f", "json").stdout)}
    assert sum("database-leader" in r for r in roles.values()) == 1
    assert all("database" in r for r in roles.values())

    # A network and a profile made on one member are everyone's.
    net = f"{cluster.prefix}n"
    d1.cli("network", "create", net, "ipv4.address=none", "ipv6.address=none")
    d2.cli("profile", "create", "shared")
    for d in (d1, d2, d3):
        assert net in d.cli("network", "list", "-f", "csv").stdout
        assert "shared" in d.cli("profile", "list", "-f", "csv").stdout
    # ... and made on each member's host.
    for d in (d1, d2, d3):
        assert d.ns.link(net) is not None

    # Instances live on a member: placed with --target or on the member with the fewest.
    d1.cli("admin", "init", "--auto")
    d1.cli("init", "c1", "--empty", "--target", "m2")
    d3.cli("init", "c2", "--empty")
    where = {i["name"]: i["location"] for i in json.loads(d1.cli("list", "-f", "json").stdout)}
    assert where["c1"] == "m2" and where["c2"] in ("m1", "m3")
    assert "LOCATION" in d3.cli("list").stdout
    # A change asked of any member is made by the instance's own.
    d3.cli("config", "set", "c1", "user.where=here")
    assert d1.cli("config", "get", "c1", "user.where").stdout.strip() == "here"
    assert "not found" in d1.fails("init", "c3", "--empty", "--target", "nowhere")

    # SIGKILL the database leader: the other two elect another, go on writing, see it Offline.
    (leader,) = [name for name, r in roles.items() if "database-leader" in r]
    by_name = {"m1": d1, "m2": d2, "m3": d3}
    victim = by_name.pop(leader)
    (a, b), (name_a, name_b) = by_name.values(), by_name.keys()
    a.cli("init", "on-leader", "--empty", "--target", leader)
    victim.stop(signal.SIGKILL)
    t0 = time.monotonic()
    _eventually(lambda: _create_profile(a, "while-down"))
    print(f"first write after SIGKILL of the leader: {time.monotonic() - t0:.2f} s")
    b.cli("profile", "set", "while-down", f"user.note=written-while-{leader}-was-down")
    _eventually(lambda: _members(b) == {name_a: "Online", name_b: "Online", leader: "Offline"}, timeout=20)
    roles = {m["server_name"]: m["roles"] for m in json.loads(a.cli("cluster", "list", "-f", "json").stdout)}
    assert "database-leader" in roles[name_a] + roles[name_b]
    # Its instances are listed as Offline, not lost.
    status = {i["name"]: (i["location"], i["status"]) for i in json.loads(a.cli("list", "-f", "json").stdout)}
    assert status["on-leader"] == (leader, "Offline")
    assert all(s == "Offline" for loc, s in status.values() if loc == leader)
    assert all(s == "Stopped" for loc, s in status.values() if loc != leader)

    # It comes back, catches up, and is Online again.
    victim.start(timeout=60)
    note = victim.cli("profile", "get", "while-down", "user.note").stdout.strip()
    assert note == f"written-while-{leader}-was-down"
    _eventually(lambda: _members(a) == {"m1": "Online", "m2": "Online", "m3": "Online"}, timeout=20)


def test_bad_join_tokens_are_refused_and_change_nothing(cluster: Cluster) -> None:
    d1, d2 = cluster.add_daemon(), cluster.add_daemon()
    d1.cli("config", "set", "cluster.https_address", cluster.address(0))
    d1.cli("cluster", "enable", "m1")
    token = _token(d1, "m2")
    doc = json.loads(base64.b64decode(token))

    def forged(**changes: Any) -> str:
        return base64.b64encode(json.dumps({**doc, **changes}).encode()).decode()

    addr = cluster.address(1)
    assert "not base64" in d2.fails("admin", "init", "--preseed", stdin=_preseed("m2", addr, "garbage!"))
    assert 'for member "m2", not "m9"' in d2.fails(
        "admin", "init", "--preseed", stdin=_preseed("m9", addr, token)
    )
    wrong = forged(secret="0" * 64)
    assert 'Wrong join token for member "m2"' in d2.fails(
        "admin", "init", "--preseed", stdin=_preseed("m2", addr, wrong)
    )
    other_cert = forged(fingerprint="1" * 64)
    assert "not the cluster's" in d2.fails(
        "admin", "init", "--preseed", stdin=_preseed("m2", addr, other_cert)
    )
    expired = forged(expires_at="2020-01-01T00:00:00Z")
    assert "expired" in d2.fails("admin", "init", "--preseed", stdin=_preseed("m2", addr, expired))
    # Nothing changed on either side: the token is still there, d2 is still a single server.
    assert [t["server_name"] for t in json.loads(d1.cli("cluster", "list-tokens", "-f", "json").stdout)] == [
        "m2"
    ]
    assert d2.api("GET", "/1.0/cluster")[1]["metadata"]["enabled"] is False
    assert not (d2.dir / "cluster.json").exists() and not (d2.dir / "cluster.crt").exists()

    d2.cli("admin", "init", "--preseed", stdin=_preseed("m2", addr, token))
    assert _members(d1) == {"m1": "Online", "m2": "Online"}
    d3 = cluster.add_daemon()
    used = d3.fails("admin", "init", "--preseed", stdin=_preseed("m2", cluster.address(2), token))
    assert 'No join token for member "m2"' in used
    d1.cli("cluster", "add", "m3")
    d1.cli("cluster", "revoke-token", "m3")
    assert json.loads(d1.cli("cluster", "list-tokens", "-f", "json").stdout) == []
    # A joining server with networks of its own is refused before anything is asked of the cluster.
    d3.cli("network", "create", f"{cluster.prefix}x", "ipv4.address=none", "ipv6.address=none")
    token3 = _token(d1, "m3")
    assert "has networks" in d3.fails(
        "admin", "init", "--preseed", stdin=_preseed("m3", cluster.address(2), token3)
    )

    # Removed by another member, m2 leaves at its next heartbeat: a single server again.
    d1.cli("profile", "create", "of-the-cluster")
    assert "would leave one" in d1.fails("cluster", "remove", "m2")
    d1.cli("cluster", "remove", "m2", "--force")
    assert _members(d1) == {"m1": "Online"}
    _eventually(lambda: _clustered(d2) is False, timeout=30)
    assert not (d2.dir / "cluster.json").exists() and not (d2.dir / "cluster.key").exists()
    assert (d2.dir / "database.removed").is_dir()
    assert "of-the-cluster" not in d2.cli("profile", "list", "-f", "csv").stdout


def test_evacuate_stops_a_members_running_instances_and_restore_starts_them_again(cluster: Cluster) -> None:
    d1, d2 = cluster.add_daemon(), cluster.add_daemon()
    d1.cli("config", "set", "cluster.https_address", cluster.address(0))
    d1.cli("cluster", "enable", "m1")
    d2.cli("admin", "init", "--preseed", stdin=_preseed("m2", cluster.address(1), _token(d1, "m2")))
    d1.cli("admin", "init", "--auto")
    d2.cli("launch", "busybox", "ev1", "--target", "m2")
    d2.cli("init", "ev2", "--empty", "--target", "m2")  # stopped: restore leaves it so

    def pid(name: str) -> int:
        return int(json.loads(d2.cli("query", f"/1.0/instances/{name}/state").stdout).get("pid") or 0)

    first = pid("ev1")
    assert first > 0 and Path(f"/proc/{first}").exists()
    d1.cli("cluster", "evacuate", "m2")  # asked of another member: forwarded to m2
    assert _members(d1)["m2"] == "Evacuated"
    assert not Path(f"/proc/{first}").exists()
    status = {i["name"]: i["status"] for i in json.loads(d1.cli("list", "-f", "json").stdout)}
    assert status == {"ev1": "Stopped", "ev2": "Stopped"}
    # Nothing new is placed on an evacuated member, and it cannot be targeted.
    d1.cli("init", "ev3", "--empty")
    assert {i["name"]: i["location"] for i in json.loads(d1.cli("list", "-f", "json").stdout)}["ev3"] == "m1"
    assert "Evacuated" in d1.fails("init", "ev4", "--empty", "--target", "m2")

    d1.cli("cluster", "restore", "m2")
    assert _members(d1)["m2"] == "Online"
    again = pid("ev1")
    assert again > 0 and again != first and Path(f"/proc/{again}").exists()
    status = {i["name"]: i["status"] for i in json.loads(d2.cli("list", "-f", "json").stdout)}
    assert status == {"ev1": "Running", "ev2": "Stopped", "ev3": "Stopped"}
    # A member with instances is not removed without --force.
    assert "has instances" in d1.fails("cluster", "remove", "m2")
    # Renamed from another member: it takes its new name, its instances go with it.
    d1.cli("cluster", "rename", "m2", "n2")
    _eventually(lambda: _members(d2) == {"m1": "Online", "n2": "Online"}, timeout=20)
    where = {i["name"]: i["location"] for i in json.loads(d1.cli("list", "-f", "json").stdout)}
    assert where == {"ev1": "n2", "ev2": "n2", "ev3": "m1"}
    assert json.loads((d2.dir / "cluster.json").read_text())["name"] == "n2"
    d1.cli("stop", "ev1", "--force")  # forwarded to it under its new name
    assert not Path(f"/proc/{again}").exists()

    # An image imported on n2 is fetched by m1 for an instance there (checked against its sha256).
    fp = json.loads(d2.cli("image", "list", "-f", "json").stdout)[0]["fingerprint"]
    assert (d2.dir / "images" / fp).exists() and not (d1.dir / "images" / fp).exists()
    d1._image_imported = True  # shared with the cluster: not imported again on m1
    d1.cli("launch", "busybox", "f1", "--target", "m1")
    assert (d1.dir / "images" / fp).read_bytes() == (d2.dir / "images" / fp).read_bytes()
    f1_pid = int(json.loads(d1.cli("query", "/1.0/instances/f1/state").stdout)["pid"])
    assert Path(f"/proc/{f1_pid}").exists()
    d1.cli("delete", "-f", "f1", "ev1")
    # Both members unpacked it on their own part of the pool.
    assert all(list(d.dir.glob(f"storage-pools/*/images/{fp}")) for d in (d1, d2))
    d1.cli("image", "delete", fp)  # gone from every member's store
    assert not (d1.dir / "images" / fp).exists() and not (d2.dir / "images" / fp).exists()
    # And from every member's pools: the other member's copy went by its path.
    assert [p for d in (d1, d2) for p in d.dir.glob(f"storage-pools/*/images/{fp}")] == []


TLS_PROBE = """
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if len(sys.argv) > 3:
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
host, port = sys.argv[1].rsplit(":", 1)
with ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10)) as s:
    s.sendall(b"GET /1.0 HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
print(data.split(b"\\r\\n", 1)[0].decode())
"""


def test_the_api_over_tls_serves_members_only(cluster: Cluster) -> None:
    d1 = cluster.add_daemon()
    assert 'Invalid server config key "core.bogus"' in d1.fails("config", "set", "core.bogus", "1")
    assert "not an IP address" in d1.fails("config", "set", "core.https_address=example.org:8443")
    # An address this host does not have: refused before anything is recorded or made.
    assert "Cannot listen on 10.250.254.254:8443" in d1.fails(
        "config", "set", "core.https_address=10.250.254.254:8443"
    )
    assert d1.cli("config", "get", "core.https_address").stdout.strip() == ""
    assert not (d1.dir / "server.crt").exists() and not (d1.dir / "server.key").exists()
    d1.cli("config", "set", "core.https_address", cluster.address(0))
    # A single server's listener has its own certificate and trusts nobody yet.
    assert (d1.dir / "server.key").stat().st_mode & 0o777 == 0o600
    probe = d1.ns.run(sys.executable, "-c", TLS_PROBE, cluster.address(0)).stdout
    assert probe.startswith("HTTP/1.1 403"), probe
    d1.cli("cluster", "enable", "m1")
    crt, key = str(d1.dir / "cluster.crt"), str(d1.dir / "cluster.key")
    assert d1.ns.run(sys.executable, "-c", TLS_PROBE, cluster.address(0)).stdout.startswith("HTTP/1.1 403")
    member = d1.ns.run(sys.executable, "-c", TLS_PROBE, cluster.address(0), crt, key).stdout
    assert member.startswith("HTTP/1.1 200"), member
    d1.cli("config", "unset", "core.https_address")
    assert d1.cli("config", "get", "cluster.https_address").stdout.strip() == cluster.address(0)
    # The member still listens: its cluster address is the listener's too.
    assert d1.ns.run(sys.executable, "-c", TLS_PROBE, cluster.address(0), crt, key).stdout.startswith(
        "HTTP/1.1 200"
    )


def test_a_physical_network_takes_each_members_own_parent_and_errs_only_where_one_is_missing(
    cluster: Cluster,
) -> None:
    d1, d2, d3 = cluster.form()
    # Each member has its own uplink NIC, under a different name (m3's is missing).
    d1.ns.add_standin_nic("upa")
    d2.ns.add_standin_nic("upb")
    up = f"{cluster.prefix}up"

    assert "member-specific" in d1.fails("network", "create", up, "--type=physical", "parent=upa")
    assert "may not be used as member-specific" in d1.fails(
        "network", "create", up, "--type=physical", "--target=m1", "ipv4.gateway=10.250.9.1/24"
    )
    assert d1.cli("network", "create", up, "--type=physical", "--target=m1", "parent=upa").stdout.strip() == (
        f"Network {up} pending on member m1"
    )
    d2.cli("network", "create", up, "--type=physical", "--target=m2", "parent=upb")
    d1.cli("network", "create", up, "--type=physical", "--target=m3", "parent=upc")
    shown = json.loads(d3.cli("query", f"/1.0/networks/{up}").stdout)
    assert shown["status"] == "Pending" and shown["locations"] == []

    err = d2.fails("network", "create", up, "--type=physical")
    assert "Errored on m3" in err and "upc" in err
    shown = json.loads(d1.cli("query", f"/1.0/networks/{up}").stdout)
    assert shown["status"] == "Errored" and shown["locations"] == ["m1", "m2"]
    # Each member's view has its own parent; the cluster-wide config has none.
    assert "parent: upa" in d3.cli("network", "show", up, "--target", "m1").stdout
    assert "parent: upb" in d3.cli("network", "show", up, "--target", "m2").stdout
    assert json.loads(d2.cli("query", f"/1.0/networks/{up}").stdout)["config"]["parent"] == "upb"
    # Usable where it exists: a container's NIC on it takes m2's own parent there (moved into the
    # container, as the kernel shows), and gives it back at delete.
    d2.cli("admin", "init", "--auto")
    d2.cli("launch", "busybox", "u1", "--target", "m2", "-n", up)
    assert d2.ns.link("upb") is None
    d2.cli("delete", "-f", "u1")
    assert d2.ns.link("upb") is not None

    d1.cli("network", "delete", up)
    for d in (d1, d2, d3):
        assert up not in d.cli("network", "list", "-f", "csv").stdout


def test_the_whole_cluster_stopped_comes_back_when_its_members_start_again(cluster: Cluster) -> None:
    d1, d2, d3 = cluster.form()
    d2.cli("profile", "create", "kept")
    t0 = time.monotonic()
    for d in (d1, d2, d3):
        d.stop()
    print(f"stopping the three members (SIGTERM): {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    # No member can open the database alone: each waits for a quorum, reachable meanwhile.
    threads = [threading.Thread(target=d.start, kwargs={"timeout": 60}) for d in (d3, d1, d2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"starting them again, all at once, until each answers: {time.monotonic() - t0:.1f} s")
    for d in (d1, d2, d3):
        assert "kept" in d.cli("profile", "list", "-f", "csv").stdout
    _eventually(lambda: _members(d1) == {"m1": "Online", "m2": "Online", "m3": "Online"}, timeout=20)


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1:
        seen.add(pid)
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    return seen


def test_a_stopped_instance_moves_with_its_volume_to_another_member_and_nothing_else_does(
    cluster: Cluster,
) -> None:
    d1, d2 = cluster.add_daemon(), cluster.add_daemon()
    d1.cli("config", "set", "cluster.https_address", cluster.address(0))
    d1.cli("cluster", "enable", "m1")
    d2.cli("admin", "init", "--preseed", stdin=_preseed("m2", cluster.address(1), _token(d1, "m2")))
    d1.cli("admin", "init", "--auto")
    d1.cli("launch", "busybox", "mv1", "--target", "m1")
    d1.cli("exec", "mv1", "--", "sh", "-c", "echo moved-along > /root/note && chown 7:8 /root/note")
    containers1 = d1.dir / "storage-pools" / "default" / "containers"
    vol1, vol2 = containers1 / "mv1", d2.dir / "storage-pools" / "default" / "containers" / "mv1"

    def where() -> str:
        return str({i["name"]: i["location"] for i in json.loads(d2.cli("list", "-f", "json").stdout)}["mv1"])

    # A running instance does not move; neither does one to a member that cannot take it.
    assert "Instance must be stopped to be moved" in d2.fails("move", "mv1", "--target", "m2")
    d1.cli("stop", "mv1", "--force")
    shown = yaml.safe_load(d1.cli("config", "show", "mv1").stdout)
    note = vol1 / "rootfs" / "root" / "note"
    owner = (note.stat().st_uid, note.stat().st_gid)
    # As the instance left them: the image's ids (an idmapped mount) or shifted ones (chown).
    assert owner in ((7, 8), (7 + 1000000, 8 + 1000000)) or owner[0] > 65536
    os.setxattr(note, "user.pincus-test", b"kept")
    assert 'Cluster member "nowhere" not found' in d1.fails("move", "mv1", "--target", "nowhere")
    assert 'already on member "m1"' in d1.fails("move", "mv1", "--target", "m1")
    d1.cli("cluster", "evacuate", "m2")
    assert 'Cluster member "m2" is Evacuated' in d1.fails("move", "mv1", "--target", "m2")
    d1.cli("cluster", "restore", "m2")
    # A failure after the target made its copy (the source cannot set its own aside) undoes it all.
    subprocess.run(["chattr", "+i", str(containers1)], check=True)
    try:
        assert "rename" in d1.fails("move", "mv1", "--target", "m2")
    finally:
        subprocess.run(["chattr", "-i", str(containers1)], check=True)
    assert where() == "m1" and (vol1 / "rootfs" / "root" / "note").exists()
    assert list(vol2.parent.iterdir()) == []  # the target's copy went, partial or whole
    # A target that cannot make the volume: refused there, nothing changes on either side.
    subprocess.run(["chattr", "+i", str(vol2.parent)], check=True)
    try:
        assert "Operation not permitted" in d1.fails("move", "mv1", "--target", "m2")
    finally:
        subprocess.run(["chattr", "-i", str(vol2.parent)], check=True)
    assert where() == "m1" and note.read_text() == "moved-along\n" and list(vol2.parent.iterdir()) == []
    # A copy a killed move left on the target (the instance lives elsewhere) is stale: replaced.
    vol2.mkdir()
    (vol2 / "stale").write_text("left by a move whose source was killed")

    t0 = time.monotonic()
    d2.cli("move", "mv1", "--target", "m2")  # asked of the other member: run by m1, where it lived
    print(f"move of a stopped busybox container m1 -> m2: {time.monotonic() - t0:.2f} s")
    assert where() == "m2"
    assert not vol1.exists() and not (d1.dir / "containers" / "mv1").exists()
    moved = vol2 / "rootfs" / "root" / "note"
    assert moved.read_text() == "moved-along\n" and (moved.stat().st_uid, moved.stat().st_gid) == owner
    assert os.getxattr(moved, "user.pincus-test") == b"kept"
    assert not (vol2 / "stale").exists()
    # Config, devices and volatile keys (the idmap its volume is shifted to, MACs) came unchanged.
    assert yaml.safe_load(d1.cli("config", "show", "mv1").stdout) == shown

    d1.cli("start", "mv1")  # forwarded to m2, where it runs now
    pid = int(json.loads(d1.cli("query", "/1.0/instances/mv1/state").stdout)["pid"])
    assert d2.proc is not None and d2.proc.pid in _ancestors(pid)
    assert d2.cli("exec", "mv1", "--", "cat", "/root/note").stdout == "moved-along\n"
    assert d2.cli("exec", "mv1", "--", "stat", "-c", "%u:%g", "/root/note").stdout.strip() == "7:8"

    # Moved again under a new name (`move NAME NEWNAME` renames), on a btrfs pool: the target makes
    # a subvolume of its own (its part of the pool made on first use) and the source's goes.
    d1.cli("storage", "create", "fast", "btrfs", "size=200MiB")
    d1.cli("init", "busybox", "bt1", "-s", "fast", "--target", "m1")
    d2.cli("move", "bt1", "bt2")
    d2.cli("move", "bt2", "--target", "m2")
    fast1, fast2 = (d.dir / "storage-pools" / "fast" / "containers" for d in (d1, d2))
    assert subvolume_show(d2, fast2 / "bt2")["Name"] == "bt2"
    assert not seen_by_daemon(d1, fast1 / "bt2").exists() and list(seen_by_daemon(d1, fast1).iterdir()) == []
    d2.cli("start", "bt2")
    assert d2.cli("exec", "bt2", "--", "cat", "/etc/hostname").stdout.strip() == "bt2"
