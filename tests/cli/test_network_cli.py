"""`pincus network ...`, `monitor`, `admin`, `version` end to end through the real socket."""

from __future__ import annotations

import json
import subprocess
import time

import yaml

from tests.pincus_testlib import BIN, Daemon


def test_network_lifecycle_through_cli(daemon: Daemon, prefix: str) -> None:
    name = f"{prefix}br"
    r = daemon.cli(
        "network", "create", name, "ipv4.address=10.250.4.1/24", "ipv6.address=none", "ipv4.nat=true"
    )
    assert r.stdout.strip() == f"Network {name} created"
    shown = yaml.safe_load(daemon.cli("network", "show", name).stdout)
    assert shown["name"] == name and shown["type"] == "bridge" and shown["managed"] is True
    assert shown["config"] == {"ipv4.address": "10.250.4.1/24", "ipv6.address": "none", "ipv4.nat": "true"}
    assert daemon.cli("network", "get", name, "ipv4.nat").stdout == "true\n"
    daemon.cli("network", "set", name, "ipv4.nat=false", "dns.domain=lab.test")
    daemon.cli("network", "set", name, "ipv4.dhcp", "false")  # the two-word form
    daemon.cli("network", "unset", name, "dns.domain")
    shown = yaml.safe_load(daemon.cli("network", "show", name).stdout)
    assert shown["config"] == {
        "ipv4.address": "10.250.4.1/24", "ipv6.address": "none", "ipv4.nat": "false", "ipv4.dhcp": "false"
    }  # fmt: skip
    daemon.cli("network", "rename", name, f"{prefix}b2")
    daemon.cli("network", "delete", f"{prefix}b2")
    assert "not found" in daemon.fails("network", "show", f"{prefix}b2")


def test_network_list_formats(daemon: Daemon, prefix: str) -> None:
    daemon.cli(
        "network",
        "create",
        f"{prefix}br",
        "ipv4.address=10.250.5.1/24",
        "ipv6.address=none",
        "--description=lab",
    )
    table = daemon.cli("network", "list").stdout
    lines = table.splitlines()
    assert lines[0].startswith("+-") and lines[1].split("|")[1].strip() == "NAME" and "MANAGED" in lines[1]
    row = next(line for line in lines if f"| {prefix}br " in line)
    assert "| bridge " in row and "| YES " in row and "10.250.5.1/24" in row and "| lab " in row
    assert "| lo " in table and "| NO " in table
    csv_rows = daemon.cli("network", "list", "--format=csv").stdout.splitlines()
    assert f"{prefix}br,bridge,YES,10.250.5.1/24,none,lab,0,CREATED" in csv_rows
    as_json = json.loads(daemon.cli("network", "list", "--format", "json").stdout)
    assert any(n["name"] == f"{prefix}br" and n["managed"] for n in as_json)
    as_yaml = yaml.safe_load(daemon.cli("network", "list", "--format=yaml").stdout)
    assert any(n["name"] == "lo" and not n["managed"] for n in as_yaml)


def test_network_edit_from_stdin(daemon: Daemon, prefix: str) -> None:
    name = f"{prefix}br"
    daemon.cli("network", "create", name)
    doc = "description: edited\nconfig:\n  ipv4.address: 10.250.6.1/24\n  ipv4.nat: true\n"
    daemon.cli("network", "edit", name, stdin=doc)
    shown = yaml.safe_load(daemon.cli("network", "show", name).stdout)
    assert shown["description"] == "edited"
    assert shown["config"] == {"ipv4.address": "10.250.6.1/24", "ipv4.nat": "true"}
    before = daemon.db_dump()
    msg = daemon.fails("network", "edit", name, stdin="config:\n  ipv4.nat: maybe\n")
    assert "ipv4.nat" in msg and "maybe" in msg
    assert daemon.fails("network", "edit", name, stdin="- a list\n")
    assert daemon.db_dump() == before


def test_bad_input_errors_and_nothing_changes(daemon: Daemon, prefix: str) -> None:
    before = daemon.db_dump()
    assert "unknown key" in daemon.fails("network", "create", f"{prefix}x", "nope=1")
    assert "4095" in daemon.fails(
        "network", "create", f"{prefix}x", "--type=physical", "parent=lo", "vlan=4095"
    )
    assert "does not exist" in daemon.fails(
        "network", "create", f"{prefix}x", "--type=physical", "parent=nosuch9"
    )
    assert "10 parsecs" in daemon.fails("network", "create", f"{prefix}x", "bridge.mtu=10 parsecs")
    assert "name" in daemon.fails("network", "create", "bad name")
    assert "Bad key=value" in daemon.fails("network", "create", f"{prefix}x", "novalue")
    assert "not found" in daemon.fails("network", "delete", "nosuch")
    assert "not found" in daemon.fails("network", "set", "nosuch", "ipv4.nat=true")
    assert "not found" in daemon.fails("network", "unset", "nosuch", "x")
    assert daemon.db_dump() == before
    # argparse usage errors follow the same contract
    daemon.fails("network", "frobnicate")


def test_cli_without_daemon_says_so(tmp_path: object) -> None:
    r = subprocess.run(
        [str(BIN / "pincus"), "network", "list"],
        env={"PINCUS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and r.stderr.startswith("Error: Cannot reach pincusd")


def test_monitor_pretty_shows_lifecycle_and_logging(daemon: Daemon, prefix: str) -> None:
    mon = subprocess.Popen(
        [str(BIN / "pincus"), "monitor", "--pretty"],
        env=daemon.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # let the subscription register
        daemon.cli("network", "create", f"{prefix}m")
        assert mon.stdout is not None
        lines = [mon.stdout.readline() for _ in range(2)]
    finally:
        mon.terminate()
        mon.wait(5)
    text = "".join(lines)
    assert "LIFECYCLE network-created /1.0/networks/" in text
    assert f"INFO      Created network {prefix}m" in text


def test_admin_waitready_version_info_shutdown(daemon: Daemon) -> None:
    daemon.cli("admin", "waitready", "--timeout", "5")
    v = daemon.cli("version").stdout
    assert "Client version: 0.1.0" in v and "Server version: 0.1.0" in v
    info = yaml.safe_load(daemon.cli("info").stdout)
    assert "kernel_features" in info["environment"]
    daemon.cli("admin", "shutdown", "--timeout", "10")
    assert daemon.proc is not None
    assert daemon.proc.wait(10) == 0
    assert not (daemon.dir / "unix.socket").exists()


def test_cli_imports_nothing_of_the_server_side() -> None:
    code = (
        "import sys, pincus.cli.main as m\n"
        "bad = [n for n in sys.modules if n.startswith(('pincus.server','pincus.api','pincus.host',"
        "'pincus.db','pincus.networks','pincus.devices','pincus.instances','pyroute2','yaml','ssl'))]\n"
        "print(','.join(bad))"
    )
    r = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""
