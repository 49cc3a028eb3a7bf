"""`pincus init/launch/start/.../list/info/exec/config ...` against a fake client (no daemon).

Each test runs the real parser and handlers through `pincus.cli.main.main` and checks the
exact requests sent and what the user sees. The exec protocol test talks to a real unix
socket: the descriptors really travel.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pincus.cli import main as cli_main
from pincus.cli.argparser import Parser
from pincus.cli.client import Client, ClientError, q

CONFIG = {
    "user.note": "hello",
    "volatile.eth0.hwaddr": "00:16:3e:aa:bb:cc",
    "volatile.eth0.host_name": "veth9f",
}
# What a PUT sends back: volatile keys stay with the daemon.
USER_CONFIG = {k: v for k, v in CONFIG.items() if not k.startswith("volatile.")}
DEVICES = {"eth0": {"type": "nic", "network": "br0", "name": "eth0"}}


def instance(name: str = "c1", status: str = "Running", type_: str = "container") -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "description": "",
        "status": status,
        "status_code": 103 if status == "Running" else 102,
        "created_at": "2025-01-02T03:04:05Z",
        "architecture": "x86_64",
        "ephemeral": False,
        "stateful": False,
        "profiles": [],
        "config": dict(CONFIG),
        "devices": copy.deepcopy(DEVICES),
        "expanded_config": {**CONFIG, "user.expanded": "yes"},
        "expanded_devices": copy.deepcopy(DEVICES),
    }


def nic(path: str, host: str, mac: str, addresses: list[str], rx: int = 0) -> dict[str, Any]:
    return {
        "device": "eth0",
        "path": path,
        "host_name": host,
        "hwaddr": mac,
        "mtu": 1500,
        "state": "up",
        "type": "broadcast",
        "addresses": addresses,
        "counters": {"bytes_received": rx, "bytes_sent": 2048, "packets_received": 12, "packets_sent": 20},
    }


STATE = {
    "status": "Running",
    "status_code": 103,
    "pid": 4242,
    "network": {
        "eth0": nic(
            "bridged (veth on br0)",
            "veth9f",
            "00:16:3e:aa:bb:cc",
            ["10.250.1.5/24", "fd42:250::5/64", "fe80::216:3eff:feaa:bbcc/64"],
            rx=1024,
        ),
        "eth1": nic("physical (moved in)", "", "00:16:3e:00:00:02", ["10.250.2.7/24"]),
        "lo": nic("", "", "", ["127.0.0.1/8", "::1/128"]),
    },
}


class FakeClient:
    """Canned metadata per (method, path); an exception value is raised instead."""

    def __init__(self, responses: dict[tuple[str, str], Any] | None = None) -> None:
        self.responses = responses or {}
        self.calls: list[tuple[str, str, Any]] = []
        self.if_matches: list[str | None] = []  # the If-Match of each call, in order
        self.execs: list[tuple[str, list[str], dict[str, str], str | None]] = []
        self.exec_return = 0

    def request(self, method: str, path: str, body: Any = None, if_match: str | None = None) -> Any:
        self.calls.append((method, path, copy.deepcopy(body)))
        self.if_matches.append(if_match)
        r = self.responses.get((method, path), {})
        if isinstance(r, Exception):
            raise r
        return copy.deepcopy(r)

    def request_with_headers(
        self, method: str, path: str, body: Any = None, if_match: str | None = None
    ) -> tuple[Any, dict[str, str]]:
        """As the real client: a GET's ETag (here one per path) is for the PUT that follows."""
        return self.request(method, path, body, if_match), {"etag": f'"tag of {path}"'}

    def exec(
        self, name: str, command: list[str], environment: dict[str, str] | None = None, cwd: str | None = None
    ) -> int:
        self.execs.append((name, command, environment or {}, cwd))
        return self.exec_return


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient({("GET", "/1.0/instances/c1"): instance(), ("GET", "/1.0/instances/c1/state"): STATE})


