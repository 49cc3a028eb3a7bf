"""Profiles against a real pincusd and the kernel: expansion into instances, live changes to running
ones with the kernel's view checked, refusals that change nothing, used_by, ETags, preseed."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.integration.helpers import config, in_container
from tests.pincus_testlib import BIN, Daemon


def ports(daemon: Daemon, bridge: str) -> set[str]:
    return {p["ifname"] for p in daemon.ns.ipj("link", "show", "master", bridge)}


def links_inside(daemon: Daemon, name: str) -> list[str]:
    return sorted(in_container(daemon, name, "ls", "/sys/class/net").split())


def profile(daemon: Daemon, name: str) -> dict[str, Any]:
    return dict(yaml.safe_load(daemon.cli("profile", "show", name).stdout))


def test_default_profile_and_crud(daemon: Daemon) -> None:
    listed = json.loads(daemon.cli("profile", "list", "--format", "json").stdout)
    assert [p["name"] for p in listed] == ["default"]
    daemon.cli("profile", "create", "p1", "--description", "first")
    daemon.cli("profile", "set", "p1", "user.a=1")
    daemon.cli("profile", "set", "p1", "user.b", "2")
    assert daemon.cli("profile", "get", "p1", "user.a").stdout.strip() == "1"
    daemon.cli("profile", "set", "p1", "user.b=")  # KEY= unsets
    daemon.cli("profile", "unset", "p1", "user.nothere")  # absent: no error
    assert profile(daemon, "p1")["config"] == {"user.a": "1"}
    daemon.cli("profile", "edit", "p1", stdin="config:\n  user.c: x\ndescription: edited\n")
    assert profile(daemon, "p1")["config"] == {"user.c": "x"}
    assert profile(daemon, "p1")["description"] == "edited"
    daemon.cli("profile", "copy", "p1", "p2")
    daemon.cli("profile", "rename", "p2", "p3")
    assert profile(daemon, "p3")["config"] == {"user.c": "x"}
    daemon.cli("profile", "delete", "p3")
    assert "not found" in daemon.fails("profile", "show", "p3")
    assert "cannot be deleted" in daemon.fails("profile", "delete", "default")
    assert "cannot be renamed" in daemon.fails("profile", "rename", "default", "x")
    assert "already exists" in daemon.fails("profile", "create", "p1")
    assert "Invalid profile name" in daemon.fails("profile", "create", "a/b")
    code, doc = daemon.api("DELETE", "/1.0/profiles/default")
    assert code == 403, doc


def test_refusals_change_nothing(daemon: Daemon) -> None:
    daemon.cli("profile", "create", "p1")
    daemon.cli("init", "busybox", "c1", "-p", "default", "-p", "p1")
    before = daemon.db_dump()
    assert "bogus.key" in daemon.fails("profile", "set", "p1", "bogus.key=1")
    assert "volatile" in daemon.fails("profile", "set", "p1", "volatile.eth0.hwaddr=x")
    assert "in use" in daemon.fails("profile", "delete", "p1")
    assert 'Profile "nope" not found' in daemon.fails("init", "c2", "-p", "nope")
    assert "nope" in daemon.fails("profile", "assign", "c1", "default,nope")
    code, doc = daemon.api("POST", "/1.0/profiles", {"name": "p9", "devices": {"eth0": {"network": "x"}}})
    assert code == 400 and "type" in doc["error"]
    assert daemon.db_dump() == before
    # If-Match with a stale ETag: 412, nothing changed.
    _, headers, _ = daemon.api_full("GET", "/1.0/profiles/p1")
    daemon.cli("profile", "set", "p1", "user.x=1")
    before = daemon.db_dump()
    code, _, doc = daemon.api_full(
        "PUT", "/1.0/profiles/p1", {"config": {}, "devices": {}}, {"If-Match": headers["etag"]}
    )
    assert code == 412, doc
    assert daemon.db_dump() == before


def test_profile_nic_expands_and_changes_apply_live(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.cli("network", "create", "lan", "--type=physical", f"parent={br}")
    daemon.cli("profile", "create", "web")
    daemon.cli("profile", "set", "web", "user.role=web")
    daemon.cli("profile", "device", "add", "web", "eth0", "nic", "network=lan", "name=eth0")
    daemon.cli("launch", "busybox", "c1", "-p", "default", "-p", "web")
    try:
        shown = yaml.safe_load(daemon.cli("config", "show", "c1", "--expanded").stdout)
        assert shown["profiles"] == ["default", "web"]
        assert shown["devices"]["eth0"] == {"type": "nic", "network": "lan", "name": "eth0"}
        assert shown["config"]["user.role"] == "web"
        own = yaml.safe_load(daemon.cli("config", "show", "c1").stdout)
        assert own["devices"] == {} and "user.role" not in own["config"]
        host0 = config(daemon, "c1")["volatile.eth0.host_name"]
        assert ports(daemon, br) == {host0}
        assert links_inside(daemon, "c1") == ["eth0", "lo"]
        # used_by: the profile, and the network through the profile.
        assert profile(daemon, "web")["used_by"] == ["/1.0/instances/c1"]
        net = yaml.safe_load(daemon.cli("network", "show", "lan").stdout)
        assert set(net["used_by"]) == {"/1.0/instances/c1", "/1.0/profiles/web"}
        assert "in use" in daemon.fails("network", "delete", "lan")

        # Hot-plug through the profile.
        daemon.cli("profile", "device", "add", "web", "eth1", "nic", "network=lan", "name=eth1")
        host1 = config(daemon, "c1")["volatile.eth1.host_name"]
        assert ports(daemon, br) == {host0, host1}
        assert links_inside(daemon, "c1") == ["eth0", "eth1", "lo"]

        # A change that would break the running instance is refused; nothing moves.
        before_db, before_ports = daemon.db_dump(), ports(daemon, br)
        msg = daemon.fails(
            "profile", "device", "add", "web", "eth2", "nic", "nictype=bridged", "parent=nosuchbr"
        )
        assert "nosuchbr" in msg
        msg = daemon.fails(
            "profile", "device", "add", "web", "eth2", "nic", "nictype=physical", f"parent={br}"
        )
        assert "is a bridge, use nictype=bridged instead" in msg
        assert daemon.db_dump() == before_db
        assert ports(daemon, br) == before_ports
        assert links_inside(daemon, "c1") == ["eth0", "eth1", "lo"]

        # Unplug through the profile.
        daemon.cli("profile", "device", "remove", "web", "eth1")
        assert ports(daemon, br) == {host0}
        assert links_inside(daemon, "c1") == ["eth0", "lo"]
        assert daemon.ns.link(host1) is None

        # Taking the profile off the running instance unplugs its NIC; putting it back plugs it.
        daemon.cli("profile", "remove", "c1", "web")
        assert ports(daemon, br) == set()
        assert links_inside(daemon, "c1") == ["lo"]
        daemon.cli("profile", "add", "c1", "web")
        assert links_inside(daemon, "c1") == ["eth0", "lo"]
    finally:
        daemon.cli("stop", "-f", "c1")
    assert ports(daemon, br) == set()
    daemon.cli("delete", "c1")
    daemon.cli("profile", "delete", "web")
    daemon.cli("network", "delete", "lan")


def test_init_preseed_gives_default_an_eth0_and_rolls_back_on_error(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    bad = f"""
networks:
- name: lan
  type: physical
  config: {{parent: {br}}}
