"""nictype=bridged: a veth (container) or TAP (VM) enslaved to a host bridge."""

from __future__ import annotations

from typing import ClassVar

from pincus.config.device_keys import NIC_BRIDGED
from pincus.config.keys import CONTAINER, KeyTable
from pincus.config.validators import is_interface_name
from pincus.devices import names
from pincus.devices.base import Device, NicRun, RunConfig
from pincus.errors import InvalidError, NotFoundError
from pincus.host import links, sysfs
from pincus.reverter import Reverter


class BridgedNic(Device):
    keys: ClassVar[KeyTable] = NIC_BRIDGED

    @property
    def parent(self) -> str:
        return self.config.get("parent", "")

    @property
    def inside_name(self) -> str:
        return self.config.get("name") or self.name

    def validate_config(self) -> None:
        super().validate_config()
        if not self.parent:
            raise InvalidError(
                f'Device "{self.name}": nictype=bridged needs a "parent" bridge or a "network"'
            )
        if self.instance.type == CONTAINER and "name" not in self.config:
            try:
                is_interface_name(self.name)
            except ValueError:
                raise InvalidError(
                    f'Device "{self.name}" needs a "name" key: its device name is not a valid interface name'
                ) from None

    def validate_environment(self) -> None:
        if not sysfs.interface_exists(self.parent):
            raise NotFoundError(f'Parent bridge "{self.parent}" of device "{self.name}" does not exist')
        if not sysfs.is_bridge(self.parent):
            raise InvalidError(f'Parent "{self.parent}" of device "{self.name}" is not a bridge')

    # --- names that must stay stable -------------------------------------------------------------

    def hwaddr(self) -> str:
        return self.config.get("hwaddr") or self.instance.volatile(self.vkey("hwaddr")) or names.random_mac()

    def host_name(self) -> str:
        if "host_name" in self.config:
            return self.config["host_name"]
        kind = "veth" if self.instance.type == CONTAINER else "tap"
        return self.instance.volatile(self.vkey("host_name")) or names.host_link_name(kind, self.state.tag)

    def mtu(self) -> int:
        return int(self.config.get("mtu") or sysfs.interface_mtu(self.parent))

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> RunConfig:
        hwaddr, host_name, mtu = self.hwaddr(), self.host_name(), self.mtu()
        if links.get_link(host_name) is not None:
            raise InvalidError(f'Host interface "{host_name}" for device "{self.name}" already exists')
        qlen = int(self.config["queue.tx.length"]) if "queue.tx.length" in self.config else None
        with Reverter() as undo:
            if self.instance.type == CONTAINER:
                netns = self.instance.netns
                assert netns is not None, "a container's network namespace exists before its NICs start"
                links.create_veth_into_netns(
                    host_name, self.inside_name, str(netns), peer_mac=hwaddr, mtu=mtu, txqlen=qlen
                )
            else:
                links.create_tap(host_name, mtu=mtu)
            undo.add(links.delete_link, host_name)
            links.set_ipv6_disabled(host_name)
            links.set_master(host_name, self.parent)
            links.set_up(host_name)
            self.instance.set_volatile({self.vkey("hwaddr"): hwaddr, self.vkey("host_name"): host_name})
            undo.success()
        nic = NicRun(
            device=self.name,
            hwaddr=hwaddr,
            host_name=host_name,
            name=self.inside_name,
            tap=self.instance.type != CONTAINER,
            mtu=mtu,
            boot_priority=int(self.config["boot.priority"]) if "boot.priority" in self.config else None,
        )
        return RunConfig(nics=[nic])

    def stop(self) -> RunConfig:
        host_name = self.instance.volatile(self.vkey("host_name")) or ""
        tap = self.instance.type != CONTAINER
        return RunConfig(nics=[NicRun(device=self.name, hwaddr="", host_name=host_name, tap=tap)])

    def post_stop(self) -> None:
        host_name = self.instance.volatile(self.vkey("host_name"))
        if host_name:
            links.delete_link(host_name)
        self.instance.set_volatile({self.vkey("host_name"): None})

    def remove(self) -> None:
        self.instance.set_volatile({self.vkey("hwaddr"): None, self.vkey("host_name"): None})

    def describe(self) -> str:
        return f"bridged: parent {self.parent}"
