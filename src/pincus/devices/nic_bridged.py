"""nictype=bridged: a veth (container) or TAP (VM) enslaved to a host bridge, with everything
Incus puts on such a port: static DHCP allocation, host routes, limits, filtering, isolation, VLANs."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from pincus.config.device_keys import NIC_BRIDGED
from pincus.config.keys import CONTAINER, KeyTable
from pincus.config.validators import (
    is_interface_name,
    parse_bit_rate,
    parse_bool,
    parse_vlan_list,
    split_list,
)
from pincus.db import instances as db_instances
from pincus.devices import names, nic_bridged_drift
from pincus.devices.base import Device, NicRun, RunConfig, port_run
from pincus.errors import ConflictError, InvalidError, NotFoundError, UnsupportedError
from pincus.host import bridgeport, links, nft_ports, routes, sysctl, sysfs, taps, tc
from pincus.networks.bridge import BridgeNetwork, load_bridge_network
from pincus.ownership import Difference, Owned
from pincus.reverter import Reverter
from pincus.state import State


@dataclass(frozen=True)
class PortSettings:
    """Everything about the host side of the NIC that can change while it runs."""

    limits: tc.Limits | None = None
    filter: nft_ports.NicFilter | None = None
    isolated: bool = False
    vlan: int | None = None
    tagged: tuple[int, ...] = ()
    txqlen: int | None = None
    connected: bool = True
    routes: tuple[str, ...] = ()
    via4: str | None = None
    via6: str | None = None
    static: tuple[str | None, str | None] = field(default=(None, None))
    hwaddr: str = ""


class _Lookup:
    """Marks an argument not given: look the managed network up (None means there is none)."""


_LOOKUP = _Lookup()
_NetArg = BridgeNetwork | _Lookup | None


def _address(value: str | None) -> str | None:
    return None if value in (None, "", "none") else value


class BridgedNic(Device):
    keys: ClassVar[KeyTable] = NIC_BRIDGED

    @property
    def parent(self) -> str:
        return self.config.get("parent", "")

    @property
    def inside_name(self) -> str:
        return self.config.get("name") or self.name

    @property
    def nic_id(self) -> str:
        """Identifies this NIC in files shared with the network (dnsmasq's hosts directory)."""
        return f"{self.instance.name}.{self.name}"

    def flag(self, key: str) -> bool:
        return parse_bool(self.config[key]) if key in self.config else False

    def attached(self) -> bool:
        return parse_bool(self.config.get("attached", "true"))

    def network(self) -> BridgeNetwork | None:
        """The managed pincus bridge this NIC sits on, if its parent is one."""
        return load_bridge_network(self.state, self.parent) if self.parent else None

    # --- validation ------------------------------------------------------------------------------

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
        for family in ("ipv4", "ipv6"):
            if self.flag(f"security.{family}_filtering") and f"{family}.address" not in self.config:
                raise InvalidError(
                    f'Device "{self.name}": security.{family}_filtering needs {family}.address '
                    f"(the address the instance may use, or none to block {family.upper()})"
                )
        ip_filtering = self.flag("security.ipv4_filtering") or self.flag("security.ipv6_filtering")
        if ip_filtering and "vlan.tagged" in self.config:
            raise InvalidError(
                f'Device "{self.name}": "vlan.tagged" cannot be combined with IP filtering '
                "(tagged frames would bypass the address checks, so the filter drops them)"
            )
        self._validate_vlans()
        if "hwaddr" in self.config:
            self._refuse_duplicate("hwaddr", self.config["hwaddr"], str.lower)
        self._validate_addresses()

    def _validate_vlans(self) -> None:
        if "vlan" not in self.config or "vlan.tagged" not in self.config:
            return
        untagged = int(self.config["vlan"])
        if untagged in parse_vlan_list(self.config["vlan.tagged"]):
            raise InvalidError(
                f'Device "{self.name}": VLAN {untagged} is the untagged "vlan" and cannot also be in '
                '"vlan.tagged"'
            )

    def _validate_addresses(self) -> None:
        net = self.network()
        for family in ("ipv4", "ipv6"):
            value = _address(self.config.get(f"{family}.address"))
            if value is None:
                continue
            if net is None:
                # On an unmanaged bridge nothing allocates the address: it only means something
                # to the filter, as with Incus.
                if not self.flag(f"security.{family}_filtering"):
                    raise InvalidError(
                        f'Device "{self.name}": cannot use manually specified {family}.address when using '
                        f'unmanaged parent bridge "{self.parent}" (nothing hands it out; with '
                        f"security.{family}_filtering=true it is the one address the NIC may send from)"
                    )
                continue
            iface = net.ipv4_interface() if family == "ipv4" else net.ipv6_interface()
            if iface is None:
                raise InvalidError(
                    f'Device "{self.name}": network "{net.name}" has no {family.upper()} subnet for '
                    f'{family}.address "{value}"'
                )
            addr = ipaddress.ip_address(value)
            if addr not in iface.network:
                raise InvalidError(
                    f'Device "{self.name}": {family}.address {value} is outside {iface.network} of network '
                    f'"{net.name}"'
                )
            if addr == iface.ip:
                raise InvalidError(
                    f'Device "{self.name}": {family}.address {value} is the address of network '
                    f'"{net.name}" itself'
                )
            self._refuse_duplicate(f"{family}.address", value, ipaddress.ip_address)

    def _refuse_duplicate(self, key: str, value: str, parse: Callable[[str], object]) -> None:
        """Two NICs on one network may not share KEY's value, compared parsed (FD42::5 is fd42::5)."""
        mine = parse(value)
        for instance, device, cfg in db_instances.expanded_devices_with(self.state.store, key):
            if (instance, device) == (self.instance.name, self.name):
                continue
            if self.parent not in (cfg.get("parent"), cfg.get("network")):
                continue
            try:
                theirs = parse(cfg[key])
            except ValueError:
                continue  # "none", "auto" or a value refused when it was stored
            if theirs == mine:
                raise ConflictError(
                    f'Device "{self.name}": {key} {value} is already used by device "{device}" '
                    f'of instance "{instance}"'
                )

    def validate_environment(self) -> None:
        if not self.attached():
            return
        if not self.host(sysfs.is_bridge, self.parent):  # a bridge exists: one look in the common case
            if not self.host(sysfs.interface_exists, self.parent):
                raise NotFoundError(f'Parent bridge "{self.parent}" of device "{self.name}" does not exist')
            raise InvalidError(f'Parent "{self.parent}" of device "{self.name}" is not a bridge')
        self._check_vlan_support(self.config)

    def _check_vlan_support(self, config: dict[str, str]) -> None:
        if "vlan" not in config and "vlan.tagged" not in config:
            return
        if not self.state.features.get("bridge_vlan_filtering", False):
            raise UnsupportedError(
                f'Device "{self.name}": bridge VLAN filtering is not supported by this kernel '
                '(needed for "vlan" and "vlan.tagged")'
            )
        if not self.host(sysfs.bridge_vlan_filtering, self.parent):
            raise InvalidError(
                f'Device "{self.name}": bridge "{self.parent}" has VLAN filtering off (vlan_filtering=0); '
                'turn it on to use "vlan" or "vlan.tagged"'
            )

    # --- names that must stay stable -------------------------------------------------------------

    def hwaddr(self) -> str:
        return self.config.get("hwaddr") or self.instance.volatile(self.vkey("hwaddr")) or names.random_mac()

    def host_name(self) -> str:
        return self._kept_host_name() or self._new_host_name()

    def _kept_host_name(self) -> str | None:
        """The host name set in the config or kept from an earlier start, if any."""
        if "host_name" in self.config:
            return self.config["host_name"]
        return self.instance.volatile(self.vkey("host_name")) or None

    def _new_host_name(self) -> str:
        """A random host name no link has yet."""
        kind = "veth" if self.instance.type == CONTAINER else "tap"
        for _ in range(8):  # a clash is rare (28 random bits); try another name rather than fail
            name = names.host_link_name(kind, self.state.tag)
            if self.host(links.get_link, name) is None:
                return name
        raise ConflictError(f'Device "{self.name}": no free host interface name after 8 tries')

    def ifb_name(self, host_name: str) -> str:
        """The IFB that shapes traffic from the instance when tc police is missing; derived, never stored."""
        return f"pif{self.state.tag}{hashlib.sha256(host_name.encode()).hexdigest()[:6]}"

    def mtu(self) -> int:
        return int(self.config.get("mtu") or self.host(sysfs.interface_mtu, self.parent))

    # --- what the port should look like ----------------------------------------------------------

    def settings(
        self, config: dict[str, str], host_name: str, hwaddr: str, net: _NetArg = _LOOKUP
    ) -> PortSettings:
        """The port's settings; `net` is the managed network if the caller looked it up already."""

        def rate(key: str) -> int | None:
            value = config.get(key) or config.get("limits.max")
            return parse_bit_rate(value) if value else None

        ingress, egress = rate("limits.ingress"), rate("limits.egress")
        prio = int(config["limits.priority"]) if "limits.priority" in config else None
        limits = tc.Limits(ingress, egress, prio) if (ingress or egress or prio is not None) else None
        flag = {k: parse_bool(config[k]) for k in config if k.startswith("security.")}
        v4_on, v6_on = flag.get("security.ipv4_filtering", False), flag.get("security.ipv6_filtering", False)
        mac_on = flag.get("security.mac_filtering", False) or v4_on or v6_on
        v4, v6 = _address(config.get("ipv4.address")), _address(config.get("ipv6.address"))
        nic_filter = None
        if mac_on:
            # As Incus: what the host routes to the NIC is the NIC's to send from.
            routes4, routes6 = (
                split_list(config[k]) if config.get(k) else [] for k in ("ipv4.routes", "ipv6.routes")
            )
            allowed4, allowed6 = ([v4] if v4 else []) + routes4, ([v6] if v6 else []) + routes6
            nic_filter = nft_ports.NicFilter(
                port=host_name, mac=hwaddr, ipv4=allowed4, ipv6=allowed6,
                mac_filtering=True, ipv4_filtering=v4_on, ipv6_filtering=v6_on,
            )  # fmt: skip
        routes = tuple(
            r for key in ("ipv4.routes", "ipv6.routes") if config.get(key) for r in split_list(config[key])
        )
        if isinstance(net, _Lookup):
            # The network only matters for a static address: most NICs have none, and `list` asks
            # this of every NIC.
            net = self.network() if v4 or v6 else None
        return PortSettings(
            limits=limits,
            filter=nic_filter,
            isolated=flag.get("security.port_isolation", False),
            vlan=int(config["vlan"]) if "vlan" in config else None,
            tagged=tuple(parse_vlan_list(config["vlan.tagged"])) if "vlan.tagged" in config else (),
            txqlen=int(config["queue.tx.length"]) if "queue.tx.length" in config else None,
            connected=parse_bool(config.get("connected", "true")),
            routes=routes,
            via4=v4,
            via6=v6,
            hwaddr=hwaddr,
            static=(v4, v6) if net is not None and net.has_dhcp() and (v4 or v6) else (None, None),
        )

    # --- applying settings, one aspect at a time, each with its inverse --------------------------

    def _apply_limits(self, host_name: str, s: PortSettings, fresh: bool = False) -> None:
        ifb = self.ifb_name(host_name)
        if s.limits is None:
            self.host(tc.clear_limits, host_name, ifb)
        else:
            self.host(
                tc.apply_limits,
                host_name,
                s.limits,
                ifb,
                use_police=self.state.features.get("tc_police", False),
                fresh=fresh,
            )

    def _apply_filter(self, host_name: str, s: PortSettings) -> None:
        if s.filter is None:
            self.host(nft_ports.remove_nic_filter, self.state.tag, host_name)
        else:
            self.host(nft_ports.set_nic_filter, self.state.tag, s.filter)

    def _apply_isolation(self, host_name: str, s: PortSettings) -> None:
        self.host(bridgeport.set_port_isolated, host_name, s.isolated)

    def _apply_vlans(self, host_name: str, s: PortSettings) -> None:
        if s.vlan is not None or s.tagged:
            self.host(bridgeport.set_port_vlans, host_name, s.vlan, list(s.tagged))

    def _apply_link(self, host_name: str, s: PortSettings) -> None:
        if s.txqlen is not None:
            self.host(links.set_txqlen, host_name, s.txqlen)
            if self.instance.type == CONTAINER and self.instance.netns is not None:
                self.host(links.set_txqlen, self.inside_name, s.txqlen, netns=str(self.instance.netns))
        if s.connected:
            self.host(links.set_up, host_name)
        else:
            self.host(links.set_down, host_name)

    def _route_via(self, route: str, s: PortSettings) -> str | None:
        return s.via6 if ":" in route else s.via4

    def _add_routes(self, s: PortSettings, undo: Reverter) -> None:
        for route in s.routes:
            self.host(routes.add_route, route, self.parent, via=self._route_via(route, s))
            undo.add(self.host, routes.delete_route, route, self.parent)

    def _delete_routes(self, s: PortSettings) -> None:
        for route in s.routes:
            self.host(routes.delete_route, route, self.parent)

    def _apply_static(self, s: PortSettings, net: _NetArg = _LOOKUP) -> None:
        if isinstance(net, _Lookup):
            net = self.network()
        if net is None:
            return
        if s.static == (None, None):
            net.remove_static_allocation(self.nic_id)
        else:
            net.add_static_allocation(self.nic_id, s.hwaddr, s.static[0], s.static[1], self.instance.name)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> RunConfig:
        if not self.attached():
            return RunConfig()
        hwaddr, host_name, mtu = self.hwaddr(), self._kept_host_name(), self.mtu()
        if host_name is None:
            host_name = self._new_host_name()  # looked up already: no link has it
        elif self.host(links.get_link, host_name) is not None:
            if "host_name" in self.config or self.instance.volatile(self.vkey("host_name")) != host_name:
                raise ConflictError(f'Host interface "{host_name}" for device "{self.name}" already exists')
            # A stop that could not finish left our port behind (its name stays recorded for that,
            # and a dying namespace may not have taken it yet): finish that stop first.
            self.post_stop()
        # The managed network is read once per start (settings and the static allocation).
        net = self.network()
        s = self.settings(self.config, host_name, hwaddr, net)
        # The names go on record before the port exists: a daemon killed from here on finds what to
        # take down; a start that fails puts them back as they were, after everything else is undone.
        keys = (self.vkey("hwaddr"), self.vkey("host_name"))
        before = {k: self.instance.volatile(k) for k in keys}
        with Reverter() as undo:
            undo.add(self.instance.set_volatile, before)
            self.instance.set_volatile(dict(zip(keys, (hwaddr, host_name), strict=True)))
            self.make_port(host_name, mtu, s, undo, net)
            self._add_routes(s, undo)
            undo.success()
        return RunConfig(nics=[port_run(self.name, self.config, self.instance.type, hwaddr, host_name, mtu)])

    def make_port(
        self, host_name: str, mtu: int, s: PortSettings, undo: Reverter, net: _NetArg = _LOOKUP
    ) -> None:
        """The port with everything it carries but its routes, each step's undo in UNDO (start,
        and the drift repair of a port deleted from outside); `net` as in settings()."""
        self._create_port(host_name, s.hwaddr, mtu, s.txqlen)
        undo.add(self.host, links.delete_link, host_name)
        self.host(sysctl.set_ipv6_disabled, host_name)
        if self.instance.type != CONTAINER:  # a container's veth is born on the bridge
            self.host(links.set_master, host_name, self.parent)
        self._apply_static(s, net)
        self._apply_vlans(host_name, s)
        # A new port is not isolated, has no filter, no qdisc, no limits: only a NIC that wants
        # them pays for them.
        if s.isolated:
            self._apply_isolation(host_name, s)
        # Each undo before its step: a step that fails half-way is undone too.
        if s.filter is not None:
            undo.add(self.host, nft_ports.remove_nic_filter, self.state.tag, host_name)
            self._apply_filter(host_name, s)
        if s.limits is not None:
            undo.add(self.host, tc.clear_limits, host_name, self.ifb_name(host_name))
            self._apply_limits(host_name, s, fresh=True)
        self._apply_link(host_name, s)

    def _create_port(self, host_name: str, hwaddr: str, mtu: int, txqlen: int | None) -> None:
        if self.instance.type == CONTAINER:
            netns = self.instance.netns
            assert netns is not None, "a container's network namespace exists before its NICs start"
            # The peer is born inside the container, the host end on the bridge: one request,
            # no move (~15 ms saved per NIC), no separate enslaving.
            self.host(
                links.create_veth_into_netns,
                host_name,
                self.inside_name,
                str(netns),
                peer_mac=hwaddr,
                mtu=mtu,
                txqlen=txqlen,
                master=self.parent,
            )
        else:
            self.host(taps.create_tap, host_name, mtu=mtu)

    def update(self, old_config: dict[str, str]) -> None:
        """Apply changed limits, filters, routes, isolation, VLANs, addresses live; restore on failure."""
        host_name = self.instance.volatile(self.vkey("host_name"))
        if not host_name or not self.attached():
            return
        self._check_vlan_support(self.config)
        hwaddr = self.hwaddr()
        old = self.settings(old_config, host_name, hwaddr)
        new = self.settings(self.config, host_name, hwaddr)
        with Reverter() as undo:
            steps: list[tuple[Callable[[str, PortSettings], None], bool]] = [
                (self._apply_limits, old.limits != new.limits),
                (self._apply_filter, old.filter != new.filter),
                (self._apply_isolation, old.isolated != new.isolated),
                (self._apply_vlans, (old.vlan, old.tagged) != (new.vlan, new.tagged)),
                (self._apply_link, (old.txqlen, old.connected) != (new.txqlen, new.connected)),
            ]
            for apply, changed in steps:
                if changed:
                    undo.add(apply, host_name, old)
                    apply(host_name, new)
            if old.static != new.static:
                undo.add(self._apply_static, old)
                self._apply_static(new)
            if (old.routes, old.via4, old.via6) != (new.routes, new.via4, new.via6):
                self._delete_routes(old)
                undo.add(self._add_routes, old, Reverter())
                self._add_routes(new, undo)
            undo.success()

    def stop(self) -> RunConfig:
        host_name = self.instance.volatile(self.vkey("host_name")) or ""
        if not host_name:
            return RunConfig()
        tap = self.instance.type != CONTAINER
        return RunConfig(nics=[NicRun(device=self.name, hwaddr="", host_name=host_name, tap=tap)])

    def post_stop(self) -> None:
        """Take down every host object of the NIC. A step that fails does not stop the others;
        the first failure is raised at the end, and the host name stays recorded until every step
        has succeeded, so a stop tried again finds what is left (each step is a no-op on what is
        already gone)."""
        host_name = self.instance.volatile(self.vkey("host_name"))
        if not host_name:
            return
        s = self.settings(self.config, host_name, self.hwaddr())
        steps: list[Callable[[], object]] = []
        if s.filter is not None:
            steps.append(lambda: self.host(nft_ports.remove_nic_filter, self.state.tag, host_name))
        # The port goes with its IFB (tc puts the IFB in the port's link group): one kernel wait.
        steps += [lambda: self._delete_routes(s), lambda: self.host(links.delete_link, host_name)]
        if s.limits is not None:
            # Finds nothing left unless the IFB was outside the group (the port vanished first).
            steps.append(lambda: self.host(tc.clear_limits, host_name, self.ifb_name(host_name)))
        errors: list[Exception] = []
        for step in steps:
            try:
                step()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]
        self.instance.set_volatile({self.vkey("host_name"): None})

    def remove(self) -> None:
        net = self.network()
        if net is not None:
            net.remove_static_allocation(self.nic_id)
            mac = self.instance.volatile(self.vkey("hwaddr")) or self.config.get("hwaddr")
            if mac:
                net.release_leases(mac)
        self.instance.set_volatile({self.vkey("hwaddr"): None, self.vkey("host_name"): None})

    def describe(self) -> str:
        return f"bridged: veth/TAP on bridge {self.parent}"

    def owned(self) -> list[Owned]:
        return nic_bridged_drift.owned(self)

    def check(self) -> list[Difference]:
        return nic_bridged_drift.check(self)

    def repair(self, found: list[Difference]) -> list[NicRun]:
        return nic_bridged_drift.repair(self, found)

    def leased_addresses(self) -> list[str]:
        """What the managed bridge's dnsmasq handed to this NIC (how a VM's addresses are known)."""
        net, mac = self.network(), self.instance.volatile(self.vkey("hwaddr"))
        if net is None or not mac:
            return []
        prefix = {4: net.ipv4_interface(), 6: net.ipv6_interface()}
        out = []
        for lease in net.leases():
            if lease["hwaddr"] == mac:
                iface = prefix[ipaddress.ip_address(lease["address"]).version]
                out.append(f"{lease['address']}/{iface.network.prefixlen}" if iface else lease["address"])
        return out


def release_shared(state: State) -> None:
    """Once no instance runs, the daemon's bridge filter table holds nothing: drop it."""
    state.host(nft_ports.delete_bridge_table, state.tag)
