"""host/bridgeport.py against the real kernel, checked through `bridge -j`.

Bridge ports live in the daemon's namespace, so these tests make links named `<prefix>...` in
the test process's namespace and delete them afterwards. This kernel has no bridge VLAN
filtering (MACHINE.md): VLAN membership itself is checked in the guest kernel
(tests/guestkernel/test_vlans.py); here only the refusal is.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pincus.errors import HostError, InvalidError
from pincus.host import bridgeport


def bridge_link(port: str) -> dict[str, Any]:
    out = subprocess.run(
        ["bridge", "-j", "-d", "link", "show", "dev", port], capture_output=True, text=True, check=True
    ).stdout
    found: list[dict[str, Any]] = json.loads(out)
    return found[0]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=True)


@pytest.fixture
def port(prefix: str) -> Iterator[str]:
    """A veth end `<prefix>a` on bridge `<prefix>br`; its peer `<prefix>b` is on no bridge."""
    try:
        ip("link", "add", f"{prefix}br", "type", "bridge")
        ip("link", "add", f"{prefix}a", "type", "veth", "peer", "name", f"{prefix}b")
        ip("link", "set", f"{prefix}a", "master", f"{prefix}br")
        yield f"{prefix}a"
    finally:
        for name in (f"{prefix}a", f"{prefix}br"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_port_isolation_is_set_and_cleared_as_the_kernel_reports_it(port: str) -> None:
    assert bridge_link(port)["isolated"] is False
    bridgeport.set_port_isolated(port, True)
    assert bridge_link(port)["isolated"] is True
    bridgeport.set_port_isolated(port, False)
    assert bridge_link(port)["isolated"] is False


def test_isolating_a_link_on_no_bridge_fails_naming_it(port: str, prefix: str) -> None:
    with pytest.raises(HostError, match=rf'isolation of bridge port "{prefix}b": it is not a bridge port'):
        bridgeport.set_port_isolated(f"{prefix}b", True)
    with pytest.raises(HostError, match=rf'bridge port "{prefix}zz": No such device'):
        bridgeport.set_port_isolated(f"{prefix}zz", True)


def bridge_vlans(port: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["bridge", "-j", "vlan", "show", "dev", port], capture_output=True, text=True, check=True
    ).stdout
    return [v for entry in json.loads(out or "[]") for v in entry.get("vlans", [])]


def test_port_vlans_without_vlan_filtering_in_the_kernel_are_refused(port: str) -> None:
    assert bridge_vlans(port) == []
    refused = rf'Failed to set VLANs of bridge port "{port}": Operation not supported'
    with pytest.raises(HostError, match=refused):
        bridgeport.set_port_vlans(port, 10, [20])
    assert bridge_vlans(port) == []


def test_port_vlan_ids_outside_the_bridge_range_are_refused_before_the_kernel(port: str) -> None:
    for untagged, tagged in ((0, []), (None, [4095])):
        with pytest.raises(InvalidError, match="outside 1-4094"):
            bridgeport.set_port_vlans(port, untagged, tagged)
