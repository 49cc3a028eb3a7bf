"""Profiles through the REST API of a real pincusd: Incus's shapes and status codes, PATCH merging,
ETags, used_by, and refusals that change nothing."""

from __future__ import annotations

from typing import Any

from tests.pincus_testlib import Daemon


def create_instance(daemon: Daemon, name: str, **extra: Any) -> None:
    code, doc = daemon.api("POST", "/1.0/instances", {"name": name, **extra})
    assert code == 202, doc
    op = daemon.wait_op(doc)
    assert op["status"] == "Success", op


def get(daemon: Daemon, path: str) -> dict[str, Any]:
    code, doc = daemon.api("GET", path)
    assert code == 200, doc
    return dict(doc["metadata"])


def test_default_profile_exists_with_incus_shape(daemon: Daemon) -> None:
    code, doc = daemon.api("GET", "/1.0/profiles")
    assert code == 200 and doc["type"] == "sync"
    assert doc["metadata"] == ["/1.0/profiles/default"]
    code, headers, doc = daemon.api_full("GET", "/1.0/profiles/default")
    assert code == 200 and headers["etag"]
    assert doc["metadata"] == {
        "name": "default",
        "description": "Default pincus profile",
        "config": {},
        "devices": {},
        "used_by": [],
        "project": "default",
    }
    _, doc = daemon.api("GET", "/1.0/profiles?recursion=1")
    assert [p["name"] for p in doc["metadata"]] == ["default"]


