"""Keys of the managed network types (Incus semantics)."""

from __future__ import annotations

from pincus.config import validators as v
from pincus.config.keys import Key, KeyTable

_ADDR4 = v.is_address_or_keyword(("auto", "none"), v.is_address_cidr4)
_ADDR6 = v.is_address_or_keyword(("auto", "none"), v.is_address_cidr6)

BRIDGE: KeyTable = {
    "bridge.mtu": Key(v.is_mtu, "MTU of the bridge"),
    "bridge.hwaddr": Key(v.is_mac, "MAC address of the bridge"),
    "bridge.external_interfaces": Key(
        v.is_list_of(v.is_interface_name), "Unconfigured host interfaces to enslave to the bridge"
    ),
    "ipv4.address": Key(_ADDR4, "IPv4 address of the bridge (CIDR), auto or none"),
    "ipv4.nat": Key(v.is_bool, "Masquerade IPv4 traffic leaving through the host"),
    "ipv4.firewall": Key(v.is_bool, "Generate forward/input firewall rules for the bridge"),
    "ipv4.dhcp": Key(v.is_bool, "Serve DHCPv4"),
    "ipv4.dhcp.ranges": Key(v.is_list_of(v.is_ip_range4), "DHCPv4 ranges (start-end, comma separated)"),
    "ipv4.dhcp.gateway": Key(v.is_ipv4, "Gateway handed out by DHCPv4"),
    "ipv4.dhcp.expiry": Key(v.is_duration, "DHCPv4 lease time"),
    "ipv4.routes": Key(v.is_list_of(v.is_cidr4), "Extra IPv4 routes to the bridge"),
    "ipv6.address": Key(_ADDR6, "IPv6 address of the bridge (CIDR), auto or none"),
    "ipv6.nat": Key(v.is_bool, "Masquerade IPv6 traffic leaving through the host"),
    "ipv6.firewall": Key(v.is_bool, "Generate forward/input firewall rules for the bridge"),
    "ipv6.dhcp": Key(v.is_bool, "Serve DHCPv6 information / stateless config"),
    "ipv6.dhcp.stateful": Key(v.is_bool, "Hand out IPv6 addresses by DHCPv6"),
    "ipv6.dhcp.ranges": Key(v.is_list_of(v.is_ip_range6), "DHCPv6 ranges (start-end, comma separated)"),
    "ipv6.dhcp.expiry": Key(v.is_duration, "DHCPv6 lease time"),
    "ipv6.ra": Key(v.is_bool, "Send router advertisements"),
    "ipv6.routes": Key(v.is_list_of(v.is_cidr6), "Extra IPv6 routes to the bridge"),
    "dns.domain": Key(v.is_dns_domain, "Domain of the network's DNS"),
    "dns.mode": Key(v.is_one_of("none", "managed", "dynamic"), "DNS registration mode"),
}

PHYSICAL: KeyTable = {
    "parent": Key(v.is_interface_name, "Existing host interface or bridge to use"),
    "mtu": Key(v.is_mtu, "MTU to set on the parent"),
    "vlan": Key(v.is_vlan_id, "VLAN ID to attach to"),
    "vlan.tagged": Key(v.is_vlan_list, "Tagged VLAN IDs (bridge parents only)"),
    "gvrp": Key(v.is_bool, "Register the VLAN with GVRP"),
    # What an OVN network learns of its uplink.
    "ipv4.gateway": Key(v.is_address_cidr4, "IPv4 gateway of the uplink (CIDR): OVN routers' next hop"),
    "ipv6.gateway": Key(v.is_address_cidr6, "IPv6 gateway of the uplink (CIDR): OVN routers' next hop"),
    "ipv4.routes": Key(v.is_list_of(v.is_cidr4), "IPv4 subnets OVN networks may use without NAT"),
    "ipv6.routes": Key(v.is_list_of(v.is_cidr6), "IPv6 subnets OVN networks may use without NAT"),
    "dns.nameservers": Key(v.is_list_of(v.is_ip_any), "DNS servers OVN's DHCP hands out"),
    "ipv4.ovn.ranges": Key(
        v.is_list_of(v.is_ip_range4),
        "IPv4 ranges for OVN routers' uplink addresses (start-end, comma separated)",
    ),
    "ipv6.ovn.ranges": Key(v.is_list_of(v.is_ip_range6), "IPv6 ranges for OVN routers' uplink addresses"),
    "ovn.ingress_mode": Key(
        v.is_one_of("l2proxy", "routed"), "How the uplink reaches OVN addresses: l2proxy (ARP) or routed"
    ),
}

OVN: KeyTable = {
    "network": Key(v.is_interface_name, "Uplink: a managed physical network"),
    "ipv4.address": Key(
        v.is_address_or_keyword(("auto",), v.is_address_cidr4),
        "IPv4 address of the OVN router (CIDR) or auto",
    ),
    "ipv4.nat": Key(v.is_bool, "SNAT the network's IPv4 traffic to the router's uplink address"),
    "ipv4.dhcp": Key(v.is_bool, "Serve DHCPv4 from OVN"),
    "ipv6.address": Key(
        v.is_address_or_keyword(("none",), v.is_address_cidr6),
        "IPv6 address of the OVN router (CIDR) or none",
    ),
    "ipv6.nat": Key(v.is_bool, "SNAT the network's IPv6 traffic to the router's uplink address"),
    "dns.domain": Key(v.is_dns_domain, "Domain handed out by DHCP"),
    "bridge.mtu": Key(v.is_mtu, "MTU of the network's NICs (default 1400: geneve under a 1500 underlay)"),
    "volatile.network.ipv4.address": Key(v.is_ipv4, "The router's address on the uplink (picked by pincus)"),
    "volatile.network.ipv6.address": Key(
        v.is_ipv6, "The router's IPv6 address on the uplink (picked by pincus)"
    ),
}

BY_TYPE: dict[str, KeyTable] = {"bridge": BRIDGE, "physical": PHYSICAL, "ovn": OVN}


# Keys whose value differs from one cluster member to the next (Incus's member-specific keys): set
# with `network create NAME --target MEMBER KEY=VALUE`, never cluster-wide.
MEMBER_SPECIFIC = frozenset({"parent", "mtu", "vlan", "bridge.external_interfaces"})
