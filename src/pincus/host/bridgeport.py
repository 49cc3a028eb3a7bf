"""Settings of one bridge port: isolation and VLAN membership."""

from __future__ import annotations

import json
import subprocess

from pincus.errors import HostError
from pincus.host import sysfs


def set_port_isolated(port: str, isolated: bool) -> None:
    path = sysfs.root() / "class" / "net" / port / "brport" / "isolated"
    try:
        path.write_text("1" if isolated else "0")
    except OSError as e:
        raise HostError(f"Failed to set isolation of bridge port {port}: {e.strerror or e}") from e


def port_isolated(port: str) -> bool:
    path = sysfs.root() / "class" / "net" / port / "brport" / "isolated"
    try:
        return path.read_text().strip() == "1"
    except OSError as e:
        raise HostError(f"Failed to read isolation of bridge port {port}: {e.strerror or e}") from e


def _bridge(*args: str) -> str:
    r = subprocess.run(["bridge", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise HostError(f"bridge {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


def port_vlans(port: str) -> list[dict[str, object]]:
    """`bridge -j vlan show dev PORT`: [{"vlan": id, "flags": [...]}, ...]."""
    out = _bridge("-j", "vlan", "show", "dev", port)
    doc = json.loads(out) if out.strip() else []
    for entry in doc:
        if entry.get("ifname") == port:
            return list(entry.get("vlans", []))
    return []


def set_port_vlans(port: str, untagged: int | None, tagged: list[int]) -> None:
    """Make the port a member of exactly these VLANs (untagged = PVID, egress untagged)."""
    for entry in port_vlans(port):
        vid = entry.get("vlan")
        if isinstance(vid, int):
            _bridge("vlan", "del", "dev", port, "vid", str(vid))
    if untagged is not None:
        _bridge("vlan", "add", "dev", port, "vid", str(untagged), "pvid", "untagged")
    for vid in tagged:
        if vid != untagged:
            _bridge("vlan", "add", "dev", port, "vid", str(vid))
