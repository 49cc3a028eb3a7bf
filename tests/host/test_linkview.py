"""host/linkview.py against the real kernel: one read of a namespace gives what `ip -j` says of
every link (MAC, MTU, up, master), its counters and its addresses."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from pincus.host import addresses, links, linkview
from tests.pincus_testlib import NetNS


def ip_s(ns: NetNS) -> list[dict[str, Any]]:
    out = subprocess.run(["nsenter", f"--net={ns.path}", "ip", "-j", "-s", "addr", "show"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    found: list[dict[str, Any]] = json.loads(out)
    return found


def test_namespace_view_matches_the_kernel_and_the_per_link_reads(netns: NetNS) -> None:
    netns.ip("link", "set", "lo", "up")
    netns.ip("link", "add", "br0", "type", "bridge")
    for i in range(3):
        netns.ip("link", "add", f"va{i}", "mtu", str(1400 + i), "type", "veth", "peer", "name", f"vb{i}")
        netns.ip("addr", "add", f"10.250.6.{i + 1}/24", "dev", f"va{i}")
        netns.ip("addr", "add", f"fd42:250:6::{i + 1}/64", "dev", f"va{i}", "nodad")
        netns.ip("link", "set", f"va{i}", "up")
    netns.ip("link", "set", "vb1", "master", "br0")
    netns.ip("addr", "add", "10.250.7.1/24", "dev", "va1")  # two IPv4 addresses on one link

    view = linkview.namespace_links(netns.path)
    kernel = {entry["ifname"]: entry for entry in ip_s(netns)}

    assert set(view) == set(kernel) == {"lo", "br0", "va0", "vb0", "va1", "vb1", "va2", "vb2"}
    for name, seen in view.items():
        k = kernel[name]
        assert seen.link.mac == k["address"]
        assert seen.link.mtu == k["mtu"]
        assert seen.link.up == ("UP" in k["flags"])
        assert seen.link.master == k.get("master")
        assert seen.link == links.get_link(name, netns.path)
        got = [(a.family, a.address, a.prefixlen) for a in seen.addresses]
        assert got == [(a["family"], a["local"], a["prefixlen"]) for a in k["addr_info"]], name
        assert seen.addresses == addresses.link_address_info(name, netns.path)
        assert seen.stats is not None
        assert seen.stats.rx_bytes <= links.link_stats(name, netns.path).rx_bytes
    assert [a.address for a in view["va1"].addresses if a.family == "inet"] == ["10.250.6.2", "10.250.7.1"]
