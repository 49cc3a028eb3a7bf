"""Hostile values in every key that reaches dnsmasq, nftables, a path or a command line.

One table of (endpoint, key, a valid value of the key), each tried with a newline, a ";", quotes, a
leading "--" option, a NUL and a 4 KiB string. The key either refuses the value (a 400, or an
instance operation that fails, naming the key) and the host is byte-identical afterwards (links,
addresses, the nftables ruleset, the daemon's files, its database), or the key is free-form by
design and stores the value byte for byte without it reaching the host.

raw.qemu is raw by design: it is split as a shell would (unclosed quotes are refused) and the words
are appended to QEMU's argv, never given to a shell; what it can do is whatever QEMU's own options
can, as with Incus, so it is for trusted users only (README, design notes).
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from pincus.host import qemu
from tests.api import fuzzlib
from tests.pincus_testlib import Daemon, NetNS, cleanup_dir, image_source, unique_prefix

HOSTILE = {
    "newline": "{v}\ndhcp-script=/bin/sh",
    "semicolon": "{v}; reboot",
    "quotes": "{v}\"'",
    "option": "--conf-file=/dev/null",
    "nul": "{v}\x00x",
    "4KiB": "{v}" + "a" * 4096,
}


@dataclass(frozen=True)
class Row:
    endpoint: str  # which request carries the value (see request_for)
    key: str
    valid: str  # a value the key takes, which the hostile part is added to
    stored: frozenset[str] = frozenset()  # hostile kinds the key keeps, free-form by design
    named: str = ""  # what the refusal must name, when not the key itself


FREE = frozenset({"newline", "semicolon", "quotes", "option", "4KiB"})
NAME_LIKE = "{p}x"

TABLE = [
    # Names: interfaces, paths under the daemon's directory, dnsmasq host names, nft port names.
    Row("network-create", "name", NAME_LIKE, named="network name"),
    Row("network-rename", "name", NAME_LIKE, named="network name"),
    # Profile names reach no host object (only the database and the API): Incus's rule, no "/",
    # whitespace or NUL, lets quotes through.
    Row("profile-create", "name", NAME_LIKE, stored=frozenset({"quotes"}), named="profile name"),
    Row("profile-rename", "name", NAME_LIKE, stored=frozenset({"quotes"}), named="profile name"),
    Row("instance-create", "name", NAME_LIKE, named="instance name"),
    Row("instance-rename", "name", NAME_LIKE, named="instance name"),
    Row("instance-device-name", "eth1", "eth1", named="device name"),
    # A managed bridge's keys: dnsmasq's arguments and config, nftables, routes.
    Row("network-create", "dns.domain", "lan"),
    Row("network-create", "ipv4.dhcp.ranges", "10.250.79.10-10.250.79.20"),
    Row("network-create", "ipv4.dhcp.gateway", "10.250.79.1"),
    Row("network-create", "ipv4.dhcp.expiry", "1h"),
    Row("network-create", "ipv4.address", "10.250.79.1/24"),
    Row("network-create", "ipv6.address", "fd42:250:79::1/64"),
    Row("network-create", "ipv4.routes", "10.250.80.0/24"),
    Row("network-create", "bridge.hwaddr", "02:00:00:00:00:01"),
    Row("network-create", "bridge.external_interfaces", "lo"),
    Row("network-update", "dns.domain", "lan"),
    Row("network-update", "ipv4.dhcp.ranges", "10.250.78.10-10.250.78.20"),
    Row("network-update", "description", "d", stored=FREE),
    Row("network-update", "user.note", "n", stored=FREE),
    Row("physical-create", "parent", "lo"),
    Row("physical-create", "dns.nameservers", "10.250.0.53"),
    # A NIC hot-plugged into a running container: host names, nft rules, dnsmasq hosts, tc.
    Row("instance-device", "host_name", "{p}h"),
    Row("instance-device", "parent", "{p}br"),
    Row("instance-device", "network", "{p}br"),
    Row("instance-device", "name", "eth1"),
    Row("instance-device", "hwaddr", "02:00:00:00:00:02"),
    Row("instance-device", "ipv4.address", "10.250.78.50"),
    Row("instance-device", "ipv4.routes", "10.250.81.0/24"),
    Row("instance-device", "limits.ingress", "10Mbit"),
    Row("profile-device", "host_name", "{p}h"),
    Row("instance-config", "user.note", "n", stored=FREE),
    Row("vm-config", "raw.qemu", "-name x", stored=FREE - {"quotes"}),
]


@dataclass
class Setup:
    daemon: Daemon
    prefix: str


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    """One daemon for the whole table (each case leaves it as it found it, which is the point): a
    managed bridge, a profile, a running container on the bridge and a stopped VM."""
    prefix = unique_prefix()
    ns = NetNS(f"{prefix}ns")
    d = Daemon(ns, Path(tempfile.mkdtemp(prefix="pincus-test-")))
    try:
        d.start()
        br = f"{prefix}br"
        net = {"ipv4.address": "10.250.78.1/24", "ipv6.address": "none"}
        assert d.api("POST", "/1.0/networks", {"name": br, "config": net})[0] == 200
        assert d.api("POST", "/1.0/profiles", {"name": f"{prefix}pf"})[0] == 200
        nic = {"type": "nic", "network": br, "name": "eth0"}
        d.image()
        for name, kind in ((f"{prefix}c", "container"), (f"{prefix}vm", "virtual-machine")):
            # The container runs, so it needs a root with an init; the VM stays stopped.
            source = image_source() if kind == "container" else {"type": "none"}
            body = {"name": name, "type": kind, "source": source, "devices": {"eth0": nic}}
            status, doc = d.api("POST", "/1.0/instances", {**body, "start": kind == "container"})
            assert status == 202 and d.wait_op(doc)["status"] == "Success", doc
        yield Setup(d, prefix)
    finally:
        d.shut_down()
        ns.delete()
        cleanup_dir(d.dir)


def request_for(row: Row, value: str, p: str) -> tuple[str, str, dict[str, Any]]:
    """(method, path, body) that puts VALUE where ROW says."""
    br, inst = f"{p}br", f"{p}c"
    nic = {"type": "nic", "network": br}
    if row.endpoint == "network-create":
        if row.key == "name":
            return "POST", "/1.0/networks", {"name": value}
        config = {"ipv4.address": "10.250.79.1/24", "ipv6.address": "none", row.key: value}
        return "POST", "/1.0/networks", {"name": f"{p}n", "config": config}
    if row.endpoint == "physical-create":
        config = {"parent": "lo", row.key: value}
        return "POST", "/1.0/networks", {"name": f"{p}ph", "type": "physical", "config": config}
    if row.endpoint == "network-update":
        if row.key == "description":
            return "PATCH", f"/1.0/networks/{br}", {"description": value}
        return "PATCH", f"/1.0/networks/{br}", {"config": {row.key: value}}
    if row.endpoint == "network-rename":
        return "POST", f"/1.0/networks/{br}", {"name": value}
    if row.endpoint == "profile-create":
        return "POST", "/1.0/profiles", {"name": value}
    if row.endpoint == "profile-rename":
        return "POST", f"/1.0/profiles/{p}pf", {"name": value}
    if row.endpoint == "profile-device":
        return "PATCH", f"/1.0/profiles/{p}pf", {"devices": {"eth1": {**nic, row.key: value}}}
    if row.endpoint == "instance-create":
        return "POST", "/1.0/instances", {"name": value, "source": {"type": "none"}}
    if row.endpoint == "instance-rename":
        return "POST", f"/1.0/instances/{p}vm", {"name": value}
    if row.endpoint == "instance-device-name":
        return "PATCH", f"/1.0/instances/{inst}", {"devices": {value: nic}}
    if row.endpoint == "instance-device":
        config = {**nic, row.key: value}
        if row.key == "parent":
            config = {"type": "nic", "nictype": "bridged", "parent": value}
        return "PATCH", f"/1.0/instances/{inst}", {"devices": {"eth1": config}}
    if row.endpoint == "instance-config":
        return "PATCH", f"/1.0/instances/{inst}", {"config": {row.key: value}}
    if row.endpoint == "vm-config":
        return "PATCH", f"/1.0/instances/{p}vm", {"config": {row.key: value}}
    raise AssertionError(f"unknown endpoint {row.endpoint}")


def _outcome(d: Daemon, method: str, path: str, body: dict[str, Any]) -> tuple[bool, str]:
    """(accepted, the refusal's message) of one request, an instance operation waited for."""
    status, doc = d.api(method, path, body)
    assert status < 500, doc
    if status == 202:
        op = d.wait_op(doc)
        return op["status"] == "Success", str(op["err"])
    if status == 200:
        return True, ""
    assert doc["type"] == "error" and doc["error_code"] == status, doc
    assert status in (400, 404), doc  # 404: a refused name can look like a path that is not there
    return False, str(doc["error"])


CASES = [(row, kind) for row in TABLE for kind in HOSTILE]


@pytest.mark.parametrize(("row", "kind"), CASES, ids=[f"{r.endpoint}:{r.key}:{k}" for r, k in CASES])
def test_hostile_value_is_refused_naming_the_key_or_stored_untouched(
    setup: Setup, row: Row, kind: str
) -> None:
    d, p = setup.daemon, setup.prefix
    value = HOSTILE[kind].format(v=row.valid.format(p=p))
    method, path, body = request_for(row, value, p)
    host, rows = fuzzlib.host_view(d), fuzzlib.db_rows(d)
    accepted, message = _outcome(d, method, path, body)
    if kind in row.stored:
        assert accepted, message
        try:
            # Kept byte for byte, and nowhere on the host.
            assert _stored(d, row, p, value) == value
            assert fuzzlib.describe(host, fuzzlib.host_view(d)) == []
            if row.key == "raw.qemu":
                # At start: QEMU's own argv gets the words last, one argument each, no shell.
                words = shlex.split(value)
                argv = qemu.qemu_command("vm", Path("/nonexistent"), [], words, 256, "tcg")
                assert argv[-len(words) :] == words and argv[0] != "sh"
        finally:
            _undo(d, row, p, value)
        return
    assert not accepted, f"{row.key}={value!r:.80} was accepted"
    # The key quoted, or followed by the value it refuses (`network "x" not found`).
    wanted = [row.named] if row.named else [f'"{row.key}"', f'{row.key} "']
    assert any(w in message for w in wanted), message
    assert fuzzlib.describe(host, fuzzlib.host_view(d)) == []
    assert fuzzlib.db_rows(d) == rows


def _stored(d: Daemon, row: Row, p: str, value: str) -> str:
    if row.endpoint == "network-update":
        net = d.api("GET", f"/1.0/networks/{p}br")[1]["metadata"]
        return str(net["description"] if row.key == "description" else net["config"][row.key])
    if row.endpoint.startswith("profile-"):
        status, doc = d.api("GET", f"/1.0/profiles/{quote(value, safe='')}")
        assert status == 200, doc
        return str(doc["metadata"]["name"])
    target = f"{p}vm" if row.endpoint == "vm-config" else f"{p}c"
    return str(d.api("GET", f"/1.0/instances/{target}")[1]["metadata"]["config"][row.key])


def _undo(d: Daemon, row: Row, p: str, value: str) -> None:
    if row.endpoint == "network-update":
        key = "description" if row.key == "description" else "config"
        status, doc = d.api(
            "PATCH", f"/1.0/networks/{p}br", {key: "" if key == "description" else {row.key: ""}}
        )
        assert status == 200, doc
    elif row.endpoint == "profile-create":
        d.api("DELETE", f"/1.0/profiles/{quote(value, safe='')}")
    elif row.endpoint == "profile-rename":
        d.api("POST", f"/1.0/profiles/{quote(value, safe='')}", {"name": f"{p}pf"})
    else:
        target = f"{p}vm" if row.endpoint == "vm-config" else f"{p}c"
        status, doc = d.api("PATCH", f"/1.0/instances/{target}", {"config": {row.key: ""}})
        assert status == 202 and d.wait_op(doc)["status"] == "Success"
