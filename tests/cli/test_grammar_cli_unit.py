"""Incus's grammar in the client against a fake daemon: init/launch flags, list filters, columns and
formats, network info/list-allocations/attach/detach, KEY= and unset, edit in $EDITOR, query, monitor.

As in test_instance_cli_unit.py: the real parser and handlers run through `pincus.cli.main.main`;
the test checks the exact requests sent and what the user sees.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pincus.cli import main as cli_main
from pincus.cli.client import Client, ClientError
from tests.cli.test_instance_cli_unit import STATE, FakeClient, Run, instance

PROFILE: dict[str, Any] = {
    "name": "default",
    "description": "Default profile",
    "config": {"user.p": "1"},
    "devices": {"eth0": {"type": "nic", "network": "lan", "name": "eth0"}},
}


class Fake(FakeClient):
    """FakeClient, plus the raw envelopes `query` asks for and the event stream `monitor` reads."""

    def __init__(self, responses: dict[tuple[str, str], Any] | None = None) -> None:
        super().__init__(responses)
        self.raw: dict[tuple[str, str], Any] = {}
        self.events: list[dict[str, Any]] = []
        self.streamed: list[str] = []

    def raw_request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        self.calls.append((method, path, copy.deepcopy(body)))
        return 200, {}, copy.deepcopy(self.raw[(method, path)])

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        self.streamed.append(path)
        yield from self.events


@pytest.fixture
def fake() -> Fake:
    return Fake(
        {
            ("GET", "/1.0/instances/c1"): instance(),
            ("GET", "/1.0/instances/c1/state"): STATE,
            ("GET", "/1.0/profiles/default"): PROFILE,
        }
    )


@pytest.fixture
def run(fake: Fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setattr(cli_main, "Client", lambda: fake)

    def go(*argv: str) -> tuple[int, str, str]:
        code = 0
        try:
            cli_main.main(list(argv))
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return go


def posted(fake: Fake) -> dict[str, Any]:
    posts = [c for c in fake.calls if c[0] == "POST"]
    assert len(posts) == 1 and posts[0][1] == "/1.0/instances"
    body: dict[str, Any] = posts[0][2]
    return body


# --- init / launch -----------------------------------------------------------------------------


def test_an_image_known_by_alias_is_sent_as_an_alias_source(run: Run, fake: Fake) -> None:
    fake.responses[("GET", "/1.0/images/aliases/debian/12")] = {"name": "debian/12", "target": "ab" * 32}
    assert run("init", "debian/12", "c1")[0] == 0
    assert posted(fake)["source"] == {"type": "image", "alias": "debian/12"}


def test_an_image_without_such_alias_is_sent_as_a_fingerprint(run: Run, fake: Fake) -> None:
    fake.responses[("GET", "/1.0/images/aliases/abc123")] = ClientError('Image alias "abc123" not found')
    assert run("init", "abc123", "c1")[0] == 0
    assert posted(fake)["source"] == {"type": "image", "fingerprint": "abc123"}


def test_empty_is_a_none_source_and_refused_with_an_image(run: Run, fake: Fake) -> None:
    assert run("init", "c1", "--empty")[0] == 0
    assert posted(fake)["source"] == {"type": "none"}
    code, _, err = run("init", "debian/12", "c2", "--empty")
    assert code == 1 and err.startswith("Error: --empty cannot be combined with an image")


def test_a_storage_pool_replaces_the_pool_of_the_profiles_root_disk(run: Run, fake: Fake) -> None:
    fake.responses[("GET", "/1.0/profiles/default")] = {
        **PROFILE,
        "devices": {
            **PROFILE["devices"],
            "rootfs": {"type": "disk", "path": "/", "pool": "default", "size": "1GiB"},
        },
    }
    assert run("init", "c1", "-s", "fast")[0] == 0
    assert posted(fake)["devices"] == {
        "rootfs": {"type": "disk", "path": "/", "pool": "fast", "size": "1GiB"}
    }


def test_a_storage_pool_without_a_root_disk_in_the_profiles_adds_root(run: Run, fake: Fake) -> None:
    assert run("init", "c1", "-s", "fast")[0] == 0
    assert posted(fake)["devices"] == {"root": {"type": "disk", "path": "/", "pool": "fast"}}


def test_one_positional_is_the_name_and_help_says_so(run: Run, fake: Fake) -> None:
    assert run("init", "c1", "--empty")[0] == 0
    assert posted(fake)["name"] == "c1" and "profiles" not in posted(fake)
    help_text = " ".join(run("init", "--help")[1].split())
    assert "NAME alone for an empty root" in help_text


@pytest.mark.parametrize(
    ("flags", "profiles"),
    [(["-p", "default", "--profile", "lan"], ["default", "lan"]), (["--no-profiles"], [])],
)
def test_profiles_flags_set_the_profiles(run: Run, fake: Fake, flags: list[str], profiles: list[str]) -> None:
    assert run("init", "c1", *flags)[0] == 0
    assert posted(fake)["profiles"] == profiles


def test_device_override_copies_the_profile_device_with_keys_changed(run: Run, fake: Fake) -> None:
    code, out, _ = run("init", "c1", "-d", "eth0,mtu=1400,ipv4.routes=10.250.1.0/24,10.250.2.0/24")
    assert (code, out) == (0, "Creating c1\n")
    assert fake.calls[0] == ("GET", "/1.0/profiles/default", None)
    assert posted(fake)["devices"] == {
        "eth0": {
            "type": "nic",
            "network": "lan",
            "name": "eth0",
            "mtu": "1400",
            "ipv4.routes": "10.250.1.0/24,10.250.2.0/24",
        }
    }


def test_device_override_takes_the_last_profile_holding_the_device(run: Run, fake: Fake) -> None:
    fake.responses[("GET", "/1.0/profiles/p2")] = {
        "name": "p2",
        "devices": {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br9"}},
    }
    assert run("init", "c1", "-p", "default", "-p", "p2", "-d", "eth0,name=wan")[0] == 0
    assert posted(fake)["devices"] == {
        "eth0": {"type": "nic", "nictype": "bridged", "parent": "br9", "name": "wan"}
    }
    assert posted(fake)["profiles"] == ["default", "p2"]


def test_device_override_of_the_network_flag_needs_no_profile(run: Run, fake: Fake) -> None:
    assert run("launch", "c1", "-n", "br0", "-d", "eth0,hwaddr=00:16:3e:00:00:09")[0] == 0
    assert posted(fake)["devices"] == {
        "eth0": {"type": "nic", "network": "br0", "name": "eth0", "hwaddr": "00:16:3e:00:00:09"}
    }
    assert [c[0:2] for c in fake.calls] == [("POST", "/1.0/instances"), ("PUT", "/1.0/instances/c1/state")]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eth1,mtu=1400", 'Device "eth1" not found in profiles'),
        ("eth0", "Bad device override syntax"),
        ("eth0,mtu", "Bad device override syntax"),
    ],
)
def test_bad_device_overrides_create_nothing(run: Run, fake: Fake, override: str, message: str) -> None:
    code, _, err = run("init", "c1", "-d", override)
    assert code == 1 and err.startswith(f"Error: {message}")
    assert not any(c[0] == "POST" for c in fake.calls)


# --- list --------------------------------------------------------------------------------------


@pytest.fixture
def listing(fake: Fake) -> Fake:
    web = instance("web1")
    web["config"] = web["expanded_config"] = {"user.role": "frontend"}
    web["profiles"] = ["default", "lan"]
    web["description"] = "the web"
    vm = instance("v2", "Stopped", "virtual-machine")
    c1 = instance("c1")
    insts = [web, vm, c1]
    fake.responses[("GET", "/1.0/instances?recursion=1")] = copy.deepcopy(insts)
    for inst in insts:  # what recursion=2 adds
        inst["state"] = (
            copy.deepcopy(STATE) if inst["status"] == "Running" else {"status": "Stopped", "network": {}}
        )
        inst["snapshots"] = []
    fake.responses[("GET", "/1.0/instances?recursion=2")] = insts
    return fake


def names(out: str) -> list[str]:
    return [line.split(",")[0] for line in out.splitlines()]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["c1"], ["c1"]),
        (["w"], ["web1"]),  # a prefix
        (["^.[0-9]$"], ["c1", "v2"]),  # a regex on the whole name
        (["type=virtual-machine"], ["v2"]),
        (["type=VM"], ["v2"]),
        (["status=running"], ["c1", "web1"]),
        (["user.role=frontend"], ["web1"]),
        (["config.user.role=front.*"], ["web1"]),
        (["user.role=back"], []),
        (["status=RUNNING", "w"], ["web1"]),  # all filters must match
    ],
)
def test_list_filters(run: Run, listing: Fake, filters: list[str], expected: list[str]) -> None:
    code, out, _ = run("list", *filters, "-c", "n", "--format", "csv")
    assert code == 0 and names(out) == expected


def test_list_columns_without_state_ask_no_state(run: Run, listing: Fake) -> None:
    import csv

    rows = list(csv.reader(run("list", "-c", "nsPtdSac", "-f", "csv")[1].splitlines(keepends=True)))
    assert rows[0] == ["c1", "RUNNING", "", "CONTAINER", "", "0", "x86_64", "2025/01/02 03:04 UTC"]
    assert rows[2] == [
        "web1",
        "RUNNING",
        "default\nlan",
        "CONTAINER",
        "the web",
        "0",
        "x86_64",
        "2025/01/02 03:04 UTC",
    ]
    assert [c[1] for c in listing.calls] == ["/1.0/instances?recursion=1"]


def test_list_uses_the_state_recursion_2_carries(run: Run, listing: Fake) -> None:
    out = run("list", "-c", "n4p", "-f", "csv")[1]
    assert out.startswith('c1,"10.250.1.5 (eth0)\n10.250.2.7 (eth1)",4242\n')
    assert "v2,," in out
    assert [c[1] for c in listing.calls] == ["/1.0/instances?recursion=2"]


def test_list_asks_each_running_instances_state_when_recursion_2_lacks_it(run: Run, listing: Fake) -> None:
    insts = listing.responses[("GET", "/1.0/instances?recursion=2")]
    for inst in insts:
        del inst["state"]
    listing.responses[("GET", "/1.0/instances/web1/state")] = {"status": "Running", "pid": 7, "network": {}}
    out = run("list", "-c", "np", "-f", "csv")[1]
    assert out == "c1,4242\nv2,\nweb1,7\n"
    assert sorted(c[1] for c in listing.calls[1:]) == ["/1.0/instances/c1/state", "/1.0/instances/web1/state"]


def test_list_compact_and_markdown(run: Run, listing: Fake) -> None:
    # two name filters: nothing matches both, the header stays
    assert run("list", "c1", "v2", "-c", "ns4", "--format", "compact")[1] == "NAME  STATE  IPV4\n"
    out = run("list", "-c", "ns4", "--format", "compact", "^[cv]")[1]
    assert out == (
        "NAME  STATE    IPV4\n"
        "c1    RUNNING  10.250.1.5 (eth0)\n"
        "               10.250.2.7 (eth1)\n"
        "v2    STOPPED\n"
    )
    out = run("list", "-c", "ns4", "--format", "markdown", "^[cv]")[1]
    assert out == (
        "| NAME |  STATE  |                  IPV4                  |\n"
        "|------|---------|----------------------------------------|\n"
        "| c1   | RUNNING | 10.250.1.5 (eth0)<br>10.250.2.7 (eth1) |\n"
        "| v2   | STOPPED |                                        |\n"
    )


def test_list_json_and_yaml_keep_whole_objects_with_state(run: Run, listing: Fake) -> None:
    docs = json.loads(run("list", "-f", "json", "-c", "n")[1])
    assert [d["name"] for d in docs] == ["c1", "v2", "web1"]
    assert docs[0]["state"]["pid"] == 4242 and docs[0]["config"]
    assert yaml.safe_load(run("list", "--format=yaml", "web1")[1])[0]["profiles"] == ["default", "lan"]


def test_list_default_columns_and_unknown_column(run: Run, listing: Fake) -> None:
    header = run("list")[1].splitlines()[1]
    assert [h.strip() for h in header.strip("|").split("|")] == ["NAME", "STATE", "IPV4", "IPV6", "TYPE"]
    code, _, err = run("list", "-c", "nZ")
    assert code == 1 and err.startswith("Error: Unknown column shorthand char 'Z' in 'nZ'")


# --- KEY= and unset ------------------------------------------------------------------------------


def test_network_set_empty_value_and_unset_patch_the_key_empty(run: Run, fake: Fake) -> None:
    assert run("network", "set", "lan", "dns.domain=", "ipv4.nat=true")[0] == 0
    assert run("network", "unset", "lan", "never.set")[0:3] == (0, "", "")
    assert fake.calls == [
        ("PATCH", "/1.0/networks/lan", {"config": {"dns.domain": "", "ipv4.nat": "true"}}),
        ("PATCH", "/1.0/networks/lan", {"config": {"never.set": ""}}),
    ]


# --- network info / list-allocations -------------------------------------------------------------

NET_STATE = {
    "addresses": [
        {"family": "inet", "address": "10.250.1.1", "netmask": "24", "scope": "global"},
        {"family": "inet6", "address": "fe80::1", "netmask": "64", "scope": "link"},
    ],
    "counters": {"bytes_received": 100, "bytes_sent": 200, "packets_received": 3, "packets_sent": 4},
    "hwaddr": "00:16:3e:00:00:01",
    "mtu": 1500,
    "state": "up",
    "type": "broadcast",
    "bond": None,
    "bridge": {
        "id": "8000.00163e000001",
        "stp": False,
        "forward_delay": 1500,
        "vlan_default": 1,
        "vlan_filtering": True,
        "upper_devices": ["veth1", "veth2"],
    },
    "vlan": None,
    "ovn": None,
}


def test_network_info_prints_incus_shape(run: Run, fake: Fake) -> None:
    fake.responses[("GET", "/1.0/networks/lan/state")] = NET_STATE
    code, out, _ = run("network", "info", "lan")
    assert code == 0
    assert out == (
        "Name: lan\nMAC address: 00:16:3e:00:00:01\nMTU: 1500\nState: up\nType: broadcast\n\n"
        "IP addresses:\n  inet 10.250.1.1/24 (global)\n  inet6 fe80::1/64 (link)\n\n"
        "Network usage:\n  Bytes received: 100\n  Bytes sent: 200\n"
        "  Packets received: 3\n  Packets sent: 4\n\n"
        "Bridge:\n  ID: 8000.00163e000001\n  STP: false\n  Forward delay: 1500\n  Default VLAN ID: 1\n"
        "  VLAN filtering: true\n  Upper devices: veth1, veth2\n"
    )
    fake.responses[("GET", "/1.0/networks/lo/state")] = {**NET_STATE, "bridge": None, "type": "loopback"}
    assert "Bridge:" not in run("network", "info", "lo")[1]


ALLOCATIONS = [
    {"address": "10.250.1.5/32", "used_by": "/1.0/instances/c1", "type": "instance", "nat": True,
     "hwaddr": "00:16:3e:aa:bb:cc", "network": "lan"},
    {"address": "10.250.1.1/24", "used_by": "/1.0/networks/lan", "type": "network", "nat": True,
     "hwaddr": "", "network": "lan"},
]  # fmt: skip


def test_list_allocations_table_and_json(run: Run, fake: Fake) -> None:
    fake.responses[("GET", "/1.0/network-allocations")] = ALLOCATIONS
    out = run("network", "list-allocations")[1].splitlines()
    assert [h.strip() for h in out[1].strip("|").split("|")] == [
        "USED BY", "ADDRESS", "TYPE", "NAT", "HARDWARE ADDRESS"
    ]  # fmt: skip
    assert run("network", "list-allocations", "--format=csv")[1] == (
        "/1.0/instances/c1,10.250.1.5/32,instance,true,00:16:3e:aa:bb:cc\n"
        "/1.0/networks/lan,10.250.1.1/24,network,true,\n"
    )
    assert json.loads(run("network", "list-allocations", "-f", "json")[1]) == ALLOCATIONS


# --- attach / detach -----------------------------------------------------------------------------


def puts(fake: Fake) -> list[tuple[str, Any]]:
    return [(c[1], c[2]) for c in fake.calls if c[0] == "PUT"]


@pytest.fixture
def networks(fake: Fake) -> Fake:
    fake.responses[("GET", "/1.0/networks/lan")] = {"name": "lan", "type": "bridge", "managed": True}
    fake.responses[("GET", "/1.0/networks/br7")] = {"name": "br7", "type": "bridge", "managed": False}
    fake.responses[("GET", "/1.0/networks/enp9")] = {"name": "enp9", "type": "physical", "managed": False}
    return fake


def test_attach_adds_a_nic_named_after_the_network(run: Run, networks: Fake) -> None:
    assert run("network", "attach", "lan", "c1")[0] == 0
    assert run("network", "attach", "br7", "c1", "eth1", "wan0")[0] == 0
    (p1, b1), (p2, b2) = puts(networks)
    assert p1 == p2 == "/1.0/instances/c1"
    assert b1["devices"]["lan"] == {"type": "nic", "network": "lan"}
    assert b2["devices"]["eth1"] == {"type": "nic", "nictype": "bridged", "parent": "br7", "name": "wan0"}
    assert b1["profiles"] == [] and "volatile.eth0.hwaddr" not in b1["config"]


def test_attach_refusals(run: Run, networks: Fake) -> None:
    code, _, err = run("network", "attach", "lan", "c1", "eth0")
    assert (code, err) == (1, 'Error: Device "eth0" already exists on instance "c1"\n')
    code, _, err = run("network", "attach", "enp9", "c1")
    assert code == 1 and "neither managed nor a bridge" in err
    assert puts(networks) == []


def test_detach_removes_the_one_nic_on_the_network(run: Run, networks: Fake) -> None:
    assert run("network", "detach", "br0", "c1")[0] == 0
    assert puts(networks)[0][1]["devices"] == {}
    code, _, err = run("network", "detach", "lan", "c1")
    assert (code, err) == (1, 'Error: No device found for network "lan" on instance "c1"\n')


def test_detach_with_two_nics_on_the_network_needs_the_device_name(run: Run, networks: Fake) -> None:
    inst = instance()
    inst["devices"]["eth1"] = {"type": "nic", "network": "br0"}
    networks.responses[("GET", "/1.0/instances/c1")] = inst
    code, _, err = run("network", "detach", "br0", "c1")
    assert code == 1 and "More than one device matches" in err
    assert run("network", "detach", "br0", "c1", "eth1")[0] == 0
    assert list(puts(networks)[0][1]["devices"]) == ["eth0"]


def test_attach_and_detach_profile_go_through_the_profile(run: Run, networks: Fake) -> None:
    assert run("network", "attach-profile", "br7", "default", "eth1", "eth1")[0] == 0
    assert run("network", "detach-profile", "lan", "default")[0] == 0
    (p1, b1), (p2, b2) = puts(networks)
    assert p1 == p2 == "/1.0/profiles/default"
    assert b1 == {
        "config": {"user.p": "1"},
        "devices": {
            **PROFILE["devices"],
            "eth1": {"type": "nic", "nictype": "bridged", "parent": "br7", "name": "eth1"},
        },
        "description": "Default profile",
    }
    assert b2["devices"] == {}


# --- edit in $EDITOR -----------------------------------------------------------------------------


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)


@pytest.mark.parametrize("variable", ["EDITOR", "VISUAL"])
def test_edit_on_a_terminal_opens_the_editor_on_the_current_yaml(
    run: Run, fake: Fake, terminal: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    seen = tmp_path / "seen.yaml"
    # The "editor": keep a copy of what it was shown, then change a key.
    monkeypatch.setenv(variable, f'sh -c \'cp "$1" {seen}; sed -i s/hello/edited/ "$1"\' editor')
    assert run("config", "edit", "c1")[0] == 0
    shown = yaml.safe_load(seen.read_text())
    assert shown["config"]["user.note"] == "hello" and shown["devices"]["eth0"]["network"] == "br0"
    assert fake.calls[-1][0:2] == ("PUT", "/1.0/instances/c1")
    assert fake.calls[-1][2]["config"]["user.note"] == "edited"
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"pincus_editor_*{os.getpid()}*"))


def test_network_edit_on_a_terminal(
    run: Run, fake: Fake, terminal: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.responses[("GET", "/1.0/networks/lan")] = {
        "name": "lan", "type": "bridge", "description": "", "config": {"ipv4.nat": "true"}, "managed": True
    }  # fmt: skip
    monkeypatch.setenv("EDITOR", "sed -i s/true/false/")
    assert run("network", "edit", "lan")[0] == 0
    assert fake.calls[-1] == (
        "PUT", "/1.0/networks/lan", {"config": {"ipv4.nat": "false"}, "description": "", "type": "bridge"}
    )  # fmt: skip


def test_a_failing_editor_changes_nothing(
    run: Run, fake: Fake, terminal: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDITOR", "false")
    code, _, err = run("config", "edit", "c1")
    assert code == 1 and "nothing was changed" in err
    assert [c[0] for c in fake.calls] == ["GET"]


# --- query ---------------------------------------------------------------------------------------


def test_query_prints_the_metadata_as_indented_json(run: Run, fake: Fake) -> None:
    fake.raw[("GET", "/1.0/networks")] = {
        "type": "sync",
        "status_code": 200,
        "metadata": ["/1.0/networks/lan"],
    }
    assert run("query", "/1.0/networks") == (0, '[\n\t"/1.0/networks/lan"\n]\n', "")
    assert json.loads(run("query", "--raw", "1.0/networks")[1])["type"] == "sync"


def test_query_sends_method_and_json_body(run: Run, fake: Fake) -> None:
    fake.raw[("POST", "/1.0/networks")] = {"type": "sync", "metadata": {}}
    assert run("query", "-X", "post", "-d", '{"name": "lan"}', "/1.0/networks")[0] == 0
    assert fake.calls == [("POST", "/1.0/networks", {"name": "lan"})]
    code, _, err = run("query", "-X", "POST", "-d", "{nope", "/1.0/networks")
    assert code == 1 and err.startswith("Error: -d must be JSON")


def test_query_error_exits_1_with_the_message(run: Run, fake: Fake) -> None:
    fake.raw[("GET", "/1.0/nope")] = {"type": "error", "error_code": 404, "error": "not found"}
    assert run("query", "/1.0/nope") == (1, "", "Error: not found\n")


def test_query_wait_waits_for_the_operation_and_prints_it(run: Run, fake: Fake) -> None:
    op = {"id": "abc", "status": "Running", "err": ""}
    fake.raw[("PUT", "/1.0/instances/c1/state")] = {
        "type": "async",
        "operation": "/1.0/operations/abc",
        "metadata": op,
    }
    fake.raw[("GET", "/1.0/operations/abc/wait")] = {"type": "sync", "metadata": {**op, "status": "Success"}}
    code, out, _ = run("query", "-X", "PUT", "-d", '{"action": "start"}', "--wait", "/1.0/instances/c1/state")
    assert code == 0 and json.loads(out)["status"] == "Success"
    assert json.loads(run("query", "-X", "PUT", "/1.0/instances/c1/state")[1])["status"] == "Running"
    fake.raw[("GET", "/1.0/operations/abc/wait")] = {"type": "sync", "metadata": {**op, "err": "boom"}}
    assert run("query", "-X", "PUT", "--wait", "/1.0/instances/c1/state")[0:3:2] == (1, "Error: boom\n")


def test_raw_request_returns_status_headers_and_envelope(tmp_path: Path) -> None:
    import socket
    import threading

    path = tmp_path / "s"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    body = json.dumps({"type": "error", "error_code": 404, "error": "nope", "metadata": None}).encode()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\nETag: x\r\n\r\n" % len(body) + body
            )

    threading.Thread(target=serve, daemon=True).start()
    code, headers, doc = Client(path, timeout=5).raw_request("GET", "/1.0/nope")
    listener.close()
    assert (code, headers["etag"], doc["error"]) == (404, "x", "nope")


# --- monitor -------------------------------------------------------------------------------------

EVENTS = [
    {
        "type": "lifecycle",
        "timestamp": "2025-01-02T03:04:05.123456Z",
        "metadata": {"action": "instance-started", "source": "/1.0/instances/c1"},
    },
    {
        "type": "operation",
        "timestamp": "2025-01-02T03:04:06.000000Z",
        "metadata": {"description": "Starting instance", "status": "Success"},
    },
]


def test_monitor_types_and_formats(run: Run, fake: Fake) -> None:
    fake.events = EVENTS
    out = run("monitor", "--format", "json")[1]
    assert [json.loads(line) for line in out.splitlines()] == EVENTS
    assert fake.streamed[-1] == "/1.0/events?type=logging,lifecycle,operation&level=info"
    out = run("monitor", "--type", "lifecycle", "--type=operation", "--pretty", "--loglevel", "debug")[1]
    assert out.splitlines() == [
        "03:04:05.123 LIFECYCLE instance-started /1.0/instances/c1",
        "03:04:06.000 OPERATION Starting instance Success",
    ]
    assert fake.streamed[-1] == "/1.0/events?type=lifecycle,operation&level=debug"
    assert yaml.safe_load(run("monitor", "--type", "lifecycle")[1].split("\n\n")[0])["type"] == "lifecycle"
    assert run("monitor", "--type", "nope")[0] == 1


def test_new_commands_import_nothing_heavy() -> None:
    """`network info`, `list` and `query` start without yaml, ssl or anything of the server side."""
    code = (
        "import sys\n"
        "from pincus.cli import main\n"
        "class C:\n"
        "    def request(self, m, p, b=None):\n"
        "        return [] if p.startswith('/1.0/instances') else {'addresses': [], 'counters': {}}\n"
        "    def raw_request(self, m, p, b=None):\n"
        "        return 200, {}, {'type': 'sync', 'metadata': {}}\n"
        "main.Client = C\n"
        "for argv in (['list'], ['network', 'info', 'x'], ['query', '/1.0']):\n"
        "    main.main(argv)\n"
        "bad = [n for n in sys.modules if n.startswith(('pincus.server', 'pincus.api', 'pincus.host', "
        "'yaml', 'ssl', 'http.client', 'subprocess'))]\n"
        "print('BAD', ','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.splitlines()[-1] == "BAD "


def test_client_error_passes_through(run: Run, fake: Fake) -> None:
    fake.responses[("GET", "/1.0/networks/nope/state")] = ClientError('Network "nope" not found')
    assert run("network", "info", "nope") == (1, "", 'Error: Network "nope" not found\n')


def test_exec_terminal_flags_before_the_command() -> None:
    from pincus.cli.instance import split_exec_args

    assert split_exec_args(["-T", "--env", "A=1", "--", "sh", "-t"]) == ({"A": "1"}, None, "T", ["sh", "-t"])
    assert split_exec_args(["--force-interactive", "ls", "-l"]) == ({}, None, "t", ["ls", "-l"])
    assert split_exec_args(["--cwd=/tmp", "true"]) == ({}, "/tmp", "", ["true"])


def test_yaml_keeps_the_text_of_values_yaml_1_1_would_retype() -> None:
    from pincus.cli.output import load_yaml

    doc = load_yaml("config:\n  a: yes\n  b: 0x10\n  c: 1400\n  d: on\n  e: 1:30\n  f: ~\nephemeral: true\n")
    assert doc == {
        "config": {"a": "yes", "b": "0x10", "c": "1400", "d": "on", "e": "1:30", "f": None},
        "ephemeral": True,
    }
