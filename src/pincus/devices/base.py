"""The one lifecycle of every device, and the run config a device hands its instance driver."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from pincus.config.keys import CONTAINER, KeyTable, check_config
from pincus.host.facade import Host
from pincus.ownership import Difference, Owned
from pincus.state import State


@dataclass
class NicRun:
    """What the instance driver must do for one NIC."""

    device: str
    hwaddr: str
    host_name: str = ""  # host-side veth end or TAP
    name: str = ""  # interface name inside a container
    tap: bool = False  # VM: give QEMU this TAP
    move_link: str = ""  # container: host link to move in as `name` (physical NICs)
    mtu: int | None = None
    boot_priority: int | None = None
    qemu_args: list[str] = field(default_factory=list)  # VM: passthrough device arguments
    passthrough: bool = False  # VM: a PCI/USB device, not a TAP


@dataclass
class RunConfig:
    nics: list[NicRun] = field(default_factory=list)
    post_hooks: list[Callable[[], None]] = field(default_factory=list)


def port_run(
    device: str, config: dict[str, str], instance_type: str, hwaddr: str, host_name: str, mtu: int
) -> NicRun:
    """A started veth (container) or TAP (VM) NIC: its name inside and boot order from its CONFIG."""
    return NicRun(
        device=device,
        hwaddr=hwaddr,
        host_name=host_name,
        name=config.get("name") or device,
        tap=instance_type != CONTAINER,
        mtu=mtu,
        boot_priority=int(config["boot.priority"]) if "boot.priority" in config else None,
    )


class InstanceView(Protocol):
    """What a device may know of its instance."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def netns(self) -> Path | None: ...  # container's network namespace handle while it runs
    @property
    def running(self) -> bool: ...
    def volatile(self, key: str) -> str | None: ...
    def set_volatile(self, values: dict[str, str | None]) -> None: ...
    def names_inside(self, exclude: str) -> set[str]: ...  # interface names its other NICs take


class Device:
    keys: ClassVar[KeyTable]

    def __init__(self, state: State, instance: InstanceView, name: str, config: dict[str, str]) -> None:
        self.state = state
        self.instance = instance
        self.name = name
        self.config = config

    @property
    def host(self) -> Host:
        """The door to the host (state.host): every host call goes through it."""
        return self.state.host

    def key_table(self) -> KeyTable:
        """The keys this device accepts (a delegating device answers for the driver it chose)."""
        return self.keys

    @property
    def what(self) -> str:
        return f'device "{self.name}"'

    def vkey(self, key: str) -> str:
        return f"volatile.{self.name}.{key}"

    def validate_config(self) -> None:
        """Check the config alone (and against managed networks). Safe on a never-started instance."""
        check_config(self.keys, self.config, self.what, self.instance.type)

    def validate_environment(self) -> None:
        """Check the host has what start() needs. Changes nothing."""

    def start(self) -> RunConfig:
        raise NotImplementedError

    def post_start(self) -> None:
        """Work that needs the instance's side of the device in place."""

    def update(self, old_config: dict[str, str]) -> None:
        """Apply self.config (new) over old_config on a running instance; raise to refuse."""

    def hot_plug(self) -> None:
        """Work only a device added to a running instance needs, once it started (a bind disk
        mounted inside); at the instance's own start, the spawn does it."""

    def hot_unplug(self) -> None:
        """The inverse of hot_plug, for a device removed from a running instance, before it stops."""

    def stop(self) -> RunConfig:
        """What the instance driver must detach before post_stop cleans the host."""
        return RunConfig()

    def post_stop(self) -> None:
        """Undo start() on the host."""

    def remove(self) -> None:
        """The device leaves the instance config: drop persistent traces (volatile keys, files)."""

    def leased_addresses(self) -> list[str]:
        """Addresses a DHCP server of ours gave this device (VMs have no other source)."""
        return []

    def describe(self) -> str:
        """One line for `pincus info`: which path this device took."""
        return ""

    # --- drift: what the device owns against what the kernel has ---------------------------------

    @property
    def owner(self) -> str:
        """Who a difference belongs to, as `admin check` prints it."""
        return f'instance "{self.instance.name}" device "{self.name}"'

    def owned(self) -> list[Owned]:
        """The host objects this device made for its running instance (`pincus info`'s "Owns:")."""
        return []

    def check(self) -> list[Difference]:
        """How the kernel differs from what the running device should own. Changes nothing."""
        return []

    def repair(self, found: list[Difference]) -> list[NicRun]:
        """Put back the device's own objects among FOUND (its repairable differences); the NICs
        the instance driver must attach again (a re-made veth's inside end comes up)."""
        return []