@pytest.fixture
def run(fake: FakeClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
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


def state_put(name: str, body: dict[str, Any]) -> tuple[str, str, Any]:
    return ("PUT", f"/1.0/instances/{name}/state", body)


# --- create and state --------------------------------------------------------------------------


def test_init_with_network_and_config_posts_eth0(run: Run, fake: FakeClient) -> None:
    code, out, _ = run(
        "init", "c1", "-n", "br0", "-c", "user.a=1", "--config", "user.b=x=y", "--description", "d"
    )
    assert (code, out) == (0, "Creating c1\n")
    assert fake.calls == [
        (
            "POST",
            "/1.0/instances",
            {
                "name": "c1",
                "type": "container",
                "description": "d",
                "config": {"user.a": "1", "user.b": "x=y"},
                "devices": {"eth0": {"type": "nic", "network": "br0", "name": "eth0"}},
            },
        )
    ]


def test_init_vm_without_network_has_no_devices(run: Run, fake: FakeClient) -> None:
    assert run("init", "v1", "--vm")[0] == 0
    assert fake.calls[0][2] == {
        "name": "v1",
        "type": "virtual-machine",
        "description": "",
        "config": {},
        "devices": {},
    }


def test_launch_creates_then_starts(run: Run, fake: FakeClient) -> None:
    code, out, _ = run("launch", "c1", "-n", "br0")
    assert (code, out) == (0, "Creating c1\nStarting c1\n")
    assert [c[0:2] for c in fake.calls] == [("POST", "/1.0/instances"), ("PUT", "/1.0/instances/c1/state")]
    assert fake.calls[1][2] == {"action": "start"}


def test_start_stop_restart_send_state_actions_for_each_name(run: Run, fake: FakeClient) -> None:
    assert run("start", "a", "b")[0] == 0
    assert run("stop", "a", "b")[0] == 0
    assert run("stop", "a", "-f", "--timeout", "5")[0] == 0
    assert run("restart", "a", "--force")[0] == 0
    assert fake.calls == [
        state_put("a", {"action": "start"}),
        state_put("b", {"action": "start"}),
        state_put("a", {"action": "stop", "timeout": 30, "force": False}),
        state_put("b", {"action": "stop", "timeout": 30, "force": False}),
        state_put("a", {"action": "stop", "timeout": 5.0, "force": True}),
        state_put("a", {"action": "restart", "timeout": 30, "force": True}),
    ]


def test_first_failure_stops_the_batch_with_error_and_exit_1(run: Run, fake: FakeClient) -> None:
    fake.responses[("PUT", "/1.0/instances/a/state")] = ClientError('Instance "a" not found')
    code, out, err = run("start", "a", "b")
    assert (code, out, err) == (1, "", 'Error: Instance "a" not found\n')
    assert [c[1] for c in fake.calls] == ["/1.0/instances/a/state"]


def test_empty_instance_name_is_refused(run: Run, fake: FakeClient) -> None:
    code, _, err = run("start", "")
    assert (code, err) == (1, "Error: Instance name required\n")
    assert fake.calls == []


def test_usage_errors_exit_1(run: Run) -> None:
    code, _, err = run("stop")
    assert code == 1 and err.startswith("Error: ")


def test_delete_force_stops_a_running_instance_first(run: Run, fake: FakeClient) -> None:
    assert run("delete", "c1", "-f")[0] == 0
    assert fake.calls == [
        ("GET", "/1.0/instances/c1", None),
        state_put("c1", {"action": "stop", "timeout": 30, "force": True}),
        ("DELETE", "/1.0/instances/c1", None),
    ]


def test_delete_force_of_stopped_instance_only_deletes(run: Run, fake: FakeClient) -> None:
    fake.responses[("GET", "/1.0/instances/c2")] = instance("c2", "Stopped")
    assert run("rm", "-f", "c2")[0] == 0
    assert [c[0] for c in fake.calls] == ["GET", "DELETE"]


def test_delete_without_force_passes_the_daemons_refusal(run: Run, fake: FakeClient) -> None:
    fake.responses[("DELETE", "/1.0/instances/c1")] = ClientError('Instance "c1" is running')
    code, _, err = run("delete", "c1")
    assert (code, err) == (1, 'Error: Instance "c1" is running\n')
    assert fake.calls == [("DELETE", "/1.0/instances/c1", None)]


# --- list and info -----------------------------------------------------------------------------


@pytest.fixture
def listing(fake: FakeClient) -> FakeClient:
    fake.responses[("GET", "/1.0/instances?recursion=2")] = [
        instance("v2", "Stopped", "virtual-machine"),
        instance("c1"),
    ]
    return fake


def test_list_table_has_one_address_per_line_without_lo_and_link_local(run: Run, listing: FakeClient) -> None:
    code, out, _ = run("list")
    assert code == 0
    assert out == (
        "+------+---------+-------------------+--------------------+-----------------+\n"
        "| NAME |  STATE  |        IPV4       |        IPV6        |       TYPE      |\n"
        "+------+---------+-------------------+--------------------+-----------------+\n"
        "| c1   | RUNNING | 10.250.1.5 (eth0) | fd42:250::5 (eth0) | CONTAINER       |\n"
        "|      |         | 10.250.2.7 (eth1) |                    |                 |\n"
        "+------+---------+-------------------+--------------------+-----------------+\n"
        "| v2   | STOPPED |                   |                    | VIRTUAL-MACHINE |\n"
        "+------+---------+-------------------+--------------------+-----------------+\n"
    )
    # a stopped instance costs no state request
    assert [c[1] for c in listing.calls] == ["/1.0/instances?recursion=2", "/1.0/instances/c1/state"]


def test_list_csv_and_json(run: Run, listing: FakeClient) -> None:
    out = run("list", "--format=csv")[1]
    assert out == (
        'c1,RUNNING,"10.250.1.5 (eth0)\n10.250.2.7 (eth1)",fd42:250::5 (eth0),CONTAINER\n'
        "v2,STOPPED,,,VIRTUAL-MACHINE\n"
    )
    docs = json.loads(run("list", "-f", "json")[1])
    assert [d["name"] for d in docs] == ["c1", "v2"]
    assert docs[0]["state"]["pid"] == 4242 and docs[1]["state"] == {}


def test_list_accepts_incus_address_objects(run: Run, listing: FakeClient) -> None:
    state = copy.deepcopy(STATE)
    state["network"] = {"eth0": {"addresses": [{"family": "inet", "address": "10.250.9.9", "netmask": "24"}]}}
    listing.responses[("GET", "/1.0/instances/c1/state")] = state
    assert "c1,RUNNING,10.250.9.9 (eth0),,CONTAINER\n" in run("list", "--format", "csv")[1]


def test_info_shows_status_pid_and_each_nic(run: Run, fake: FakeClient) -> None:
    code, out, _ = run("info", "c1")
    assert code == 0
    nic_block = [
        "Host interface: veth9f",
        "MAC address: 00:16:3e:aa:bb:cc",
        "MTU: 1500",
        "Bytes received: 1024",
        "Bytes sent: 2048",
        "Packets received: 12",
        "Packets sent: 20",
        "IP addresses:",
        "  inet 10.250.1.5/24",
        "  inet6 fd42:250::5/64",
        "  inet6 fe80::216:3eff:feaa:bbcc/64",
        "Path: bridged (veth on br0)",
    ]
    expected = [
        "Name: c1",
        "Status: RUNNING",
        "Type: container",
        "Architecture: x86_64",
        "PID: 4242",
        "Created: 2025-01-02T03:04:05Z",
        "",
        "Resources:",
        "  Network usage:",
        "    eth0:",
        "      Type: broadcast",
        "      State: UP",
        *("      " + line for line in nic_block),
        "    eth1:",
    ]
    assert out.splitlines()[: len(expected)] == expected
    assert "      Path: physical (moved in)" in out.splitlines()
    assert fake.calls == [("GET", "/1.0/instances/c1", None), ("GET", "/1.0/instances/c1/state", None)]


def test_info_of_stopped_instance_has_no_resources(run: Run, fake: FakeClient) -> None:
    fake.responses[("GET", "/1.0/instances/c1")] = instance(status="Stopped")
    fake.responses[("GET", "/1.0/instances/c1/state")] = {"status": "Stopped", "pid": 0, "network": {}}
    out = run("info", "c1")[1]
    assert "Status: STOPPED" in out and "PID" not in out and "Resources" not in out


def test_info_unknown_instance(run: Run, fake: FakeClient) -> None:
    fake.responses[("GET", "/1.0/instances/nope")] = ClientError('Instance "nope" not found')
    assert run("info", "nope")[0:3:2] == (1, 'Error: Instance "nope" not found\n')


# --- exec (argument handling; the protocol is tested for real below) ---------------------------


@pytest.mark.parametrize(
    ("argv", "env", "cwd", "command"),
    [
        (["c1", "--", "ls", "-l"], {}, None, ["ls", "-l"]),
        (["c1", "ls", "-l"], {}, None, ["ls", "-l"]),
        (
            ["c1", "--env", "A=1", "--cwd", "/tmp", "--", "sh", "-c", "x --cwd y"],
            {"A": "1"},
            "/tmp",
            ["sh", "-c", "x --cwd y"],
        ),
        (
            ["--env", "A=1", "c1", "--env=B=2", "--cwd=/", "--", "sh", "--", "x"],
            {"A": "1", "B": "2"},
            "/",
            ["sh", "--", "x"],
        ),
    ],
)
def test_exec_arguments(
    run: Run, fake: FakeClient, argv: list[str], env: dict[str, str], cwd: str | None, command: list[str]
) -> None:
    fake.exec_return = 3
    code, _, err = run("exec", *argv)
    assert (code, err) == (3, "")
    assert fake.execs == [("c1", command, env, cwd)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["c1"], "exec needs a command"),
        (["c1", "--"], "exec needs a command"),
        (["c1", "-X", "ls"], 'Unknown exec flag "-X"'),
        (["c1", "--env", "NOEQUALS", "--", "ls"], 'Bad key=value pair: "NOEQUALS"'),
        (["c1", "--cwd"], "--cwd needs a value"),
    ],
)
def test_exec_argument_errors(run: Run, fake: FakeClient, argv: list[str], message: str) -> None:
    code, _, err = run("exec", *argv)
    assert code == 1 and err.startswith(f"Error: {message}")
    assert fake.execs == []