def test_create_put_patch_rename_delete(daemon: Daemon) -> None:
    body = {
        "name": "web",
        "description": "web servers",
        "config": {"user.role": "web", "user.tier": "1"},
        "devices": {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br0", "name": "eth0"}},
    }
    code, doc = daemon.api("POST", "/1.0/profiles", body)
    assert code == 200 and doc["type"] == "sync", doc
    assert daemon.api("POST", "/1.0/profiles", body)[0] == 409
    shown = get(daemon, "/1.0/profiles/web")
    assert {k: shown[k] for k in ("name", "description", "config", "devices")} == body

    # PATCH merges: config key by key (an empty value unsets), devices by name, each one whole.
    code, doc = daemon.api(
        "PATCH",
        "/1.0/profiles/web",
        {
            "config": {"user.tier": "", "user.extra": "x"},
            "devices": {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br1"}},
        },
    )
    assert code == 200, doc
    shown = get(daemon, "/1.0/profiles/web")
    assert shown["config"] == {"user.role": "web", "user.extra": "x"}
    assert shown["devices"] == {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br1"}}
    assert shown["description"] == "web servers"

    # PUT replaces everything it covers.
    assert daemon.api("PUT", "/1.0/profiles/web", {"config": {"user.only": "1"}})[0] == 200
    shown = get(daemon, "/1.0/profiles/web")
    assert shown["config"] == {"user.only": "1"} and shown["devices"] == {}

    assert daemon.api("POST", "/1.0/profiles/web", {"name": "www"})[0] == 200
    assert daemon.api("GET", "/1.0/profiles/web")[0] == 404
    assert get(daemon, "/1.0/profiles/www")["config"] == {"user.only": "1"}
    assert daemon.api("DELETE", "/1.0/profiles/www")[0] == 200
    assert daemon.api("GET", "/1.0/profiles")[1]["metadata"] == ["/1.0/profiles/default"]
    assert daemon.api("DELETE", "/1.0/profiles/www")[0] == 404


def test_refused_profiles_change_nothing(daemon: Daemon) -> None:
    daemon.api("POST", "/1.0/profiles", {"name": "p1"})
    before = daemon.db_dump()
    refused: list[tuple[str, str, Any, int, str]] = [
        ("DELETE", "/1.0/profiles/default", None, 403, 'The "default" profile cannot be deleted'),
        ("POST", "/1.0/profiles/default", {"name": "x"}, 403, "cannot be renamed"),
        ("POST", "/1.0/profiles/p1", {"name": "default"}, 409, "already exists"),
        ("POST", "/1.0/profiles", {"name": ""}, 400, "name"),
        ("POST", "/1.0/profiles", {"name": "a/b"}, 400, "Invalid profile name"),
        ("POST", "/1.0/profiles", {"name": ".."}, 400, "Invalid profile name"),
        ("POST", "/1.0/profiles", {"name": " "}, 400, "Invalid profile name"),
        ("POST", "/1.0/profiles", {"name": "x" * 64}, 400, "Invalid profile name"),
        ("POST", "/1.0/profiles", {"name": "p2", "config": {"bogus.key": "1"}}, 400, "bogus.key"),
        ("POST", "/1.0/profiles", {"name": "p2", "config": {"volatile.eth0.hwaddr": "x"}}, 400, "volatile"),
        ("PATCH", "/1.0/profiles/p1", {"config": {"limits.cpu": "lots"}}, 400, "limits.cpu"),
        # Devices are checked on their own even when no instance uses the profile.
        ("PATCH", "/1.0/profiles/p1", {"devices": {"eth0": {"type": "gpu"}}}, 400, "unsupported"),
        (
            "PATCH",
            "/1.0/profiles/p1",
            {"devices": {"eth0": {"type": "nic", "nictype": "bridged", "parent": "b", "bogus": "1"}}},
            400,
            "bogus",
        ),
        (
            "PATCH",
            "/1.0/profiles/p1",
            {"devices": {"eth0": {"type": "nic", "network": "nonet"}}},
            404,
            "nonet",
        ),
        ("PUT", "/1.0/profiles/nope", {}, 404, 'Profile "nope" not found'),
    ]
    for method, path, body, status, message in refused:
        code, doc = daemon.api(method, path, body)
        assert code == status and message in doc["error"], (method, path, body, code, doc)
    assert daemon.db_dump() == before


def test_stale_etag_is_refused_and_fresh_one_accepted(daemon: Daemon) -> None:
    daemon.api("POST", "/1.0/profiles", {"name": "p1", "config": {"user.a": "1"}})
    _, headers, _ = daemon.api_full("GET", "/1.0/profiles/p1")
    stale = headers["etag"]
    assert daemon.api("PATCH", "/1.0/profiles/p1", {"config": {"user.b": "2"}})[0] == 200
    before = daemon.db_dump()
    for method in ("PUT", "PATCH"):
        code, _, doc = daemon.api_full(method, "/1.0/profiles/p1", {"config": {}}, {"If-Match": stale})
        assert code == 412, doc
    assert daemon.db_dump() == before
    _, headers, _ = daemon.api_full("GET", "/1.0/profiles/p1")
    assert headers["etag"] != stale
    code, _, doc = daemon.api_full("PUT", "/1.0/profiles/p1", {"config": {}}, {"If-Match": headers["etag"]})
    assert code == 200, doc
    assert get(daemon, "/1.0/profiles/p1")["config"] == {}


def test_instances_take_profiles_in_order_and_used_by_follows(daemon: Daemon) -> None:
    daemon.api("POST", "/1.0/profiles", {"name": "a", "config": {"user.x": "a", "user.a": "1"}})
    daemon.api("POST", "/1.0/profiles", {"name": "b", "config": {"user.x": "b"}})
    create_instance(daemon, "c1")  # no "profiles": default
    create_instance(daemon, "c2", profiles=[])
    create_instance(daemon, "c3", profiles=["a", "b"], config={"user.own": "1"})
    create_instance(daemon, "c4", profiles=["b", "a"])
    assert get(daemon, "/1.0/instances/c1")["profiles"] == ["default"]
    assert get(daemon, "/1.0/instances/c2")["profiles"] == []
    c3 = get(daemon, "/1.0/instances/c3")
    assert c3["profiles"] == ["a", "b"]
    assert c3["config"] == {"user.own": "1"}
    assert {k: v for k, v in c3["expanded_config"].items() if k.startswith("user.")} == {
        "user.x": "b",
        "user.a": "1",
        "user.own": "1",
    }
    assert get(daemon, "/1.0/instances/c4")["expanded_config"]["user.x"] == "a"
    assert get(daemon, "/1.0/profiles/a")["used_by"] == ["/1.0/instances/c3", "/1.0/instances/c4"]
    assert get(daemon, "/1.0/profiles/default")["used_by"] == ["/1.0/instances/c1"]

    # An unknown profile is refused before anything is made.
    before = daemon.db_dump()
    code, doc = daemon.api("POST", "/1.0/instances", {"name": "c5", "profiles": ["a", "nope"]})
    assert code == 404 and 'Profile "nope" not found' in doc["error"], doc
    code, doc = daemon.api("DELETE", "/1.0/profiles/a")
    assert code == 409 and "Profile is currently in use by c3, c4" in doc["error"], doc
    assert daemon.db_dump() == before

    # A profile change reaches its users' expansion; a rename keeps them.
    daemon.api("PATCH", "/1.0/profiles/b", {"config": {"user.x": "B"}})
    assert get(daemon, "/1.0/instances/c3")["expanded_config"]["user.x"] == "B"
    assert daemon.api("POST", "/1.0/profiles/b", {"name": "bee"})[0] == 200
    assert get(daemon, "/1.0/instances/c3")["profiles"] == ["a", "bee"]

    # PATCH of the instance's profiles; the profile is then free to go.
    code, doc = daemon.api("PATCH", "/1.0/instances/c4", {"profiles": ["bee"]})
    assert code == 202 and daemon.wait_op(doc)["status"] == "Success"
    code, doc = daemon.api("PATCH", "/1.0/instances/c3", {"profiles": []})
    assert code == 202 and daemon.wait_op(doc)["status"] == "Success"
    assert get(daemon, "/1.0/instances/c3")["expanded_config"].get("user.x") is None
    assert get(daemon, "/1.0/profiles/a")["used_by"] == []
    assert daemon.api("DELETE", "/1.0/profiles/a")[0] == 200


def test_profile_config_invalid_for_a_user_is_refused(daemon: Daemon) -> None:
    daemon.api("POST", "/1.0/profiles", {"name": "p1"})
    create_instance(daemon, "v1", type="virtual-machine", profiles=["p1"])
    before = daemon.db_dump()
    # A NIC with a boot priority is fine on its own (a VM has a boot order) ...
    nic = {"type": "nic", "nictype": "bridged", "parent": "nosuchbr0", "boot.priority": "1"}
    code, doc = daemon.api("PATCH", "/1.0/profiles/p1", {"devices": {"eth0": nic}})
    assert code == 200, doc
    # ... but not on a container using the profile.
    create_instance(daemon, "c1", profiles=[])
    before = daemon.db_dump()
    code, doc = daemon.api("PATCH", "/1.0/instances/c1", {"profiles": ["p1"]})
    assert code == 202
    op = daemon.wait_op(doc)
    assert op["status"] == "Failure" and "boot.priority" in op["err"], op
    assert daemon.db_dump() == before


def test_network_used_only_through_a_profile_cannot_be_deleted(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    code, doc = daemon.api(
        "POST", "/1.0/networks", {"name": "lan", "type": "physical", "config": {"parent": br}}
    )
    assert code == 200, doc
    nic = {"type": "nic", "network": "lan", "name": "eth0"}
    daemon.api("POST", "/1.0/profiles", {"name": "p1", "devices": {"eth0": nic}})
    assert get(daemon, "/1.0/networks/lan")["used_by"] == ["/1.0/profiles/p1"]
    before = daemon.db_dump()
    code, doc = daemon.api("DELETE", "/1.0/networks/lan")
    assert code in (400, 409) and "in use" in doc["error"], doc
    assert daemon.db_dump() == before
    create_instance(daemon, "c1", profiles=["p1"])
    assert get(daemon, "/1.0/networks/lan")["used_by"] == ["/1.0/instances/c1", "/1.0/profiles/p1"]
    # An own device of the same name replaces the profile's: the network is no longer c1's.
    code, doc = daemon.api(
        "PATCH",
        "/1.0/instances/c1",
        {"devices": {"eth0": {"type": "nic", "nictype": "bridged", "parent": br, "name": "eth0"}}},
    )
    assert code == 202 and daemon.wait_op(doc)["status"] == "Success"
    assert get(daemon, "/1.0/instances/c1")["expanded_devices"]["eth0"]["nictype"] == "bridged"


def test_static_address_from_a_profile_counts_for_each_user(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    code, doc = daemon.api(
        "POST",
        "/1.0/networks",
        {"name": br, "config": {"ipv4.address": "10.250.41.1/24", "ipv6.address": "none"}},
    )
    assert code == 200, doc
    nic = {"type": "nic", "network": br, "name": "eth0", "ipv4.address": "10.250.41.10"}
    daemon.api("POST", "/1.0/profiles", {"name": "fixed", "devices": {"eth0": nic}})
    create_instance(daemon, "c1", profiles=["fixed"])
    before = daemon.db_dump()
    # A second user of the profile would take the same address: refused, naming the holder.
    code, doc = daemon.api("POST", "/1.0/instances", {"name": "c2", "profiles": ["fixed"]})
    if code == 202:
        op = daemon.wait_op(doc)
        assert op["status"] == "Failure" and 'instance "c1"' in op["err"], op
    else:
        assert code == 409 and 'instance "c1"' in doc["error"], doc
    code, doc = daemon.api("POST", "/1.0/instances", {"name": "c3", "profiles": [], "devices": {"eth0": nic}})
    assert code == 202
    op = daemon.wait_op(doc)
    assert op["status"] == "Failure" and "already used" in op["err"], op
    assert daemon.db_dump() == before
    # The profile itself stays editable while its one user holds the address.
    assert daemon.api("PATCH", "/1.0/profiles/fixed", {"description": "one address"})[0] == 200
