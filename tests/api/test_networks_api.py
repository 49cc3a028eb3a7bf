"""The REST API against a real pincusd: envelope, status codes, and refused requests change nothing."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.pincus_testlib import BIN, NSEXEC, Daemon


def test_root_reports_server_and_kernel_features(daemon: Daemon) -> None:
    code, doc = daemon.api("GET", "/1.0")
    assert code == 200 and doc["type"] == "sync" and doc["status_code"] == 200
    env = doc["metadata"]["environment"]
    assert env["kernel_version"] == os.uname().release
    assert env["firewall"] == "nftables"
    feats = env["kernel_features"]
    assert set(feats) == {
        "bridge_vlan_filtering",
        "vlan_8021q",
        "tc_police",
        "dummy",
        "nftables_bridge",
        "kvm",
    }
    # The daemon answers from inside the test's netns; its pid is the one we started (via nsexec).
    assert env["server_pid"] > 1


def test_create_get_list_patch_delete_bridge_network(daemon: Daemon, prefix: str) -> None:
    name = f"{prefix}br"
    code, doc = daemon.api(
        "POST",
        "/1.0/networks",
        {"name": name, "config": {"ipv4.address": "10.250.3.1/24", "ipv6.address": "none"}},
    )
    assert code == 200, doc
    code, doc = daemon.api("GET", f"/1.0/networks/{name}")
    assert code == 200
    net = doc["metadata"]
    assert net["type"] == "bridge" and net["managed"] is True
    assert net["config"] == {"ipv4.address": "10.250.3.1/24", "ipv6.address": "none"}
    assert net["used_by"] == []
    code, doc = daemon.api("GET", "/1.0/networks")
    assert f"/1.0/networks/{name}" in doc["metadata"]
    code, doc = daemon.api("PATCH", f"/1.0/networks/{name}", {"config": {"ipv4.nat": "true"}})
    assert code == 200, doc
    _, doc = daemon.api("GET", f"/1.0/networks/{name}")
    assert doc["metadata"]["config"] == {
        "ipv4.address": "10.250.3.1/24",
        "ipv6.address": "none",
        "ipv4.nat": "true",
    }
    code, doc = daemon.api("PUT", f"/1.0/networks/{name}", {"config": {"ipv4.address": "none"}})
    assert code == 200
    _, doc = daemon.api("GET", f"/1.0/networks/{name}")
    assert doc["metadata"]["config"] == {"ipv4.address": "none"}
    code, doc = daemon.api("DELETE", f"/1.0/networks/{name}")
    assert code == 200
    code, doc = daemon.api("GET", f"/1.0/networks/{name}")
    assert code == 404 and doc["type"] == "error" and doc["error_code"] == 404


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"name": "x", "config": {"bogus.key": "1"}}, 400, '"bogus.key"'),
        ({"name": "x", "config": {"ipv4.address": "10.250.1.0/33"}}, 400, "ipv4.address"),
        ({"name": "x", "config": {"bridge.mtu": "70000"}}, 400, "bridge.mtu"),
        ({"name": "x", "config": {"ipv4.dhcp.expiry": "1h\nport=53"}}, 400, "ipv4.dhcp.expiry"),
        ({"name": "x", "type": "nope"}, 400, "nope"),
        ({"name": "bad name"}, 400, "name"),
        ({"name": "a" * 16}, 400, "name"),
        ({"name": ".."}, 400, "name"),
        ({"name": "x/y"}, 400, "name"),
        ({"name": "x", "type": "physical", "config": {"parent": "doesnotexist0"}}, 404, "doesnotexist0"),
        ({"name": "x", "type": "physical", "config": {}}, 400, "parent"),
        ({"name": "x", "type": "physical", "config": {"parent": "lo", "vlan": "4095"}}, 400, "4095"),
    ],
)
def test_bad_network_requests_are_refused_and_change_nothing(
    daemon: Daemon, body: dict[str, object], code: int, needle: str
) -> None:
    before = daemon.db_dump()
    got, doc = daemon.api("POST", "/1.0/networks", body)
    assert got == code, doc
    assert doc["type"] == "error" and needle in doc["error"]
    assert daemon.db_dump() == before


def test_duplicate_network_is_a_conflict(daemon: Daemon, prefix: str) -> None:
    assert daemon.api("POST", "/1.0/networks", {"name": f"{prefix}a"})[0] == 200
    before = daemon.db_dump()
    code, doc = daemon.api("POST", "/1.0/networks", {"name": f"{prefix}a"})
    assert code == 409 and "already exists" in doc["error"]
    assert daemon.db_dump() == before


def test_physical_parent_sharing_rules(daemon: Daemon, prefix: str) -> None:
    ns = daemon.ns
    nic = f"{prefix}nic"
    ns.add_standin_nic(nic)
    br = f"{prefix}lan"
    ns.add_bridge(br)

    def create(name: str, **config: str) -> tuple[int, dict[str, object]]:
        return daemon.api("POST", "/1.0/networks", {"name": name, "type": "physical", "config": config})

    # A bridge parent may be shared.
    assert create("pb1", parent=br)[0] == 200
    assert create("pb2", parent=br)[0] == 200
    # A plain NIC only with distinct VLANs on both.
    assert create("pn1", parent=nic)[0] == 200
    before = daemon.db_dump()
    code, doc = create("pn2", parent=nic)
    assert code == 409 and '"pn1"' in str(doc["error"])
    code, doc = create("pn2", parent=nic, vlan="10")
    assert code == 409
    assert daemon.db_dump() == before
    assert daemon.api("DELETE", "/1.0/networks/pn1")[0] == 200
    assert create("pv1", parent=nic, vlan="10")[0] == 200
    assert create("pv2", parent=nic, vlan="20")[0] == 200
    code, _ = create("pv3", parent=nic, vlan="10")
    assert code == 409
    # vlan.tagged needs a bridge parent.
    code, doc = create("pt1", parent=nic, **{"vlan.tagged": "10,20"})
    assert code == 400 and "bridge" in str(doc["error"])
    assert create("pt2", parent=br, **{"vlan.tagged": "10,20-30"})[0] == 200


def test_physical_network_reports_whether_parent_is_a_bridge(daemon: Daemon, prefix: str) -> None:
    br, nic = f"{prefix}lan", f"{prefix}nic"
    daemon.ns.add_bridge(br)
    daemon.ns.add_standin_nic(nic)
    daemon.api("POST", "/1.0/networks", {"name": "onbr", "type": "physical", "config": {"parent": br}})
    daemon.api("POST", "/1.0/networks", {"name": "onnic", "type": "physical", "config": {"parent": nic}})
    assert daemon.api("GET", "/1.0/networks/onbr")[1]["metadata"]["parent_is_bridge"] is True
    assert daemon.api("GET", "/1.0/networks/onnic")[1]["metadata"]["parent_is_bridge"] is False


def test_unmanaged_host_interfaces_are_listed(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}lan"
    daemon.ns.add_bridge(br)
    _, doc = daemon.api("GET", "/1.0/networks?recursion=1")
    by_name = {n["name"]: n for n in doc["metadata"]}
    assert by_name[br]["managed"] is False and by_name[br]["type"] == "bridge"
    assert by_name["lo"]["type"] == "loopback"


def test_unknown_route_and_method(daemon: Daemon) -> None:
    assert daemon.api("GET", "/1.0/nothing")[0] == 404
    assert daemon.api("DELETE", "/1.0")[0] == 405


def test_second_daemon_on_same_dir_is_refused(daemon: Daemon) -> None:
    r2 = subprocess.run(
        [*NSEXEC, daemon.ns.name, str(BIN / "pincusd")],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r2.returncode != 0 and "already running" in r2.stderr
    assert daemon.api("GET", "/1.0")[0] == 200


def test_state_dir_and_socket_permissions(daemon: Daemon) -> None:
    st = (daemon.dir / "unix.socket").stat()
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_uid == 0
    assert oct(daemon.dir.stat().st_mode & 0o777) == "0o711"
    assert (daemon.dir / "logs" / "pincusd.log").exists()


def test_sigterm_shuts_down_cleanly(daemon: Daemon) -> None:
    daemon.stop()
    assert not (daemon.dir / "unix.socket").exists()
    assert "shutting down" in (daemon.dir / "logs" / "pincusd.log").read_text()