# --- config ------------------------------------------------------------------------------------


def test_config_show_is_incus_shaped_yaml(run: Run) -> None:
    import yaml

    doc = yaml.safe_load(run("config", "show", "c1")[1])
    assert list(doc) == [
        "architecture",
        "config",
        "devices",
        "ephemeral",
        "profiles",
        "stateful",
        "description",
    ]
    assert doc["config"] == CONFIG and doc["devices"] == DEVICES
    expanded = yaml.safe_load(run("config", "show", "c1", "--expanded")[1])
    assert expanded["config"]["user.expanded"] == "yes"


def test_config_get_prints_value_or_empty_line(run: Run) -> None:
    assert run("config", "get", "c1", "volatile.eth0.hwaddr")[1] == "00:16:3e:aa:bb:cc\n"
    assert run("config", "get", "c1", "user.none")[1] == "\n"


def test_config_set_patches_only_the_given_keys(run: Run, fake: FakeClient) -> None:
    assert run("config", "set", "c1", "user.a=1", "user.b=2")[0] == 0
    assert run("config", "set", "c1", "user.c", "three words")[0] == 0
    assert fake.calls == [
        ("PATCH", "/1.0/instances/c1", {"config": {"user.a": "1", "user.b": "2"}}),
        ("PATCH", "/1.0/instances/c1", {"config": {"user.c": "three words"}}),
    ]


