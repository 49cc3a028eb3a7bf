"""OVN networks: a logical switch behind a logical router whose gateway port sits on a managed
`physical` network (the uplink), as Incus's `ovn` network type.

The uplink reaches OVN through a provider bridge of this chassis's Open vSwitch, mapped as a
localnet port: a bridge parent gets a veth pair between the Linux bridge and the provider bridge
(the Linux bridge gains that one port and nothing else); a NIC parent goes into the provider bridge
itself. One provider bridge serves every OVN network on an uplink and goes with the last of them.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import random
from pathlib import Path
from typing import Any, ClassVar

from pincus.config.keys import KeyTable, check_config
from pincus.config.network_keys import OVN
from pincus.config.validators import parse_bool, parse_ip_range4, parse_ip_range6, split_list
from pincus.db import networks as db_networks
from pincus.db.networks import NetworkRecord
from pincus.errors import ConflictError, InvalidError, NotFoundError
from pincus.host import addresses, files, links, ovn_nb, ovs_daemons, ovs_switch, ovsdb, routes, sysctl, sysfs
from pincus.networks import ovn_chassis, subnets
from pincus.networks.base import NetworkDriver
from pincus.ownership import Difference, Owned
from pincus.reverter import Reverter

log = logging.getLogger(__name__)

DEFAULT_MTU = 1400  # geneve's 58 bytes of overhead under a 1500 underlay, with room to spare
_EXTERNAL_ADDRESS = "volatile.network.ipv4.address"
_EXTERNAL = {4: _EXTERNAL_ADDRESS, 6: "volatile.network.ipv6.address"}


def _mac(seed: str) -> str:
    """A stable locally administered MAC (Incus's 10:66:6a prefix) derived from SEED."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "10:66:6a" + "".join(f":{b:02x}" for b in digest[:3])


def _list(config: dict[str, str], key: str) -> list[str]:
    value = config.get(key, "")
    return split_list(value) if value else []


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def uplink_ranges(config: dict[str, str], version: int = 4) -> list[tuple[Address, Address]]:
    parse = parse_ip_range4 if version == 4 else parse_ip_range6
    return [parse(r) for r in _list(config, f"ipv{version}.ovn.ranges")]


def _overlap(a: tuple[Address, Address], b: tuple[Address, Address]) -> bool:
    return int(a[0]) <= int(b[1]) and int(b[0]) <= int(a[1])


def check_uplink_config(name: str, config: dict[str, str], others: list[NetworkRecord]) -> None:
    """The OVN keys of physical network NAME: ranges inside its gateway's subnet, overlapping
    neither each other nor another uplink's on the same parent."""
    for version in (4, 6):
        _check_ranges(name, config, others, version)


def _check_ranges(name: str, config: dict[str, str], others: list[NetworkRecord], version: int) -> None:
    ranges = uplink_ranges(config, version)
    if not ranges:
        return
    key, gateway_key = f"ipv{version}.ovn.ranges", f"ipv{version}.gateway"
    gateway = config.get(gateway_key)
    if gateway is None:
        raise InvalidError(f'Network "{name}": "{key}" needs "{gateway_key}" (the uplink\'s subnet)')
    subnet = ipaddress.ip_interface(gateway).network
    for start, end in ranges:
        if start not in subnet or end not in subnet:
            raise InvalidError(
                f'Network "{name}": OVN range {start}-{end} is outside the uplink subnet {subnet}'
            )
    for i, (s1, e1) in enumerate(ranges):
        for s2, e2 in ranges[i + 1 :]:
            if _overlap((s1, e1), (s2, e2)):
                raise InvalidError(f'Network "{name}": OVN ranges {s1}-{e1} and {s2}-{e2} overlap')
    for other in others:
        if (
            other.name == name
            or other.type != "physical"
            or other.config.get("parent") != config.get("parent")
        ):
            continue
        for s1, e1 in ranges:
            for s2, e2 in uplink_ranges(other.config, version):
                if _overlap((s1, e1), (s2, e2)):
                    raise ConflictError(
                        f'Network "{name}": OVN range {s1}-{e1} overlaps {s2}-{e2} of network "{other.name}" '
                        "on the same parent"
                    )


class OvnNetwork(NetworkDriver):
    type: ClassVar[str] = "ovn"
    keys: ClassVar[KeyTable] = OVN
    helper: ClassVar[str] = "OVN/OVS daemon"

    # --- what the config says ---------------------------------------------------------------------

    @property
    def uplink_name(self) -> str:
        return self.config.get("network", "")

    def uplink(self) -> NetworkRecord:
        rec = db_networks.get(self.state.store, self.uplink_name)
        if rec is None:
            raise NotFoundError(f'Uplink network "{self.uplink_name}" of network "{self.name}" not found')
        return rec

    @property
    def mtu(self) -> int:
        return int(self.config.get("bridge.mtu") or DEFAULT_MTU)

    @property
    def address4(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.config["ipv4.address"])

    @property
    def address6(self) -> ipaddress.IPv6Interface | None:
        text = self.config.get("ipv6.address", "none")
        return None if text == "none" else ipaddress.IPv6Interface(text)

    @property
    def nat6(self) -> bool:
        return parse_bool(self.config.get("ipv6.nat", "false"))

    @property
    def nat4(self) -> bool:
        return parse_bool(self.config.get("ipv4.nat", "false"))

    @property
    def dhcp4(self) -> bool:
        return parse_bool(self.config.get("ipv4.dhcp", "true"))

    @functools.cached_property
    def logical_tag(self) -> str:
        """The tag in the names of the network's logical rows: the cluster's on a cluster (one
        logical network for every member), this daemon's on a single server."""
        return self.site().logical_tag

    @property
    def nb_owner(self) -> str:
        """The pincus-network external id of every northbound row of this network."""
        return f"{self.logical_tag}/{self.name}"

    @property
    def prefix(self) -> str:
        return f"pincus-{self.logical_tag}-{self.name}"

    @property
    def internal_switch(self) -> str:
        return f"{self.prefix}-ls-int"

    def site(self) -> ovn_chassis.OvnSite:
        return ovn_chassis.site(self.state)

    # --- the uplink's provider bridge -----------------------------------------------------------

    def _uplink_id(self) -> str:
        return hashlib.sha256(f"{self.state.tag}/{self.uplink_name}".encode()).hexdigest()[:4]

    @property
    def provider_bridge(self) -> str:
        return f"pov{self.state.tag}{self._uplink_id()}"

    @property
    def physnet(self) -> str:
        # The localnet's network name, mapped on every chassis: the same on every member.
        return f"pincus-{self.logical_tag}-{self.uplink_name}"

    def _veth(self) -> tuple[str, str]:
        """(OVS end, Linux bridge end) of the veth pair joining a bridge uplink."""
        return f"{self.provider_bridge}a", f"{self.provider_bridge}b"

    # --- validation -----------------------------------------------------------------------------

    def prepare_config(self, others: list[NetworkRecord], creating: bool) -> None:
        """As Incus: `ipv4.address` defaults to `auto`, a free /24 that also gets `ipv4.nat=true`
        unless set (an address given by the user keeps NAT off unless asked); the router's uplink
        address is picked from the uplink's `ipv4.ovn.ranges` once, on creation."""
        check_config(self.keys, self.config, f'network "{self.name}"')
        rec = db_networks.get(self.state.store, self.uplink_name)
        if creating:
            self.config.setdefault("ipv4.address", "auto")
        if self.config.get("ipv4.address") == "auto":
            used = [ipaddress.ip_interface(a).network for a in self.host(addresses.all_addresses)]
            used += [ipaddress.ip_network(r) for r in self.host(routes.list_routes)]
            used += [ipaddress.ip_interface(a).network for a in self._claimed_addresses(others)]
            if rec is not None and "ipv4.gateway" in rec.config:
                used.append(ipaddress.ip_interface(rec.config["ipv4.gateway"]).network)
            self.config["ipv4.address"] = subnets.auto_address(4, used, random.Random(), self.name)
            self.config.setdefault("ipv4.nat", "true")
        if not creating:
            # An update keeps the router's uplink addresses, whether or not the new config names them.
            old = db_networks.get(self.state.store, self.name)
            for key in _EXTERNAL.values():
                if old is not None and key in old.config:
                    self.config[key] = old.config[key]
            return
        if rec is None or rec.type != "physical":
            return  # validate_config says what is wrong
        for version, key in _EXTERNAL.items():
            wanted = version == 4 or self.config.get("ipv6.address", "none") != "none"
            if wanted and key not in self.config:
                self.config[key] = str(self._free_external_address(rec, others, version))

    def _claimed_addresses(self, others: list[NetworkRecord]) -> list[str]:
        return [
            o.config["ipv4.address"]
            for o in others
            if o.name != self.name and o.type in ("ovn", "bridge") and "/" in o.config.get("ipv4.address", "")
        ]

    def _free_external_address(
        self, uplink: NetworkRecord, others: list[NetworkRecord], version: int
    ) -> Address:
        key = _EXTERNAL[version]
        used = {
            ipaddress.ip_address(o.config[key])
            for o in others
            if o.type == "ovn" and o.name != self.name and key in o.config
        }
        gateway = uplink.config.get(f"ipv{version}.gateway")
        if gateway:
            used.add(ipaddress.ip_interface(gateway).ip)
        ranges = uplink_ranges(uplink.config, version)
        for start, end in ranges:
            for number in range(int(start), int(end) + 1):  # lazy: an IPv6 range may be huge
                address = type(start)(number)
                if address not in used:
                    return address
        if not ranges:
            raise InvalidError(
                f'Uplink network "{uplink.name}" has no "ipv{version}.ovn.ranges": network "{self.name}" '
                "needs an address on it for its router"
            )
        raise ConflictError(
            f'No free address left in "ipv{version}.ovn.ranges" of uplink network "{uplink.name}"'
        )

    def validate_config(self, others: list[NetworkRecord]) -> None:
        super().validate_config(others)
        if not self.uplink_name:
            raise InvalidError(
                f'Network "{self.name}" needs "network" (its uplink, a managed physical network)'
            )
        uplink = self.uplink()
        if uplink.type != "physical":
            raise InvalidError(
                f'Network "{self.name}": uplink "{uplink.name}" is of type "{uplink.type}"; '
                'the uplink of an OVN network must be a managed "physical" network'
            )
        if "ipv4.address" not in self.config:
            raise InvalidError(f'Network "{self.name}" needs "ipv4.address" (the router\'s address, CIDR)')
        if "ipv4.gateway" not in uplink.config:
            raise InvalidError(
                f'Uplink network "{uplink.name}" needs "ipv4.gateway" (CIDR) for OVN network "{self.name}"'
            )
        subnet = self.address4.network
        uplink_subnet = ipaddress.IPv4Interface(uplink.config["ipv4.gateway"]).network
        if subnet.overlaps(uplink_subnet):
            raise InvalidError(
                f'Network "{self.name}": subnet {subnet} overlaps its uplink\'s {uplink_subnet}'
            )
        for other in others:
            text = other.config.get("ipv4.address", "")
            if text in self._claimed_addresses([other]) and ipaddress.IPv4Interface(text).network.overlaps(
                subnet
            ):
                raise ConflictError(f'Network "{self.name}": subnet {subnet} overlaps network "{other.name}"')
        if not self.nat4:
            routes = [ipaddress.IPv4Network(r) for r in _list(uplink.config, "ipv4.routes")]
            if not any(subnet.subnet_of(r) for r in routes):
                raise InvalidError(
                    f'Network "{self.name}": with ipv4.nat=false its subnet {subnet} must be inside the '
                    f'uplink\'s "ipv4.routes" (network "{uplink.name}")'
                )
        self._validate_ipv6(uplink, others)
        for key in _EXTERNAL.values():
            external = self.config.get(key)
            for other in others:
                if (
                    external
                    and other.name != self.name
                    and other.type == "ovn"
                    and other.config.get(key) == external
                ):
                    raise ConflictError(
                        f'Network "{self.name}": uplink address {external} is used by "{other.name}"'
                    )

    def _validate_ipv6(self, uplink: NetworkRecord, others: list[NetworkRecord]) -> None:
        address = self.address6
        if address is None:
            return
        if "ipv6.gateway" not in uplink.config:
            raise InvalidError(
                f'Uplink network "{uplink.name}" needs "ipv6.gateway" for IPv6 on network "{self.name}"'
            )
        subnet = address.network
        if subnet.overlaps(ipaddress.IPv6Interface(uplink.config["ipv6.gateway"]).network):
            raise InvalidError(f'Network "{self.name}": subnet {subnet} overlaps its uplink\'s')
        for other in others:
            text = other.config.get("ipv6.address", "")
            if other.name == self.name or other.type not in ("ovn", "bridge") or "/" not in text:
                continue
            if ipaddress.IPv6Interface(text).network.overlaps(subnet):
                raise ConflictError(f'Network "{self.name}": subnet {subnet} overlaps network "{other.name}"')
        if not self.nat6:
            routes = [ipaddress.IPv6Network(r) for r in _list(uplink.config, "ipv6.routes")]
            if not any(subnet.subnet_of(r) for r in routes):
                raise InvalidError(
                    f'Network "{self.name}": with ipv6.nat=false its subnet {subnet} must be inside the '
                    f'uplink\'s "ipv6.routes" (network "{uplink.name}")'
                )

    def validate_environment(self) -> None:
        parent = self.uplink().config.get("parent", "")
        if not self.host(sysfs.interface_exists, parent):
            raise NotFoundError(f'Parent interface "{parent}" of uplink "{self.uplink_name}" does not exist')

    # --- lifecycle --------------------------------------------------------------------------------

    def _topology(self, uplink: NetworkRecord, s: ovn_chassis.OvnSite) -> ovn_nb.Topology:
        gateway = ipaddress.IPv4Interface(uplink.config["ipv4.gateway"])
        external = f"{self.config[_EXTERNAL_ADDRESS]}/{gateway.network.prefixlen}"
        servers = tuple(a for a in _list(uplink.config, "dns.nameservers") if ":" not in a)
        return ovn_nb.Topology(
            owner=self.nb_owner,
            prefix=self.prefix,
            physnet=self.physnet,
            chassis=s.system_id,
            internal4=str(self.address4),
            external4=external,
            gateway4=str(gateway.ip),
            router_mac=_mac(f"{self.nb_owner}/int"),
            external_mac=_mac(f"{self.nb_owner}/ext"),
            nat4=self.nat4,
            dhcp4=self.dhcp4,
            mtu=self.mtu,
            dns_domain=self.config.get("dns.domain"),
            dns_servers=servers or (str(gateway.ip),),
            **self._topology6(uplink),
        )

    def _topology6(self, uplink: NetworkRecord) -> dict[str, Any]:
        address = self.address6
        if address is None:
            return {}
        gateway = ipaddress.IPv6Interface(uplink.config["ipv6.gateway"])
        return {
            "internal6": str(address),
            "external6": f"{self.config[_EXTERNAL[6]]}/{gateway.network.prefixlen}",
            "gateway6": str(gateway.ip),
            "nat6": self.nat6,
        }

    def start(self) -> None:
        """Daemons up, the uplink's provider bridge in place, the logical network made (each of
        them a no-op when already there, as on a daemon restart)."""
        uplink = self.uplink()
        s = self.site()
        with Reverter() as undo:
            if not self._others_running():
                undo.add(ovn_chassis.shut_down, self.host, s)
            ovn_chassis.bring_up(self.host, s)
            if not self._uplink_shared():
                undo.add(self._remove_provider, s)
            self._ensure_provider(uplink, s)
            if not self._rows_complete(s):
                # Made anew as a whole: what is left of a network deleted by hand goes first.
                self.host(ovn_nb.delete_network, s.nb_remote, self.nb_owner)
                undo.add(self.host, ovn_nb.delete_network, s.nb_remote, self.nb_owner)
                self.host(ovn_nb.create_network, s.nb_remote, self._topology(uplink, s))
            undo.success()

    def _rows_complete(self, s: ovn_chassis.OvnSite) -> bool:
        """Whether the network's router and both its switches are in the northbound database."""
        rows = self.host(ovn_nb.owned_rows, s.nb_remote, self.nb_owner)
        return len(rows.get("Logical_Router", [])) == 1 and len(rows.get("Logical_Switch", [])) == 2

    def _ovn_networks(self) -> list[NetworkRecord]:
        return [r for r in db_networks.list_all(self.state.store) if r.type == "ovn" and r.name != self.name]

    def _others_running(self) -> bool:
        return bool(self._ovn_networks())

    def _uplink_shared(self) -> bool:
        return any(r.config.get("network") == self.uplink_name for r in self._ovn_networks())

    def _ensure_provider(self, uplink: NetworkRecord, s: ovn_chassis.OvnSite) -> None:
        parent = uplink.config.get("parent", "")
        datapath = ovn_chassis.datapath_type(self.host, s)
        if self.host(sysfs.is_bridge, parent):
            ovs_end, bridge_end = self._veth()
            if self.host(links.get_link, ovs_end) is None:
                self.host(links.create_veth, ovs_end, bridge_end)
                self.host(sysctl.set_ipv6_disabled, ovs_end)
                self.host(sysctl.set_ipv6_disabled, bridge_end)
                self.host(links.set_master, bridge_end, parent)
                self.host(links.set_up, bridge_end)
                self.host(links.set_up, ovs_end)
            port = ovs_end
        else:
            port = parent
            link = self.host(links.get_link, parent)
            if link is not None and self.host(files.read_json, self._parent_state_file) is None:
                # The admin's NIC: how it was, to give it back so when the provider bridge goes.
                self.host(files.write_json, self._parent_state_file, {"parent": parent, "up": link.up})
            self.host(links.set_up, parent)
        self.host(
            ovs_switch.add_provider_bridge,
            s.switch_remote,
            self.provider_bridge,
            self.physnet,
            port,
            datapath,
        )
        if s.clustered and datapath == "netdev":
            self._ensure_tunnel_endpoint(uplink, s)

    def _ensure_tunnel_endpoint(self, uplink: NetworkRecord, s: ovn_chassis.OvnSite) -> None:
        """Tunnels of OVS's userspace datapath leave through an OVS bridge that holds the tunnel
        endpoint address. A member's endpoint that is on none of its interfaces goes on the uplink's
        provider bridge (so tunnels ride the uplink segment, MTU 1400 inside 1500) and goes with it;
        one already on an interface is the admin's (e.g. on a bridge of their own), left alone."""
        ip = ipaddress.ip_address(s.encap_ip)
        self.host(ovs_switch.wait_for_interface, self.provider_bridge)
        where = self.host(addresses.link_addresses, self.provider_bridge)
        if any(ipaddress.ip_interface(a).ip == ip for a in where):
            return
        if any(ipaddress.ip_interface(a).ip == ip for a in self.host(addresses.all_addresses)):
            return
        subnet = ipaddress.ip_interface(uplink.config["ipv4.gateway"]).network
        if ip not in subnet:
            raise InvalidError(
                f"This member's OVN tunnel endpoint {ip} is on none of its interfaces and outside uplink "
                f"\"{uplink.name}\"'s subnet {subnet}: set {ovn_chassis.ENCAP_KEY} (this member's own "
                "key) to a free address of that subnet, or put the address on an OVS bridge of this member"
            )
        self.host(addresses.add_address, self.provider_bridge, f"{ip}/{subnet.prefixlen}")
        self.host(links.set_up, self.provider_bridge)

    def _remove_provider(self, s: ovn_chassis.OvnSite) -> None:
        if self.host(ovs_daemons.find_running, s.chassis_specs()[0]) is not None:
            self.host(ovs_switch.delete_provider_bridge, s.switch_remote, self.provider_bridge, self.physnet)
        ovs_end, _ = self._veth()
        if self.host(links.get_link, ovs_end) is not None:
            self.host(links.delete_link, ovs_end)
        saved = self.host(files.read_json, self._parent_state_file)
        if saved is not None:
            if not saved["up"] and self.host(sysfs.interface_exists, saved["parent"]):
                self.host(links.set_down, saved["parent"])
            self.host(files.remove, self._parent_state_file)

    @property
    def _parent_state_file(self) -> Path:
        """The uplink NIC's state before it went into the provider bridge (in the uplink's dir)."""
        return self.state.networks_dir / self.uplink_name / "ovn-parent.json"

    def remove(self) -> None:
        """Every northbound row of the network; the provider bridge and its veth when no other OVN
        network uses the uplink; the daemons and their databases when it was the last OVN network."""
        s = self.site()
        # An embedded central that is not running has its database removed below, rows and all.
        if not s.embedded or self.host(ovs_daemons.find_running, s.central_specs()[0]) is not None:
            self.host(ovn_nb.delete_network, s.nb_remote, self.nb_owner)
        if not self._uplink_shared():
            self._remove_provider(s)
        if not self._others_running():
            ovn_chassis.shut_down(self.host, s)

    def member_order(self, members: list[str]) -> list[str]:
        """The member running the embedded central first (made first, removed last): the other
        members' chassis connect to it."""
        central = self.site().central_member
        return sorted(members, key=lambda m: m != central)

    def validate_shared_environment(self) -> None:
        """Before a cluster records the network: an existing central must answer."""
        s = self.site()
        if not s.embedded and not s.central_member:
            self.host(ovsdb.probe, s.nb_remote, "OVN_Northbound")

    def rename(self, new_name: str) -> NetworkDriver:
        raise InvalidError(f'Network "{self.name}" is an OVN network; renaming one is not supported yet')

    def update(self, old_config: dict[str, str], users: list[str]) -> None:
        if old_config == self.config:
            return
        if users:
            raise ConflictError(
                f'Cannot change OVN network "{self.name}" while it is in use by {", ".join(users)}'
            )
        # Rebuild the logical network from the new config (its rows are all recreated at once).
        s = self.site()
        uplink = self.uplink()
        old = OvnNetwork(self.state, self.name, old_config)
        with Reverter() as undo:
            self.host(ovn_nb.delete_network, s.nb_remote, self.nb_owner)
            undo.add(self.host, ovn_nb.create_network, s.nb_remote, old._topology(uplink, s))
            self.host(ovn_nb.create_network, s.nb_remote, self._topology(uplink, s))
            undo.success()

    def ensure_running(self) -> int | None:
        s = self.site()
        restarted = ovn_chassis.restart_dead(self.host, s)
        if not restarted:
            return None
        for spec in s.all_specs():
            if spec.name == restarted[0]:
                return self.host(ovs_daemons.find_running, spec)
        return None

    def host_interface(self) -> str:
        return self.provider_bridge

    def owned(self) -> list[Owned]:
        s = self.site()
        out = [Owned("process", f"{spec.program} ({spec.name})") for spec in s.all_specs()]
        if self._uplink_is_bridge():
            out.append(Owned("interface", self._veth()[1]))
        return [*out, Owned("ovs bridge", self.provider_bridge), Owned("ovn router", f"{self.prefix}-lr")]

    def _uplink_is_bridge(self) -> bool:
        parent = self.uplink().config.get("parent", "")
        return self.host(sysfs.interface_exists, parent) and self.host(sysfs.is_bridge, parent)

    def check(self) -> list[Difference]:
        """Every daemon running, the uplink's veth on its bridge, the logical network in the
        northbound database. Changes nothing."""
        s = self.site()
        out = [
            Difference(self.owner, "process", f"{spec.program} ({spec.name})", "running", "not running")
            for spec, pid in zip(
                s.all_specs(), self.host(ovs_daemons.running, s.all_specs()).values(), strict=True
            )
            if pid is None
        ]
        if self._uplink_is_bridge():
            parent = self.uplink().config.get("parent", "")
            link = self.host(links.get_link, self._veth()[1])
            if link is None or link.master != parent:
                found = "missing" if link is None else f"master {link.master}"
                out.append(Difference(self.owner, "interface", self._veth()[1], f"a port of {parent}", found))
        central_up = not s.embedded or all(
            self.host(ovs_daemons.find_running, spec) is not None for spec in s.central_specs()
        )
        if central_up and not self._rows_complete(s):
            out.append(Difference(self.owner, "ovn rows", self.prefix, "a switch and a router", "missing"))
        return out

    def repair(self, found: list[Difference]) -> None:
        """The driver's own start, which restarts what died and makes what is missing."""
        if any(d.repairable for d in found):
            if any(d.kind == "interface" for d in found):
                self._remove_provider(self.site())  # its veth is made again with the bridge
            self.start()

    def info(self) -> dict[str, Any]:
        s = self.site()
        return {
            "ovn": {
                "chassis": s.system_id,
                "northbound": s.nb_remote,
                "embedded_central": s.embedded,
                "router_uplink_address": self.config.get(_EXTERNAL_ADDRESS, ""),
            }
        }

    def leases(self) -> list[dict[str, str]]:
        """The addresses OVN has for the running NICs: a static `ipv4.address` ("static") or one
        northd picked ("dynamic"), with the instance as hostname."""
        s = self.site()
        out = []
        for instance, static, dynamic in self.host(ovn_nb.nic_ports, s.nb_remote, self.nb_owner):
            for entry, kind in [*((e, "static") for e in static), *((e, "dynamic") for e in dynamic)]:
                mac, _, listed = entry.partition(" ")
                for address in listed.split():
                    if address != "dynamic":
                        out.append(
                            {
                                "hostname": instance,
                                "hwaddr": mac,
                                "address": address,
                                "type": kind,
                                "location": "none",
                            }
                        )
        return out

    # --- for the NICs ---------------------------------------------------------------------------

    def nic_port(self, instance: str, device: str) -> str:
        return f"{self.prefix}-inst-{instance}-{device}"

    def add_nic(self, port: str, instance: str, mac: str, ipv4: str | None) -> None:
        s = self.site()
        switch = self.internal_switch
        self.host(ovn_nb.add_port, s.nb_remote, switch, port, self.nb_owner, instance, mac, ipv4, self.dhcp4)

    def delete_nic(self, port: str) -> None:
        self.host(ovn_nb.delete_port, self.site().nb_remote, port)

    def plug(self, host_name: str, port: str) -> None:
        s = self.site()
        self.host(ovs_switch.add_instance_port, s.switch_remote, s.integration_bridge, host_name, port)

    def unplug(self, host_name: str) -> None:
        s = self.site()
        if self.host(ovs_daemons.find_running, s.chassis_specs()[0]) is not None:
            self.host(ovs_switch.delete_port, s.switch_remote, host_name)
