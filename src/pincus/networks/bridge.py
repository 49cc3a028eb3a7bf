"""Managed bridge networks (type=bridge): the bridge, its addresses, dnsmasq, NAT and routes.

Over 500 lines and whole: one driver's config and lifecycle over one set of kernel objects; what
stands alone is elsewhere (subnets.py, forwarding.py, host/dnsmasq_*, host/nft_networks.py).

Kernel objects of network "br0" (all in the daemon's network namespace):
- the Linux bridge "br0" (STP off, forward delay 0), its addresses, `bridge.external_interfaces`
  enslaved to it, routes `ipv4.routes`/`ipv6.routes` out of it;
- the chains fwd_br0, in_br0, nat_br0 in the daemon's `inet pincus_<tag>` nftables table;
- one dnsmasq, its files under $PINCUS_DIR/networks/br0/dnsmasq (pid, leases, one hosts file
  per NIC with a static allocation).

Defaults (Incus's where Incus has the key): ipv4.nat/ipv6.nat true when the family has an
address, ipv4.firewall/ipv6.firewall true, ipv4.dhcp/ipv6.dhcp true, ipv6.ra true,
ipv6.dhcp.stateful false, dns.mode managed, dns.domain incus, bridge.mtu 1500.
`ipv4.address`/`ipv6.address` unset on create become `auto`; `auto` is replaced by a free
subnet before the config is stored, so `network show` tells the real addresses.

A daemon that stops leaves all of it running (instances keep their network; dnsmasq keeps
serving) and the next one adopts it. Only `remove` takes it down.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from pincus.config.keys import KeyTable, check_config
from pincus.config.network_keys import BRIDGE
from pincus.config.validators import (
    parse_address_cidr4,
    parse_address_cidr6,
    parse_bool,
    parse_cidr4,
    parse_cidr6,
    parse_ip_range4,
    parse_ip_range6,
    parse_ipv4,
    split_list,
)
from pincus.db import networks as db_networks
from pincus.db.networks import NetworkRecord
from pincus.devices.names import MAC_PREFIX
from pincus.errors import ConflictError, HostError, InvalidError, NotFoundError
from pincus.host import (
    addresses,
    dhcp_release,
    dnsmasq_args,
    dnsmasq_hosts,
    dnsmasq_process,
    files,
    links,
    nft_networks,
    nft_runner,
    routes,
    sysctl,
    sysfs,
)
from pincus.host.dnsmasq_args import DnsmasqConfig
from pincus.host.facade import Host
from pincus.networks import subnets
from pincus.networks.base import NetworkDriver
from pincus.networks.forwarding import HostForwarding
from pincus.ownership import Difference, Owned
from pincus.reverter import Reverter
from pincus.state import State

log = logging.getLogger(__name__)

DEFAULT_MTU = 1500
DEFAULT_DNS_MODE = "managed"
DEFAULT_DNS_DOMAIN = "incus"
DEFAULT_EXPIRY = "1h"

_RESTART_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4)
_EXTERNAL_STATE = "external.json"  # interface -> was it up before we enslaved it
_RETIRED_SHARE = 8  # reload dnsmasq once the retired entries pass this share of the hosts dir

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _interface(value: str | None, version: int) -> Interface | None:
    if value is None or value in ("", "none", "auto"):
        return None
    return parse_address_cidr4(value) if version == 4 else parse_address_cidr6(value)


def _claims(config: dict[str, str]) -> list[tuple[Network, str]]:
    """(network, "subnet" or "route") a stored bridge config claims; unparsable values skipped."""
    out: list[tuple[Network, str]] = []
    for version in (4, 6):
        try:
            iface = _interface(config.get(f"ipv{version}.address"), version)
        except ValueError:
            iface = None
        if iface is not None:
            out.append((iface.network, "subnet"))
        for route in _list(config.get(f"ipv{version}.routes")):
            try:
                out.append((parse_cidr4(route) if version == 4 else parse_cidr6(route), "route"))
            except ValueError:
                continue
    return out


def _list(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        return split_list(value)
    except ValueError:
        return []


def _ipv6_enabled(host: Host) -> bool:
    try:
        return host(sysctl.get_sysctl, "net/ipv6/conf/default/disable_ipv6") == "0"
    except HostError:
        return False  # no IPv6 in this kernel or namespace


class BridgeNetwork(NetworkDriver):
    type: ClassVar[str] = "bridge"
    keys: ClassVar[KeyTable] = BRIDGE
    helper: ClassVar[str] = "dnsmasq"

    # --- reading the config ------------------------------------------------------------------

    @property
    def dnsmasq_dir(self) -> Path:
        return self.dir / "dnsmasq"

    def _flag(self, key: str, default: bool) -> bool:
        return parse_bool(self.config[key]) if key in self.config else default

    def _has_address(self, key: str) -> bool:
        """Whether the bridge has the address KEY names (validated when stored: no need to parse)."""
        return self.config.get(key) not in (None, "", "none", "auto")

    def ipv4_interface(self) -> ipaddress.IPv4Interface | None:
        """The bridge's IPv4 address and subnet; None without one."""
        value = self.config.get("ipv4.address")
        return None if value in (None, "", "none", "auto") else parse_address_cidr4(value)

    def ipv6_interface(self) -> ipaddress.IPv6Interface | None:
        value = self.config.get("ipv6.address")
        return None if value in (None, "", "none", "auto") else parse_address_cidr6(value)

    def _addresses(self) -> list[Interface]:
        return [a for a in (self.ipv4_interface(), self.ipv6_interface()) if a is not None]

    def _mtu(self) -> int | None:
        value = self.config.get("bridge.mtu")
        return int(value) if value else None

    def _hwaddr(self) -> str:
        """bridge.hwaddr, else a MAC of its own derived from the daemon and the network's name:
        a bridge left to the kernel takes its lowest port's MAC, and 00:00:00:00:00:00 once the
        last port leaves, which upsets neighbours' caches every time an instance starts or stops."""
        value = self.config.get("bridge.hwaddr")
        if value:
            return value.lower()
        digest = hashlib.sha256(f"pincus bridge {self.state.tag} {self.name}".encode()).digest()
        return MAC_PREFIX + "".join(f":{b:02x}" for b in digest[:3])

    def _external(self) -> list[str]:
        return _list(self.config.get("bridge.external_interfaces"))

    def _routes(self) -> list[str]:
        out = [str(parse_cidr4(r)) for r in _list(self.config.get("ipv4.routes"))]
        return out + [str(parse_cidr6(r)) for r in _list(self.config.get("ipv6.routes"))]

    def _ranges4(self) -> list[tuple[str, str]]:
        ranges = (parse_ip_range4(r) for r in _list(self.config.get("ipv4.dhcp.ranges")))
        return [(str(a), str(b)) for a, b in ranges]

    def _ranges6(self) -> list[tuple[str, str]]:
        ranges = (parse_ip_range6(r) for r in _list(self.config.get("ipv6.dhcp.ranges")))
        return [(str(a), str(b)) for a, b in ranges]

    def _ipv6_services(self) -> tuple[bool, bool, bool]:
        """(router advertisements, DHCPv6, stateful) as dnsmasq will run them."""
        if not self._has_address("ipv6.address"):
            return False, False, False
        ra = self._flag("ipv6.ra", True)
        stateful = self._flag("ipv6.dhcp.stateful", False)
        # dnsmasq offers stateless DHCPv6 only alongside RAs: without them it is off.
        dhcp = self._flag("ipv6.dhcp", True) and (stateful or ra)
        return ra, dhcp, stateful and dhcp

    def _dns_mode(self) -> str:
        return self.config.get("dns.mode", DEFAULT_DNS_MODE)

    def _services(self) -> tuple[bool, bool, bool, bool]:
        """(DHCPv4, RA, DHCPv6, DNS): what dnsmasq serves here."""
        v4_set, v6_set = self._has_address("ipv4.address"), self._has_address("ipv6.address")
        ra, dhcp6, _ = self._ipv6_services()
        dns = self._dns_mode() != "none" and (v4_set or v6_set)
        return v4_set and self._flag("ipv4.dhcp", True), ra, dhcp6, dns

    def dnsmasq_config(self) -> DnsmasqConfig | None:
        """What dnsmasq must run with; None when nothing (DHCP, RA, DNS) is wanted."""
        dhcp4, ra, dhcp6, dns = self._services()
        if not (dhcp4 or ra or dhcp6 or dns):
            return None
        v4, v6 = self.ipv4_interface(), self.ipv6_interface()
        stateful = self._ipv6_services()[2]
        return DnsmasqConfig(
            bridge=self.name,
            dir=self.dnsmasq_dir,
            ipv4_address=None if v4 is None else str(v4),
            ipv4_dhcp=dhcp4,
            ipv4_ranges=self._ranges4() if v4 is not None else (),
            ipv4_gateway=self.config.get("ipv4.dhcp.gateway") if v4 is not None else None,
            ipv4_expiry=self.config.get("ipv4.dhcp.expiry", DEFAULT_EXPIRY),
            ipv6_address=None if v6 is None else str(v6),
            ipv6_dhcp=dhcp6,
            ipv6_stateful=stateful,
            ipv6_ranges=self._ranges6() if stateful else (),
            ipv6_ra=ra,
            ipv6_expiry=self.config.get("ipv6.dhcp.expiry", DEFAULT_EXPIRY),
            dns_domain=self.config.get("dns.domain", DEFAULT_DNS_DOMAIN) if dns else None,
            dns_mode=self._dns_mode() if dns else "none",
            log_file=self.dnsmasq_dir / "dnsmasq.log",
        )

    def has_dhcp(self) -> bool:
        """Whether dnsmasq serves this network (static allocations take effect); asked on every NIC
        start, so without building dnsmasq's whole configuration."""
        return any(self._services())

    def _rules(self) -> nft_networks.NetworkRules:
        v4, v6 = self.ipv4_interface(), self.ipv6_interface()
        return nft_networks.NetworkRules(
            bridge=self.name,
            ipv4_subnet=None if v4 is None else str(v4.network),
            ipv6_subnet=None if v6 is None else str(v6.network),
            ipv4_nat=v4 is not None and self._flag("ipv4.nat", True),
            ipv6_nat=v6 is not None and self._flag("ipv6.nat", True),
            ipv4_firewall=v4 is not None and self._flag("ipv4.firewall", True),
            ipv6_firewall=v6 is not None and self._flag("ipv6.firewall", True),
        )

    # --- config: defaults, auto, validation ----------------------------------------------------

    def prepare_config(self, others: list[NetworkRecord], creating: bool) -> None:
        """Fill in creation defaults and replace `auto` addresses by free subnets (in self.config).

        Runs before validate_config and before anything is stored, under the networks lock, so
        two networks created one after the other never get the same subnet.
        """
        check_config(self.keys, self.config, f'network "{self.name}"')
        if creating:
            self.config.setdefault("ipv4.address", "auto")
            if _ipv6_enabled(self.host):  # as Incus: no IPv6 subnet by default on a host without IPv6
                self.config.setdefault("ipv6.address", "auto")
        wanted = [v for v in (4, 6) if self.config.get(f"ipv{v}.address") == "auto"]
        if not wanted:
            return
        used = self._used_subnets(others)
        rng = random.Random()
        for version in wanted:
            self.config[f"ipv{version}.address"] = subnets.auto_address(version, used, rng, self.name)

    def _used_subnets(self, others: list[NetworkRecord]) -> list[Network]:
        used: list[Network] = [ipaddress.ip_interface(a).network for a in self.host(addresses.all_addresses)]
        used += [ipaddress.ip_network(r) for r in self.host(routes.list_routes)]
        for rec in others:
            if rec.type == self.type and rec.name != self.name:
                used += [net for net, _ in _claims(rec.config)]
        return used

    def validate_config(self, others: list[NetworkRecord]) -> None:
        super().validate_config(others)
        what = f'network "{self.name}"'
        v4, v6 = self.ipv4_interface(), self.ipv6_interface()
        if v4 is not None:
            ranges4 = [(parse_ipv4(a), parse_ipv4(b)) for a, b in self._ranges4()]
            self._check_ranges("ipv4.dhcp.ranges", v4, ranges4)
            gateway = self.config.get("ipv4.dhcp.gateway")
            if gateway is not None and parse_ipv4(gateway) not in v4.network:
                raise InvalidError(
                    f'Invalid value for {what} key "ipv4.dhcp.gateway": {gateway} is outside {v4.network}'
                )
        if v6 is not None:
            ranges6 = [(ipaddress.IPv6Address(a), ipaddress.IPv6Address(b)) for a, b in self._ranges6()]
            self._check_ranges("ipv6.dhcp.ranges", v6, ranges6)
            self._check_ipv6_services(v6)
        self._check_routes(v4, v6)
        self._check_external()
        self._check_overlaps(others)
        cfg = self.dnsmasq_config()
        if cfg is not None:
            try:
                self.host(dnsmasq_args.render_args, cfg)  # what dnsmasq would refuse, refused now
            except InvalidError as e:
                raise InvalidError(f"Invalid config for {what}: {e}") from None

    def _check_ranges(self, key: str, iface: Interface, ranges: Sequence[tuple[Address, Address]]) -> None:
        what = f'Invalid value for network "{self.name}" key "{key}"'
        for start, end in ranges:
            if start not in iface.network or end not in iface.network:
                raise InvalidError(f"{what}: {start}-{end} is outside {iface.network}")
            if int(start) <= int(iface.ip) <= int(end):
                raise InvalidError(f"{what}: {start}-{end} contains the bridge address {iface.ip}")

    def _check_ipv6_services(self, v6: ipaddress.IPv6Interface) -> None:
        what = f'network "{self.name}"'
        ra = self._flag("ipv6.ra", True)
        stateful = self._flag("ipv6.dhcp.stateful", False)
        if (
            self.config.get("ipv6.dhcp") is not None
            and self._flag("ipv6.dhcp", True)
            and not (ra or stateful)
        ):
            raise InvalidError(
                f"Invalid config for {what}: stateless DHCPv6 (ipv6.dhcp) needs router advertisements; "
                "set ipv6.ra=true, ipv6.dhcp.stateful=true or ipv6.dhcp=false"
            )
        if v6.network.prefixlen == 64:
            return
        if stateful and self._flag("ipv6.dhcp", True):
            raise InvalidError(
                f'Invalid config for {what}: ipv6.dhcp.stateful needs ipv6.address to be a /64, not "{v6}"'
            )
        if ra or self._ipv6_services()[1]:
            raise InvalidError(
                f'Invalid config for {what}: router advertisements need ipv6.address to be a /64, not "{v6}" '
                "(or set ipv6.ra=false and ipv6.dhcp=false)"
            )

    def _check_routes(self, v4: ipaddress.IPv4Interface | None, v6: ipaddress.IPv6Interface | None) -> None:
        own = [a.network for a in (v4, v6) if a is not None]
        seen: set[str] = set()
        for route in self._routes():
            net = ipaddress.ip_network(route)
            key = "ipv4.routes" if net.version == 4 else "ipv6.routes"
            if route in seen:
                raise InvalidError(
                    f'Invalid value for network "{self.name}" key "{key}": {route} is listed twice'
                )
            seen.add(route)
            if net in own:
                raise InvalidError(
                    f'Invalid value for network "{self.name}" key "{key}": {route} is the subnet of the '
                    "bridge itself, which is routed to it already"
                )

    def _check_external(self) -> None:
        key = f'Invalid value for network "{self.name}" key "bridge.external_interfaces"'
        names = self._external()
        for iface in names:
            if names.count(iface) > 1:
                raise InvalidError(f'{key}: "{iface}" is listed twice')
            if iface == self.name:
                raise InvalidError(f'{key}: "{iface}" is the bridge itself')

    def _check_overlaps(self, others: list[NetworkRecord]) -> None:
        mine = _claims(self.config)
        externals = set(self._external())
        for rec in others:
            if rec.type != self.type or rec.name == self.name:
                continue
            for net, kind in mine:
                for other, other_kind in _claims(rec.config):
                    if net.version == other.version and net.overlaps(other):
                        raise ConflictError(
                            f'{kind.capitalize()} {net} of network "{self.name}" overlaps '
                            f'{other_kind} {other} of network "{rec.name}"'
                        )
            shared = externals & set(_list(rec.config.get("bridge.external_interfaces")))
            if shared:
                raise ConflictError(
                    f'Interface "{sorted(shared)[0]}" is already an external interface of network '
                    f'"{rec.name}"'
                )

    def _is_stored(self) -> bool:
        rec = db_networks.get(self.state.store, self.name)
        return rec is not None and rec.type == self.type

    def validate_environment(self) -> None:
        if not self._is_stored() and self.host(sysfs.interface_exists, self.name):
            # Creation: the name is taken on the host by something that is not ours.
            raise ConflictError(f'Interface "{self.name}" already exists')
        for iface in self._external():
            self._check_external_interface(iface)

    def _check_external_interface(self, iface: str) -> None:
        if not self.host(sysfs.interface_exists, iface):
            raise NotFoundError(f'External interface "{iface}" of network "{self.name}" does not exist')
        if self.host(sysfs.is_bridge, iface):
            raise InvalidError(
                f'External interface "{iface}" is a bridge; only unconfigured interfaces can be added'
            )
        master = self.host(sysfs.bridge_master, iface)
        if master == self.name:
            return  # ours already
        if master is not None:
            raise ConflictError(f'Interface "{iface}" is in use by the host (member of "{master}")')
        configured = [
            a
            for a in self.host(addresses.link_addresses, iface)
            if not ipaddress.ip_interface(a).is_link_local
        ]
        if configured:
            raise InvalidError(
                f'External interface "{iface}" has addresses ({", ".join(configured)}); '
                "only unconfigured interfaces can be added to a bridge"
            )

    # --- bringing it up ----------------------------------------------------------------------

    def _ensure_dirs(self) -> None:
        # dnsmasq drops root for "nobody", which must still reach its hosts directory.
        for path in (self.state.networks_dir, self.dir, self.dnsmasq_dir):
            self.host(files.ensure_dir, path, 0o711)

    def start(self) -> None:
        """Create the network's kernel objects, or adopt them if a previous daemon left them."""
        # Not yet stored means being created: a failure may take the directory with it.
        self._start(clean_files=not self._is_stored())

    def _start(self, clean_files: bool) -> None:
        existing = self.host(links.get_link, self.name)
        if existing is not None and existing.kind != "bridge":
            raise HostError(f'Failed to start network "{self.name}": interface "{self.name}" is not a bridge')
        adopting = existing is not None
        with Reverter() as undo:
            if clean_files:
                undo.add(self.host, files.remove_tree, self.dir)
            if existing is None:
                self.host(links.create_bridge, self.name, self._mtu(), self._hwaddr())
                undo.add(self.host, links.delete_link, self.name)
            else:
                self._set_link(existing.mtu, existing.mac, undo)
            self._ensure_dirs()
            self._set_sysctls()
            present = {ipaddress.ip_interface(a) for a in self.host(addresses.link_addresses, self.name)}
            for address in self._addresses():
                if address not in present:
                    self._add_address(address, undo)
            if not adopting:
                undo.add(self._release_shared)
            self._forwarding.enable(
                self.name, self.ipv4_interface() is not None, self.ipv6_interface() is not None
            )
            for iface in self._external():
                self._attach(iface, undo)
            self.host(links.set_up, self.name)
            mtu = self._mtu()
            if (
                mtu is not None
                and (link := self.host(links.get_link, self.name)) is not None
                and link.mtu != mtu
            ):
                self.host(links.set_mtu, self.name, mtu)  # a new port may have pulled the bridge's MTU down
            for route in self._routes():
                if adopting:
                    self.host(routes.delete_route, route, self.name)  # put back as configured
                self.host(routes.add_route, route, dev=self.name)
                undo.add(self.host, routes.delete_route, route, self.name)
            self.host(nft_networks.set_network_rules, self.state.tag, self._rules())
            if not adopting:
                undo.add(self._remove_rules)
            self._ensure_dnsmasq(undo)
            undo.success()
        log.debug("Network %s is up", self.name, extra={"ctx": {"network": self.name, "adopted": adopting}})

    def _set_sysctls(self) -> None:
        """Before any address: the bridge is the router of its subnets. Without DAD an IPv6
        address is usable at once (dnsmasq skips a tentative one for good); the bridge takes no
        address or route from router advertisements, dnsmasq's own included."""
        self.host(sysctl.set_accept_dad, self.name, False)
        self.host(sysctl.set_sysctl, f"net/ipv6/conf/{self.name}/autoconf", "0")
        self.host(sysctl.set_sysctl, f"net/ipv6/conf/{self.name}/accept_ra", "0")

    @property
    def _forwarding(self) -> HostForwarding:
        return HostForwarding(self.host, self.state.networks_dir)

    def _set_link(self, mtu: int, mac: str, undo: Reverter) -> None:
        """Bring MTU and MAC to the config; register the way back to (mtu, mac)."""
        want_mtu = self._mtu()
        if want_mtu is not None and want_mtu != mtu:
            self.host(links.set_mtu, self.name, want_mtu)
            undo.add(self.host, links.set_mtu, self.name, mtu)
        want_mac = self._hwaddr()
        if want_mac != mac.lower():
            self.host(links.set_mac, self.name, want_mac)
            undo.add(self.host, links.set_mac, self.name, mac)

    def _add_address(self, address: Interface, undo: Reverter) -> None:
        self.host(addresses.add_address, self.name, str(address))
        undo.add(self.host, addresses.delete_address, self.name, str(address))

    def _remove_address(self, address: Interface, undo: Reverter) -> None:
        self.host(addresses.delete_address, self.name, str(address))
        undo.add(self.host, addresses.add_address, self.name, str(address))

    def _external_state(self) -> dict[str, bool]:
        data = self.host(files.read_json, self.dir / _EXTERNAL_STATE)
        if not isinstance(data, dict):
            return {}
        return {str(k): bool(v) for k, v in data.items()}

    def _save_external_state(self, saved: dict[str, bool]) -> None:
        if saved:
            self.host(files.write_json, self.dir / _EXTERNAL_STATE, saved)
        else:
            self.host(files.remove, self.dir / _EXTERNAL_STATE)

    def _attach(self, iface: str, undo: Reverter | None) -> None:
        link = self.host(links.get_link, iface)
        if link is None:
            raise NotFoundError(f'External interface "{iface}" of network "{self.name}" does not exist')
        if link.master == self.name:
            if not link.up:
                self.host(links.set_up, iface)
            return
        saved = self._external_state()
        saved[iface] = link.up
        self._save_external_state(saved)
        self.host(links.set_master, iface, self.name)
        if undo is not None:
            undo.add(self._release, iface)
        if not link.up:
            self.host(links.set_up, iface)

    def _release(self, iface: str) -> None:
        """Give an external interface back as we found it: no master, up or down as it was."""
        saved = self._external_state()
        was_up = saved.pop(iface, True)
        link = self.host(links.get_link, iface)
        if link is not None and link.master == self.name:
            self.host(links.set_nomaster, iface)
            if not was_up:
                self.host(links.set_down, iface)
        self._save_external_state(saved)

    def _ensure_dnsmasq(self, undo: Reverter) -> int | None:
        """Run dnsmasq as the config says; a running one whose argv matches is kept (a daemon
        restart adopts it). Returns the pid of a dnsmasq started here."""
        cfg = self.dnsmasq_config()
        running = self.host(dnsmasq_process.find_running, self.dnsmasq_dir)
        if cfg is None:
            if running is not None:
                self.host(dnsmasq_process.stop, self.dnsmasq_dir)
            return None
        if running is not None:
            if self.host(dnsmasq_process.running_config_digest, self.dnsmasq_dir) == self.host(
                dnsmasq_args.config_digest, cfg
            ):
                return None
            self.host(dnsmasq_process.stop, self.dnsmasq_dir)
        self._ensure_dirs()
        pid = _start_dnsmasq(self.host, cfg, after_stop=running is not None)
        undo.add(self.host, dnsmasq_process.stop, self.dnsmasq_dir)
        return pid

    def ensure_running(self) -> int | None:
        """Supervision: start dnsmasq if the config wants it and none runs; its pid if started."""
        if (
            self.dnsmasq_config() is None
            or self.host(dnsmasq_process.find_running, self.dnsmasq_dir) is not None
        ):
            return None
        with Reverter() as undo:
            pid = self._ensure_dnsmasq(undo)
            undo.success()
        return pid

    # --- changing it -------------------------------------------------------------------------

    def update(self, old_config: dict[str, str], users: list[str]) -> None:
        """Move the kernel from old_config's state to self.config's; on failure, back again."""
        link = self.host(links.get_link, self.name)
        if link is None:
            self.start()  # it never came up (or was deleted behind our back): bring it up whole
            return
        old = BridgeNetwork(self.state, self.name, dict(old_config))
        with Reverter() as undo:
            self._set_link(link.mtu, link.mac, undo)
            if self._mtu() is None and old._mtu() is not None:
                self.host(links.set_mtu, self.name, DEFAULT_MTU)
                undo.add(self.host, links.set_mtu, self.name, link.mtu)
            new_addresses, old_addresses = set(self._addresses()), set(old._addresses())
            for address in old_addresses - new_addresses:
                self._remove_address(address, undo)
            if new_addresses - old_addresses:
                self._set_sysctls()
            for address in new_addresses - old_addresses:
                self._add_address(address, undo)
            self._forwarding.enable(
                self.name, self.ipv4_interface() is not None, self.ipv6_interface() is not None
            )
            self._update_external(old, undo)
            self._update_routes(old, undo)
            if self._rules() != old._rules():
                self.host(nft_networks.set_network_rules, self.state.tag, self._rules())
                undo.add(self.host, nft_networks.set_network_rules, self.state.tag, old._rules())
            self._update_dnsmasq(old, new_addresses != old_addresses, undo)
            undo.success()

    def _update_external(self, old: BridgeNetwork, undo: Reverter) -> None:
        new, previous = self._external(), old._external()
        for iface in previous:
            if iface not in new:
                self._release(iface)
                undo.add(self._attach, iface, None)
        for iface in new:
            if iface not in previous:
                self._attach(iface, undo)

    def _update_routes(self, old: BridgeNetwork, undo: Reverter) -> None:
        new, previous = self._routes(), old._routes()
        for route in previous:
            if route not in new:
                self.host(routes.delete_route, route, self.name)
                undo.add(self.host, routes.add_route, route, dev=self.name)
        for route in new:
            if route not in previous:
                self.host(routes.add_route, route, dev=self.name)
                undo.add(self.host, routes.delete_route, route, self.name)

    def _update_dnsmasq(self, old: BridgeNetwork, addresses_changed: bool, undo: Reverter) -> None:
        cfg, old_cfg = self.dnsmasq_config(), old.dnsmasq_config()
        running = self.host(dnsmasq_process.find_running, self.dnsmasq_dir)
        if running is not None:
            digest = self.host(dnsmasq_process.running_config_digest, self.dnsmasq_dir)
            same = cfg is not None and digest == self.host(dnsmasq_args.config_digest, cfg)
            # Its sockets are bound to the bridge's addresses: new addresses need a new dnsmasq.
            if same and not addresses_changed:
                return
            self.host(dnsmasq_process.stop, self.dnsmasq_dir)
            if old_cfg is not None:
                undo.add(_start_dnsmasq, self.host, old_cfg, True)
        if cfg is not None:
            self._ensure_dirs()
            _start_dnsmasq(self.host, cfg, after_stop=running is not None)
            undo.add(self.host, dnsmasq_process.stop, self.dnsmasq_dir)

    # --- taking it down ----------------------------------------------------------------------

    def _teardown(self) -> None:
        """Every kernel object and process of the network; each step is a no-op when its object
        is already gone, so a failed removal can simply be tried again."""
        self.host(dnsmasq_process.stop, self.dnsmasq_dir)
        self._remove_rules()
        link = self.host(links.get_link, self.name)
        for route in self._routes():
            self.host(routes.delete_route, route, self.name)
        for iface in self._external():
            self._release(iface)
        for iface in list(self._external_state()):
            self._release(iface)  # left over from an earlier config
        if link is not None and link.kind == "bridge":
            self.host(links.delete_link, self.name)

    def _remove_rules(self) -> None:
        self.host(nft_networks.remove_network_rules, self.state.tag, self.name)
        self._release_shared()

    def _release_shared(self) -> None:
        """What the daemon's managed bridges share (the inet table, the host's forwarding
        sysctls) goes back once the last of them goes; a no-op when already given back."""
        others = [
            r for r in db_networks.list_all(self.state.store) if r.type == self.type and r.name != self.name
        ]
        if not others:
            self.host(nft_networks.delete_inet_table, self.state.tag)
            self._forwarding.give_back()

    def remove(self) -> None:
        self._teardown()
        self.host(files.remove_tree, self.dir)

    def rename(self, new_name: str) -> BridgeNetwork:
        """Take the network down, move its files (leases), bring it up as new_name (as Incus
        does: the bridge is the network, so it takes the new name)."""
        if self.host(sysfs.interface_exists, new_name):
            raise ConflictError(f'Interface "{new_name}" already exists')
        new = BridgeNetwork(self.state, new_name, dict(self.config))
        with Reverter() as undo:
            self._teardown()
            undo.add(self._start, False)
            self.host(files.move_dir, self.dir, new.dir)
            undo.add(self.host, files.move_dir, new.dir, self.dir)
            new._start(clean_files=False)
            undo.success()
        return new

    # --- drift: what the network owns against what the kernel has --------------------------------

    def owned(self) -> list[Owned]:
        out = [Owned("interface", self.name)]
        out += [Owned("address", str(a)) for a in self._addresses()]
        out += [Owned("route", r) for r in self._routes()]
        out += [Owned("nft chain", f"inet {self.host(nft_runner.table_name, self.state.tag)} {chain}")
                for chain in self.host(nft_networks.network_rule_counts, self._rules())]  # fmt: skip
        if self.dnsmasq_config() is not None:
            out.append(Owned("process", f"dnsmasq ({self.dnsmasq_dir})"))
        return out

    def check(self) -> list[Difference]:
        out: list[Difference] = []

        def differs(kind: str, name: str, expected: str, found: str, repairable: bool = True) -> None:
            out.append(Difference(self.owner, kind, name, expected, found, repairable))

        link = self.host(links.get_link, self.name)
        if link is None:
            # Its addresses and routes went with it: one difference, not one per object.
            differs("interface", self.name, "a bridge", "missing")
        elif link.kind != "bridge":
            differs("interface", self.name, "a bridge", f"a {link.kind or 'device'} interface", False)
            return out  # not ours to touch at all
        else:
            self._check_link(link, differs)
        want = self.host(nft_networks.network_rule_counts, self._rules())
        have = self.host(nft_networks.listed_network_rule_counts, self.state.tag, self.name)
        for chain in sorted(set(want) | set(have)):
            if want.get(chain) != have.get(chain):
                differs(
                    "nft chain",
                    f"inet {self.host(nft_runner.table_name, self.state.tag)} {chain}",
                    f"{want[chain]} rules" if chain in want else "absent",
                    f"{have[chain]} rules" if chain in have else "missing",
                )
        self._check_dnsmasq(differs)
        return out

    def _check_link(self, link: links.LinkInfo, differs: Callable[..., None]) -> None:
        if not link.up:
            differs("interface state", self.name, "up", "down")
        mtu = self._mtu()
        if mtu is not None and link.mtu != mtu:
            differs("mtu", self.name, str(mtu), str(link.mtu))
        if link.mac.lower() != self._hwaddr():
            differs("mac address", self.name, self._hwaddr(), link.mac.lower())
        present = {ipaddress.ip_interface(a) for a in self.host(addresses.link_addresses, self.name)}
        for address in self._addresses():
            if address not in present:
                differs("address", str(address), f"on {self.name}", "missing")
        present_routes = set(self.host(routes.routes_of, self.name))
        for route in self._routes():
            if route not in present_routes:
                differs("route", route, f"out of {self.name}", "missing")
        for iface in self._external():
            ext = self.host(links.get_link, iface)
            if ext is None:
                # The admin's interface: reported, never made up.
                differs("external interface", iface, f"a port of {self.name}", "missing", False)
            elif ext.master != self.name:
                differs(
                    "external interface", iface, f"a port of {self.name}", f"master {ext.master or 'none'}"
                )

    def _check_dnsmasq(self, differs: Callable[..., None]) -> None:
        cfg = self.dnsmasq_config()
        pid = self.host(dnsmasq_process.find_running, self.dnsmasq_dir)
        if cfg is None:
            if pid is not None:
                differs("process", f"dnsmasq (pid {pid})", "not running", "running")
        elif pid is None:
            differs("process", "dnsmasq", "running", "not running")
        elif self.host(dnsmasq_process.running_config_digest, self.dnsmasq_dir) != self.host(
            dnsmasq_args.config_digest, cfg
        ):
            differs("process", f"dnsmasq (pid {pid})", "the network's config", "another config")

    def repair(self, found: list[Difference]) -> None:
        """The driver's own start, which adopts what is there and makes what is not."""
        if not any(d.repairable for d in found):
            return
        if any(d.kind == "interface" and d.found == "missing" for d in found):
            # dnsmasq's sockets were bound to the bridge that went: the new one needs a new dnsmasq.
            self.host(dnsmasq_process.stop, self.dnsmasq_dir)
        self._start(clean_files=False)

    # --- NICs and leases ---------------------------------------------------------------------

    def add_static_allocation(
        self, nic_id: str, mac: str, ipv4: str | None, ipv6: str | None, hostname: str | None
    ) -> None:
        """Give the NIC with `mac` its addresses (and DNS name) through dnsmasq."""
        # The directories exist once the network has started: one look instead of three mkdirs.
        if not self.host(files.is_dir, self.dnsmasq_dir):
            self._ensure_dirs()
        replaced = self.host(
            dnsmasq_hosts.write_static_allocation, self.dnsmasq_dir, nic_id, mac, ipv4, ipv6, hostname
        )
        # dnsmasq keeps a replaced entry, and a retired one, until SIGHUP; either would shadow or
        # refuse (as a duplicate) this one.
        if replaced or self._collides_with_retired(mac, ipv4, ipv6):
            self._reload_dnsmasq()

    def _collides_with_retired(self, mac: str, ipv4: str | None, ipv6: str | None) -> bool:
        return bool(self.host(dnsmasq_hosts.retired_holds, self.dnsmasq_dir, mac, ipv4, ipv6))

    def _reload_dnsmasq(self) -> None:
        if self.host(dnsmasq_process.find_running, self.dnsmasq_dir) is not None:
            self.host(dnsmasq_process.reload, self.dnsmasq_dir)
        self.host(dnsmasq_hosts.forget_retired, self.dnsmasq_dir)

    def remove_static_allocation(self, nic_id: str) -> None:
        """Drop the NIC's entry. dnsmasq forgets it at its next reload, which rereads every entry:
        one reload per removal would cost dnsmasq O(n) each, so the removals are batched, a reload
        once the entries retired since the last one reach an eighth of those there were (at least
        one), so each removal costs dnsmasq a constant amortized share; an entry that collides
        with a retired one reloads at once (add_static_allocation)."""
        retired = self.host(dnsmasq_hosts.retire_static_allocation, self.dnsmasq_dir, nic_id)
        if retired is not None and retired.count > retired.live_at_first // _RETIRED_SHARE:
            self._reload_dnsmasq()

    def release_leases(self, mac: str) -> None:
        """Give back every lease dnsmasq holds for MAC (a NIC that leaves), as Incus does: its
        addresses are free at once, and no lease outlives its NIC. A failure is logged, not raised:
        the lease then just expires."""
        if self.host(dnsmasq_process.find_running, self.dnsmasq_dir) is None:
            return
        v4 = self.ipv4_interface()
        duid = self.host(dnsmasq_hosts.server_duid, self.dnsmasq_dir)
        for lease in self.host(dnsmasq_hosts.read_leases, self.dnsmasq_dir):
            if lease.mac != mac.lower():
                continue
            try:
                if lease.iaid is None and v4 is not None:
                    self.host(dhcp_release.release_ipv4_lease, self.name, str(v4.ip), mac, lease.address)
                elif lease.iaid is not None and duid is not None and lease.client_id:
                    self.host(
                        dhcp_release.release_ipv6_lease,
                        self.name, duid, lease.client_id, lease.iaid, lease.address,
                    )  # fmt: skip
            except HostError as e:
                log.warning("Network %s: lease %s of %s stays until it expires: %s",
                            self.name, lease.address, mac, e)  # fmt: skip

    def leases(self) -> list[dict[str, str]]:
        """dnsmasq's leases and the static allocations.

        A lease of a MAC that has a static allocation is "static", any other "dynamic"; an
        allocated address no lease holds yet is listed too, as "static".
        """
        statics = self.host(dnsmasq_hosts.static_allocations, self.dnsmasq_dir)
        by_mac = {s.mac: s for s in statics}
        out: list[dict[str, str]] = []
        leased: set[tuple[str, str]] = set()
        for lease in self.host(dnsmasq_hosts.read_leases, self.dnsmasq_dir):
            static = by_mac.get(lease.mac) if lease.mac else None
            hostname = lease.hostname or (static.hostname or "" if static is not None else "")
            out.append(_lease(hostname, lease.mac, lease.address, "static" if static else "dynamic"))
            leased.add((lease.mac, lease.address))
        for s in statics:
            for address in (s.ipv4, s.ipv6):
                if address is not None and (s.mac, address) not in leased:
                    out.append(_lease(s.hostname or "", s.mac, address, "static"))
        return out


def _start_dnsmasq(host: Host, cfg: DnsmasqConfig, after_stop: bool) -> int:
    """dnsmasq_process.start; right after a stop, retried for a moment. dnsmasq_process.stop sees the old
    process go when its command line vanishes, which the kernel does a little before it closes
    the process's sockets: a new dnsmasq can meet "Address already in use" in between."""
    for delay in _RESTART_RETRY_DELAYS if after_stop else ():
        try:
            return host(dnsmasq_process.start, cfg)
        except HostError as e:
            log.debug("dnsmasq on %s did not start yet, retrying: %s", cfg.bridge, e)
            time.sleep(delay)
    return host(dnsmasq_process.start, cfg)


def _lease(hostname: str, mac: str, address: str, type_: str) -> dict[str, str]:
    return {"hostname": hostname, "hwaddr": mac, "address": address, "type": type_, "location": "none"}


def load_bridge_network(state: State, name: str) -> BridgeNetwork | None:
    """The managed bridge network called name, from the store; None if there is none."""
    rec = db_networks.get(state.store, name)
    if rec is None or rec.type != BridgeNetwork.type:
        return None
    return BridgeNetwork(state, rec.name, dict(rec.config))