def test_config_unset_and_empty_value_patch_the_key_empty(run: Run, fake: FakeClient) -> None:
    # The daemon drops a key whose value is empty, as Incus does; an absent key is no error.
    assert run("config", "unset", "c1", "user.note")[0:2] == (0, "")
    assert run("config", "unset", "c1", "user.none")[0:2] == (0, "")
    assert run("config", "set", "c1", "user.note=", "user.x=1")[0:2] == (0, "")
    assert fake.calls == [
        ("PATCH", "/1.0/instances/c1", {"config": {"user.note": ""}}),
        ("PATCH", "/1.0/instances/c1", {"config": {"user.none": ""}}),
        ("PATCH", "/1.0/instances/c1", {"config": {"user.note": "", "user.x": "1"}}),
    ]


def test_config_unset_of_a_volatile_key_is_refused(run: Run, fake: FakeClient) -> None:
    code, _, err = run("config", "unset", "c1", "volatile.eth0.hwaddr")
    assert code == 1 and "volatile.eth0.hwaddr" in err
    assert fake.calls == []


def test_config_edit_replaces_config_devices_and_description(
    run: Run, fake: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = (
        "description: edited\n"
        "config:\n  user.flag: true\n  user.n: 3\n  volatile.eth0.hwaddr: 00:16:3e:aa:bb:cc\n"
        "devices:\n  eth0:\n    type: nic\n    network: br0\n    mtu: 1400\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(doc))
    assert run("config", "edit", "c1")[0] == 0
    assert fake.calls == [
        ("GET", "/1.0/instances/c1", None),
        (
            "PUT",
            "/1.0/instances/c1",
            {
                "config": {"user.flag": "true", "user.n": "3", "volatile.eth0.hwaddr": "00:16:3e:aa:bb:cc"},
                "devices": {"eth0": {"type": "nic", "network": "br0", "mtu": "1400"}},
                "description": "edited",
            },
        ),
    ]


def test_config_edit_refuses_bad_devices(run: Run, fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("devices:\n  eth0: [a, b]\n"))
    code, _, err = run("config", "edit", "c1")
    assert (code, err) == (1, 'Error: Device "eth0" must be a map of keys\n')
    assert [c[0] for c in fake.calls] == ["GET"]


# --- config device -----------------------------------------------------------------------------


def put_of(fake: FakeClient) -> dict[str, Any]:
    puts = [c for c in fake.calls if c[0] == "PUT"]
    assert len(puts) == 1 and puts[0][1] == "/1.0/instances/c1"
    body: dict[str, Any] = puts[0][2]
    return body


def test_device_add_puts_new_device_leaves_volatile_keys_to_daemon(run: Run, fake: FakeClient) -> None:
    code, out, _ = run("config", "device", "add", "c1", "eth1", "nic", "nictype=physical", "parent=veth5")
    assert (code, out) == (0, "Device eth1 added to c1\n")
    assert put_of(fake) == {
        "config": USER_CONFIG,
        "devices": {**DEVICES, "eth1": {"type": "nic", "nictype": "physical", "parent": "veth5"}},
        "description": "",
        "profiles": [],  # a PUT replaces the profiles too: they go back as they were
    }


def test_device_add_existing_device_is_refused(run: Run, fake: FakeClient) -> None:
    code, _, err = run("config", "device", "add", "c1", "eth0", "nic", "network=br1")
    assert (code, err) == (1, 'Error: Device "eth0" already exists on instance "c1"\n')
    assert [c[0] for c in fake.calls] == ["GET"]


def test_device_set_changes_keys_and_empty_value_unsets(run: Run, fake: FakeClient) -> None:
    assert run("config", "device", "set", "c1", "eth0", "mtu=1400", "name=", "limits.egress=10Mbit")[0:2] == (
        0,
        "",
    )
    assert put_of(fake) == {
        "config": USER_CONFIG,
        "devices": {"eth0": {"type": "nic", "network": "br0", "mtu": "1400", "limits.egress": "10Mbit"}},
        "description": "",
        "profiles": [],
    }


def test_device_set_two_word_form(run: Run, fake: FakeClient) -> None:
    assert run("config", "device", "set", "c1", "eth0", "mtu", "9000")[0] == 0
    assert put_of(fake)["devices"]["eth0"]["mtu"] == "9000"


def test_device_unset_and_get(run: Run, fake: FakeClient) -> None:
    assert run("config", "device", "get", "c1", "eth0", "network")[1] == "br0\n"
    assert run("config", "device", "unset", "c1", "eth0", "name")[0] == 0
    assert put_of(fake)["devices"] == {"eth0": {"type": "nic", "network": "br0"}}
    fake.calls.clear()
    assert run("config", "device", "unset", "c1", "eth0", "mtu")[0:3:2] == (0, "")  # absent: no error
    assert [c[0] for c in fake.calls] == ["GET"]


def test_device_remove_all_or_nothing(run: Run, fake: FakeClient) -> None:
    code, _, err = run("config", "device", "remove", "c1", "eth0", "eth1")
    assert (code, err) == (1, 'Error: Device "eth1" doesn\'t exist on instance "c1"\n')
    assert [c[0] for c in fake.calls] == ["GET"]
    code, out, _ = run("config", "device", "remove", "c1", "eth0")
    assert (code, out) == (0, "Device eth0 removed from c1\n")
    assert put_of(fake) == {"config": USER_CONFIG, "devices": {}, "description": "", "profiles": []}


@pytest.mark.parametrize(
    "verb", [["set", "eth1", "mtu=1400"], ["unset", "eth1", "mtu"], ["get", "eth1", "mtu"]]
)
def test_device_commands_name_the_missing_device(run: Run, fake: FakeClient, verb: list[str]) -> None:
    code, _, err = run("config", "device", verb[0], "c1", *verb[1:])
    assert (code, err) == (1, 'Error: Device "eth1" doesn\'t exist on instance "c1"\n')
    assert all(c[0] == "GET" for c in fake.calls)


def test_device_show_and_list(run: Run, fake: FakeClient) -> None:
    import yaml

    inst = instance()
    inst["devices"]["a0"] = {"type": "nic", "network": "br9"}
    fake.responses[("GET", "/1.0/instances/c1")] = inst
    assert yaml.safe_load(run("config", "device", "show", "c1")[1]) == inst["devices"]
    assert run("config", "device", "list", "c1")[1] == "a0\neth0\n"


# --- the exec protocol, for real over a unix socket ----------------------------------------------


class ExecServer:
    """Answers one exec request like pincusd: 100, take three fds, write "hi" to the second, return 7."""

    def __init__(self, path: Path, error: tuple[int, str] | None = None) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.listener.settimeout(5)
        self.error = error
        self.seen: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _reply(conn: socket.socket, code: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        head = f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        conn.sendall(head.encode() + data)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5)
            f = conn.makefile("rb")
            self.seen["request"] = f.readline().decode().strip()
            headers: dict[str, str] = {}
            while line := f.readline().decode().strip():
                k, _, v = line.partition(":")
                headers[k.lower()] = v.strip()
            self.seen["headers"] = headers
            self.seen["body"] = json.loads(f.read(int(headers["content-length"])))
            if self.error:
                code, msg = self.error
                self._reply(conn, code, {"type": "error", "error_code": code, "error": msg, "metadata": None})
                return
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            byte, fds, _, _ = socket.recv_fds(conn, 1, 3)
            self.seen["byte"], self.seen["nfds"] = byte, len(fds)
            os.write(fds[1], b"hi")
            for fd in fds:
                os.close(fd)
            self._reply(conn, 200, {"type": "sync", "status_code": 200, "metadata": {"return": 7}})

    def close(self) -> None:
        self.thread.join(5)
        self.listener.close()


def test_exec_passes_stdio_fds_and_returns_the_exit_status(tmp_path: Path) -> None:
    server = ExecServer(tmp_path / "unix.socket")
    r_out, w_out = os.pipe()
    try:
        ret = Client(tmp_path / "unix.socket", timeout=5).exec(
            "c1", ["sh", "-c", "echo hi"], {"A": "1"}, "/tmp", fds=(0, w_out, 2)
        )
        os.close(w_out)
        assert ret == 7
        assert os.read(r_out, 100) == b"hi"
    finally:
        os.close(r_out)
        server.close()
    assert server.seen["request"] == "POST /1.0/instances/c1/exec HTTP/1.1"
    assert server.seen["headers"]["x-pincus-stdio"] == "fds" and "expect" not in server.seen["headers"]
    assert server.seen["body"] == {
        "command": ["sh", "-c", "echo hi"],
        "environment": {"A": "1"},
        "cwd": "/tmp",
    }
    assert (server.seen["byte"], server.seen["nfds"]) == (b"\0", 3)


def test_exec_command_exit_status_passes_through_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    server = ExecServer(tmp_path / "unix.socket")
    monkeypatch.setenv("PINCUS_DIR", str(tmp_path))
    try:
        with pytest.raises(SystemExit) as e:
            cli_main.main(["exec", "c1", "--env", "K=V", "--", "true"])
    finally:
        server.close()
    assert e.value.code == 7
    assert capfd.readouterr().out == "hi"  # written by the "daemon" straight to our fd 1
    assert server.seen["body"] == {"command": ["true"], "environment": {"K": "V"}, "cwd": None}


def test_exec_error_before_continue_sends_no_fds(tmp_path: Path) -> None:
    server = ExecServer(tmp_path / "unix.socket", error=(409, 'Instance "c1" is not running'))
    try:
        with pytest.raises(ClientError, match='Instance "c1" is not running'):
            Client(tmp_path / "unix.socket", timeout=5).exec("c1", ["true"])
    finally:
        server.close()
    assert "nfds" not in server.seen


# --- start-up: only the command given is imported and built -----------------------------------

LEAN_ARGVS = [
    ["list"],
    ["ls", "--format=csv"],
    ["init", "c1", "-n", "br0", "-c", "a=b", "--vm"],
    ["stop", "c1", "c2", "-f", "--timeout", "5"],
    ["rm", "c1", "-f"],
    ["exec", "c1", "--env", "A=1", "--", "ls", "-l"],
    ["info"],
    ["info", "c1"],
    ["version"],
    ["monitor", "--pretty", "--type=lifecycle"],
    ["admin", "waitready", "--timeout", "1"],
    ["network", "list", "-f", "json"],
    ["network", "create", "n1", "--type=physical", "parent=eth1"],
    ["network", "rm", "n1"],
    ["network", "list-leases", "n1"],
    ["config", "show", "c1", "--expanded"],
    ["config", "set", "c1", "a", "b"],
    ["config", "device", "add", "c1", "eth1", "nic", "network=br0"],
    ["config", "device", "rm", "c1", "eth1", "eth2"],
    ["config", "device", "ls", "c1"],
]


@pytest.mark.parametrize("argv", LEAN_ARGVS, ids=" ".join)
def test_parser_of_one_command_parses_as_the_whole_tree(argv: list[str]) -> None:
    lean, _ = cli_main.parser(argv).parse_known_args(argv)
    full, _ = cli_main.parser().parse_known_args(argv)
    assert vars(lean) == vars(full)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["network", "--help"], ["config", "device", "--help"], ["list", "--help"], ["admin", "-h"]],
)
def test_help_lists_every_command_of_its_level(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main.parser(argv).parse_args(argv)
    lean = capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main.parser().parse_args(argv)
    assert lean == capsys.readouterr().out
    if argv == ["--help"]:
        for name, aliases, help_line, _ in cli_main.COMMANDS:
            assert f"    {' '.join([name, *(f'({a})' for a in aliases)])}" in lean and help_line in lean


@pytest.mark.parametrize("columns", ["57", "100", "", "0"])
@pytest.mark.parametrize("argv", [["network", "-h"], ["list", "--help"], ["config", "device", "set", "-h"]])
def test_help_wraps_at_the_terminal_width_as_argparse_does(
    argv: list[str], columns: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    with pytest.raises(SystemExit):
        cli_main.main(argv)
    ours = capsys.readouterr().out
    monkeypatch.setattr(Parser, "_get_formatter", argparse.ArgumentParser._get_formatter)
    with pytest.raises(SystemExit):
        cli_main.main(argv)
    assert ours == capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate' (choose from 'init', 'launch',"),
        (["network", "frob"], "argument COMMAND: invalid choice: 'frob' (choose from 'list', 'ls',"),
        (["config", "device", "add", "c1"], "the following arguments are required: device, type"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_name_every_choice(run: Run, argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert (code, out) == (1, "") and err.startswith(f"Error: {message}")


@given(st.text())
def test_q_quotes_a_path_segment_as_urllib_does(name: str) -> None:
    assert q(name) == quote(name, safe="")


def test_a_command_imports_only_what_it_needs() -> None:
    """What a `config device add` process loads: no typing, socket.py, pathlib, urllib, csv, shutil
    (each costs 1-3 ms of a ~25 ms command), and no other command group's module."""
    code = (
        "import sys\n"
        "from pincus.cli import main\n"
        "argv = ['config', 'device', 'add', 'c1', 'eth1', 'nic', 'network=br0']\n"
        "main.parser(argv).parse_known_args(argv)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    loaded = set(out.stdout.split())
    heavy = {"typing", "socket", "pathlib", "urllib", "csv", "shutil", "contextlib", "yaml", "http", "ssl"}
    assert loaded & heavy == set()
    others = {"pincus.cli.network", "pincus.cli.monitor", "pincus.cli.admin"}
    assert loaded & others == set()
    assert {"pincus.cli.config", "argparse", "_json", "_socket"} <= loaded
