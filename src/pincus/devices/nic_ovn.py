"""A NIC on an OVN network: a veth (container) or TAP (VM) on the integration bridge, bound to a
logical switch port that carries its MAC and address (static with `ipv4.address`, else one OVN
picks) and the network's DHCP options.

The logical port lives while the instance runs: start makes it, stop and removal delete it, so a
stopped instance leaves nothing in the northbound database.
"""

from __future__ import annotations

import ipaddress
from typing import ClassVar

from pincus.config.device_keys import NIC_OVN
from pincus.config.keys import CONTAINER, KeyTable
from pincus.db import instances as db_instances
from pincus.db.networks import NetworkRecord
from pincus.devices import names
from pincus.devices.base import Device, InstanceView, NicRun, RunConfig, port_run
from pincus.errors import ConflictError, InvalidError
from pincus.host import links, sysctl, taps
from pincus.networks.ovn import OvnNetwork
from pincus.ownership import Owned
from pincus.reverter import Reverter
from pincus.state import State


class OvnNic(Device):
    keys: ClassVar[KeyTable] = NIC_OVN

    def __init__(
        self, state: State, instance: InstanceView, name: str, config: dict[str, str], network: NetworkRecord
    ) -> None:
        super().__init__(state, instance, name, config)
        self.network = OvnNetwork(state, network.name, dict(network.config))

    @property
    def inside_name(self) -> str:
        return self.config.get("name") or self.name

    @property
    def port(self) -> str:
        return self.network.nic_port(self.instance.name, self.name)

    def validate_config(self) -> None:
        super().validate_config()
        address = self.config.get("ipv4.address")
        if address is None:
            return
        ip = ipaddress.IPv4Address(address)
        router = self.network.address4
        if ip not in router.network or ip in (
            router.network.network_address,
            router.network.broadcast_address,
        ):
            raise InvalidError(
                f'Device "{self.name}": ipv4.address {ip} is not a host address of network '
                f'"{self.network.name}" ({router.network})'
            )
        if ip == router.ip:
            raise InvalidError(
                f'Device "{self.name}": ipv4.address {ip} is the router of "{self.network.name}"'
            )
        for instance, device, cfg in db_instances.expanded_devices_with(self.state.store, "ipv4.address"):
            if (instance, device) == (self.instance.name, self.name) or cfg.get(
                "network"
            ) != self.network.name:
                continue
            try:
                theirs = ipaddress.IPv4Address(cfg["ipv4.address"])
            except ValueError:
                continue
            if theirs == ip:
                raise ConflictError(
                    f'Device "{self.name}": ipv4.address {ip} is already used by device "{device}" '
                    f'of instance "{instance}"'
                )

    def hwaddr(self) -> str:
        return self.config.get("hwaddr") or self.instance.volatile(self.vkey("hwaddr")) or names.random_mac()

    def host_name(self) -> str:
        if "host_name" in self.config:
            return self.config["host_name"]
        if kept := self.instance.volatile(self.vkey("host_name")):
            return kept
        kind = "veth" if self.instance.type == CONTAINER else "tap"
        for _ in range(8):
            name = names.host_link_name(kind, self.state.tag)
            if self.host(links.get_link, name) is None:
                return name
        raise ConflictError(f'Device "{self.name}": no free host interface name after 8 tries')

    def start(self) -> RunConfig:
        hwaddr, host_name, mtu = self.hwaddr(), self.host_name(), self.network.mtu
        if self.host(links.get_link, host_name) is not None:
            if self.instance.volatile(self.vkey("host_name")) != host_name:
                raise ConflictError(f'Host interface "{host_name}" for device "{self.name}" already exists')
            self.post_stop()  # a stop that could not finish: finish it first
        keys = (self.vkey("hwaddr"), self.vkey("host_name"))
        before = {k: self.instance.volatile(k) for k in keys}
        with Reverter() as undo:
            undo.add(self.instance.set_volatile, before)
            self.instance.set_volatile(dict(zip(keys, (hwaddr, host_name), strict=True)))
            self.network.add_nic(self.port, self.instance.name, hwaddr, self.config.get("ipv4.address"))
            undo.add(self.network.delete_nic, self.port)
            if self.instance.type == CONTAINER:
                netns = self.instance.netns
                assert netns is not None, "a container's network namespace exists before its NICs start"
                self.host(
                    links.create_veth_into_netns,
                    host_name,
                    self.inside_name,
                    str(netns),
                    peer_mac=hwaddr,
                    mtu=mtu,
                )
            else:
                self.host(taps.create_tap, host_name, mtu=mtu)
            undo.add(self.host, links.delete_link, host_name)
            self.host(sysctl.set_ipv6_disabled, host_name)
            self.host(links.set_up, host_name)
            self.network.plug(host_name, self.port)
            undo.add(self.network.unplug, host_name)
            undo.success()
        return RunConfig(nics=[port_run(self.name, self.config, self.instance.type, hwaddr, host_name, mtu)])

    def update(self, old_config: dict[str, str]) -> None:
        if old_config != self.config:
            raise InvalidError(f'Device "{self.name}": an OVN NIC cannot change while the instance runs')

    def stop(self) -> RunConfig:
        host_name = self.instance.volatile(self.vkey("host_name")) or ""
        if not host_name:
            return RunConfig()
        tap = self.instance.type != CONTAINER
        return RunConfig(nics=[NicRun(device=self.name, hwaddr="", host_name=host_name, tap=tap)])

    def post_stop(self) -> None:
        host_name = self.instance.volatile(self.vkey("host_name"))
        if not host_name:
            return
        self.network.unplug(host_name)
        self.host(links.delete_link, host_name)
        self.network.delete_nic(self.port)
        self.instance.set_volatile({self.vkey("host_name"): None})

    def remove(self) -> None:
        self.network.delete_nic(self.port)
        self.instance.set_volatile({self.vkey("hwaddr"): None, self.vkey("host_name"): None})

    def describe(self) -> str:
        return f"OVN: logical port {self.port} of network {self.network.name}"

    def owned(self) -> list[Owned]:
        host_name = self.instance.volatile(self.vkey("host_name"))
        return [Owned("veth", host_name), Owned("ovn-port", self.port)] if host_name else []