profiles:
- name: default
  devices:
    eth0: {{type: nic, network: lan, name: eth0}}
- name: broken
  config: {{no.such.key: "1"}}
"""
    before = daemon.db_dump()
    assert "no.such.key" in daemon.fails("admin", "init", "--preseed", stdin=bad)
    assert daemon.db_dump() == before
    good = bad.split("- name: broken")[0]
    daemon.cli("admin", "init", "--preseed", stdin=good)
    assert profile(daemon, "default")["devices"]["eth0"]["network"] == "lan"
    daemon.cli("launch", "busybox", "c1")
    try:
        assert ports(daemon, br) == {config(daemon, "c1")["volatile.eth0.host_name"]}
    finally:
        daemon.cli("stop", "-f", "c1")
    daemon.cli("launch", "busybox", "c2", "--no-profiles")
    try:
        assert links_inside(daemon, "c2") == ["lo"]
    finally:
        daemon.cli("stop", "-f", "c2")
    assert "storage_volumes" in daemon.fails(
        "admin", "init", "--preseed", stdin="storage_volumes:\n- name: x\n"
    )


def test_profile_device_commands_and_instance_assignment(daemon: Daemon) -> None:
    daemon.cli("profile", "create", "p1")
    daemon.cli("profile", "device", "add", "p1", "eth0", "nic", "nictype=bridged", "parent=br0", "name=eth0")
    daemon.cli("profile", "device", "set", "p1", "eth0", "mtu=1400", "name=")  # KEY= unsets
    daemon.cli("profile", "device", "unset", "p1", "eth0", "hwaddr")  # absent: no error
    assert daemon.cli("profile", "device", "get", "p1", "eth0", "mtu").stdout.strip() == "1400"
    assert daemon.cli("profile", "device", "list", "p1").stdout.split() == ["eth0"]
    assert yaml.safe_load(daemon.cli("profile", "device", "show", "p1").stdout) == {
        "eth0": {"type": "nic", "nictype": "bridged", "parent": "br0", "mtu": "1400"}
    }
    assert "already exists" in daemon.fails(
        "profile", "device", "add", "p1", "eth0", "nic", "nictype=bridged"
    )
    assert "doesn't exist" in daemon.fails("profile", "device", "set", "p1", "eth9", "mtu=1")
    assert "mtu" in daemon.fails("profile", "device", "set", "p1", "eth0", "mtu=lots")
    daemon.cli("profile", "device", "remove", "p1", "eth0")
    assert profile(daemon, "p1")["devices"] == {}

    daemon.cli("init", "busybox", "c1", "--no-profiles")
    daemon.cli("profile", "add", "c1", "p1")
    daemon.cli("profile", "add", "c1", "default")
    assert yaml.safe_load(daemon.cli("config", "show", "c1").stdout)["profiles"] == ["p1", "default"]
    assert "already applied" in daemon.fails("profile", "add", "c1", "p1")
    daemon.cli("profile", "remove", "c1", "p1")
    assert "isn't currently applied" in daemon.fails("profile", "remove", "c1", "p1")
    daemon.cli("profile", "assign", "c1", "p1,default")
    assert yaml.safe_load(daemon.cli("config", "show", "c1").stdout)["profiles"] == ["p1", "default"]
    daemon.cli("profile", "assign", "c1", "")
    assert yaml.safe_load(daemon.cli("config", "show", "c1").stdout)["profiles"] == []
    assert profile(daemon, "p1")["used_by"] == []


def test_profile_edit_opens_the_editor_on_a_terminal(daemon: Daemon, tmp_path: Path) -> None:
    daemon.cli("profile", "create", "p1")
    daemon.cli("profile", "set", "p1", "user.before=1")
    seen = tmp_path / "seen.yaml"
    # The "editor" keeps what it was shown, then writes the new profile.
    editor = f'sh -c \'cp "$1" {seen}; printf "config:\\n  user.edited: yes\\n" > "$1"\' sh'
    main, sub = pty.openpty()
    try:
        r = subprocess.run(
            [str(BIN / "pincus"), "profile", "edit", "p1"],
            env={**daemon.env, "EDITOR": editor},
            stdin=sub,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(sub)
        os.close(main)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(seen.read_text())["config"] == {"user.before": "1"}
    assert profile(daemon, "p1")["config"] == {"user.edited": "yes"}


def test_admin_init_without_a_terminal_or_preseed_configures_nothing(daemon: Daemon) -> None:
    before = daemon.db_dump()
    out = daemon.cli("admin", "init").stdout
    assert "Nothing configured" in out
    assert daemon.db_dump() == before
