"""What the kernel in a test's namespace says, for the client tests."""

from __future__ import annotations

import json

from tests.pincus_testlib import Daemon


def bridge_ports(daemon: Daemon) -> dict[str, str]:
    """Every bridge port in the daemon's namespace, by name, with its bridge (`bridge -j link`)."""
    out = daemon.ns.run("bridge", "-j", "link", "show").stdout
    return {port["ifname"]: port["master"] for port in (json.loads(out) if out.strip() else [])}


def addresses(daemon: Daemon, ifname: str) -> list[str]:
    """The global addresses of IFNAME in the daemon's namespace, as ADDRESS/PREFIX."""
    return [
        f"{a['local']}/{a['prefixlen']}"
        for link in daemon.ns.ipj("addr", "show", "dev", ifname)
        for a in link["addr_info"]
        if a.get("scope") == "global"
    ]
