"""Read-only facts about network interfaces from sysfs.

Every path is built from `root()`, which reads `PINCUS_SYSFS_ROOT` (default `/sys`) on
each call, so tests point it at a fake tree with `monkeypatch.setenv` and nothing is
cached. sysfs shows the interfaces of the network namespace that mounted it: for the
daemon that is its own namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pincus.errors import HostError, InvalidError


def root() -> Path:
    return Path(os.environ.get("PINCUS_SYSFS_ROOT", "/sys"))


def _net(name: str) -> Path:
    # The name becomes a path component: refuse anything that could leave class/net.
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidError(f'Invalid interface name "{name}"')
    return root() / "class" / "net" / name


def _read(path: Path, what: str) -> str:
    try:
        # Raw os calls, no text-file object: sysfs attributes are a few bytes, read on every NIC start.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.read(fd, 65536).decode(errors="replace")
        finally:
            os.close(fd)
    except OSError as e:
        raise HostError(f"Failed to read {what}: open {path}: {e.strerror or e}") from e


def interface_exists(name: str) -> bool:
    return _net(name).exists()


def list_interfaces() -> list[str]:
    """Every interface under class/net, sorted."""
    try:
        return sorted(entry.name for entry in (root() / "class" / "net").iterdir())
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HostError(f"Failed to list interfaces: {root() / 'class' / 'net'}: {e.strerror or e}") from e


_ARPHRD_LOOPBACK = "772"


def interface_kind(name: str) -> str:
    """The type word Incus shows for an interface it does not manage: "loopback", "bridge",
    "vlan", "physical" (has a device), "bond" or "unknown" (veth, TAP, ...), tried in that order."""
    d = _net(name)
    if name == "lo":
        return "loopback"
    try:
        if (d / "type").read_text().strip() == _ARPHRD_LOOPBACK:
            return "loopback"
    except OSError:
        pass
    if (d / "bridge").is_dir():
        return "bridge"
    try:
        if "DEVTYPE=vlan" in (d / "uevent").read_text().splitlines():
            return "vlan"
    except OSError:
        pass
    if (d / "device").exists():
        return "physical"
    if (d / "bonding").is_dir():
        return "bond"
    return "unknown"


def is_bridge(name: str) -> bool:
    """A Linux bridge has a `bridge/` directory; a NIC, veth or bond does not."""
    return (_net(name) / "bridge").is_dir()


def link_name(path: Path) -> str | None:
    """The last component of a sysfs symlink's target, None when the link is absent."""
    try:
        return os.path.basename(os.readlink(path))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"Failed to read the link {path}: {e.strerror or e}") from e


def bridge_master(name: str) -> str | None:
    """The interface `name` is enslaved to (bridge or bond), from its `master` link."""
    return link_name(_net(name) / "master")


def is_bond_member(name: str) -> bool:
    if (_net(name) / "bonding_slave").is_dir():
        return True
    master = bridge_master(name)
    return master is not None and (_net(master) / "bonding").is_dir()


def bridge_vlan_filtering(name: str) -> bool:
    """Whether bridge `name` has VLAN filtering on; a kernel without it has no such file."""
    path = _net(name) / "bridge" / "vlan_filtering"
    try:
        return path.read_text().strip() == "1"
    except FileNotFoundError:
        if not is_bridge(name):
            raise HostError(f'Failed to read VLAN filtering of "{name}": not a bridge') from None
        return False
    except OSError as e:
        raise HostError(f'Failed to read VLAN filtering of "{name}": {path}: {e.strerror or e}') from e


def bridge_members(name: str) -> list[str]:
    """The ports of bridge `name`, sorted."""
    brif = _net(name) / "brif"
    try:
        return sorted(entry.name for entry in brif.iterdir())
    except OSError as e:
        raise HostError(f'Failed to list the ports of bridge "{name}": {brif}: {e.strerror or e}') from e


def read_uevent(name: str) -> dict[str, str]:
    """KEY=VALUE lines of the interface's device uevent (PCI_SLOT_NAME, DRIVER, ...).

    Bridges, veths and other virtual interfaces have no device: HostError naming the path.
    """
    path = _net(name) / "device" / "uevent"
    result: dict[str, str] = {}
    for line in _read(path, f'device information of "{name}"').splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key.strip()] = value.strip()
    return result


def interface_mtu(name: str) -> int:
    path = _net(name) / "mtu"
    text = _read(path, f'the MTU of "{name}"').strip()
    try:
        return int(text)
    except ValueError as e:
        raise HostError(f'Failed to read the MTU of "{name}": {path}: "{text}" is not a number') from e


@dataclass(frozen=True)
class BridgeState:
    """What Incus's network state shows of a bridge, as sysfs has it (forward_delay in the
    kernel's centiseconds, the value `ip -d link` prints)."""

    id: str
    stp: bool
    forward_delay: int
    vlan_default: int  # 0 where the kernel has no VLAN filtering (no default_pvid file)
    vlan_filtering: bool
    upper_devices: tuple[str, ...]


def _read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise HostError(f"Failed to read {path}: {e}") from e


def bridge_state(name: str) -> BridgeState | None:
    """The bridge attributes of `name`; None when it is not a bridge."""
    d = _net(name) / "bridge"
    if not d.is_dir():
        return None
    return BridgeState(
        id=_read(d / "bridge_id", f'the bridge id of "{name}"').strip(),
        stp=_read_int(d / "stp_state", 0) != 0,
        forward_delay=_read_int(d / "forward_delay", 0),
        vlan_default=_read_int(d / "default_pvid", 0),
        vlan_filtering=_read_int(d / "vlan_filtering", 0) == 1,
        upper_devices=tuple(bridge_members(name)),
    )
