"""Helpers of the OVN tests: the host's (tests/integration/test_ovn.py, userspace datapath) and the
guest kernel's (tests/guestkernel/test_ovn_kernel.py, kernel datapath) drive the same uplink,
containers and OVN/OVS databases with these."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.helpers import in_container, with_host_usr
from tests.pincus_testlib import Daemon

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
busybox ip addr flush dev "$interface"
busybox ip addr add "$ip/${mask:-24}" dev "$interface"
[ -n "$router" ] && busybox ip route replace default via "${router%% *}" dev "$interface"
echo "$ip" > "/tmp/udhcpc-$interface-$mtu"
exit 0
"""

UPLINK = "10.250.90"  # the uplink bridge's subnet; OVN routers take addresses from .100-.109


def ovn_dir(daemon: Daemon) -> Path:
    return daemon.dir / "ovn"


def nbctl(daemon: Daemon, *args: str) -> str:
    sock = ovn_dir(daemon) / "central" / "nb.sock"
    return subprocess.run(
        ["ovn-nbctl", f"--db=unix:{sock}", *args], check=True, capture_output=True, text=True, timeout=20
    ).stdout


def vsctl(daemon: Daemon, *args: str) -> str:
    sock = ovn_dir(daemon) / "chassis" / "db.sock"
    return subprocess.run(
        ["ovs-vsctl", f"--db=unix:{sock}", *args], check=True, capture_output=True, text=True, timeout=20
    ).stdout


def uplink(daemon: Daemon, prefix: str, *keys: str) -> str:
    """A Linux bridge with the uplink gateway's address, as a managed physical network "up"."""
    lan = f"{prefix}lan"
    daemon.ns.add_bridge(lan)
    daemon.ns.ip("addr", "add", f"{UPLINK}.1/24", "dev", lan)
    daemon.cli(
        "network", "create", "up", "--type=physical", f"parent={lan}",
        f"ipv4.gateway={UPLINK}.1/24", f"ipv4.ovn.ranges={UPLINK}.100-{UPLINK}.109", *keys,
    )  # fmt: skip
    return lan


def init(daemon: Daemon, name: str, start: bool = False) -> None:
    """A busybox container with eth0 on ovn0 and the host's /usr (iproute2's `ip -j`)."""
    daemon.cli("init", "busybox", name, "-n", "ovn0")
    with_host_usr(daemon, name)
    if start:
        daemon.cli("start", name)


def dhcp(daemon: Daemon, name: str) -> str:
    # A host path is not visible inside the container: the script goes in through exec's stdin.
    script = "/bin/udhcpc.script"
    install = f"cat > {script} && chmod 755 {script}"
    daemon.cli("exec", name, "--", "sh", "-c", install, stdin=UDHCPC_SCRIPT)
    in_container(
        daemon, name, "busybox", "udhcpc", "-q", "-n", "-t", "10", "-T", "1", "-i", "eth0", "-s", script
    )
    addrs = json.loads(in_container(daemon, name, "ip", "-j", "-4", "addr", "show", "eth0"))
    return str(addrs[0]["addr_info"][0]["local"])


def links(daemon: Daemon) -> set[str]:
    return daemon.ns.link_names()


def yaml_config(daemon: Daemon, network: str) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(daemon.cli("network", "show", network).stdout)["config"])


def tag(daemon: Daemon) -> str:
    from pincus.server.daemon import daemon_tag

    return daemon_tag(daemon.dir.absolute())


def processes() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return out
