"""A managed network's rules: NAT and firewall chains in the daemon's ``inet pincus_<tag>`` table.

Each network gets its own base chains ``fwd_<bridge>``, ``in_<bridge>`` and ``nat_<bridge>``
(networks are few); replacing or removing a network touches only those.
"""

from __future__ import annotations

from dataclasses import dataclass

from pincus.errors import InvalidError
from pincus.host import checks
from pincus.host.nft_runner import (
    check_bool,
    parse_net,
    render_net,
    rule_counts,
    run,
    run_removal,
    table_name,
)

_CHAIN_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def _chain_part(name: str) -> str:
    """An interface name as part of an nft chain identifier, injectively.

    nft identifiers allow only letters, digits and a few punctuation marks, so everything outside
    [A-Za-z0-9-] (including '_' itself) becomes _XX per UTF-8 byte; "veth1" stays "veth1".
    """
    out = []
    for byte in name.encode("utf-8"):
        ch = chr(byte)
        out.append(ch if ch in _CHAIN_SAFE else f"_{byte:02x}")
    return "".join(out)


@dataclass(frozen=True)
class NetworkRules:
    bridge: str
    ipv4_subnet: str | None
    ipv6_subnet: str | None
    ipv4_nat: bool
    ipv6_nat: bool
    ipv4_firewall: bool  # forward accept to/from the bridge, input accept DHCP/DNS/ICMP from it
    ipv6_firewall: bool


def _net_chains(bridge: str) -> dict[str, str]:
    """Chain name -> base chain spec, for one network."""
    part = _chain_part(bridge)
    return {
        f"fwd_{part}": "type filter hook forward priority filter ; policy accept ;",
        f"in_{part}": "type filter hook input priority filter ; policy accept ;",
        f"nat_{part}": "type nat hook postrouting priority srcnat ; policy accept ;",
    }


def _network_rules(r: NetworkRules) -> dict[str, list[str]]:
    br = checks.interface_name(r.bridge, "bridge name")
    v4 = None if r.ipv4_subnet is None else parse_net(r.ipv4_subnet, 4, "IPv4 subnet")
    v6 = None if r.ipv6_subnet is None else parse_net(r.ipv6_subnet, 6, "IPv6 subnet")
    nat4 = check_bool(r.ipv4_nat, "ipv4_nat")
    nat6 = check_bool(r.ipv6_nat, "ipv6_nat")
    fw4 = check_bool(r.ipv4_firewall, "ipv4_firewall")
    fw6 = check_bool(r.ipv6_firewall, "ipv6_firewall")
    fwd, inp, nat = _net_chains(br)
    rules: dict[str, list[str]] = {fwd: [], inp: [], nat: []}
    # Per family: forwarding through the bridge, and DHCP, DNS and ICMP from it to the host.
    for on, proto, dhcp, icmp in ((fw4, "ipv4", 67, "icmp"), (fw6, "ipv6", 547, "ipv6-icmp")):
        if not on:
            continue
        rules[fwd] += [
            f'meta nfproto {proto} iifname "{br}" accept',
            f'meta nfproto {proto} oifname "{br}" accept',
        ]
        rules[inp] += [
            f'iifname "{br}" meta nfproto {proto} udp dport {dhcp} accept',
            f'iifname "{br}" meta nfproto {proto} udp dport 53 accept',
            f'iifname "{br}" meta nfproto {proto} tcp dport 53 accept',
            f'iifname "{br}" meta l4proto {icmp} accept',
        ]
    # NAT needs a subnet to match on; without one the flag has nothing to apply to.
    if nat4 and v4 is not None:
        rules[nat].append(f'ip saddr {render_net(v4)} oifname != "{br}" masquerade')
    if nat6 and v6 is not None:
        rules[nat].append(f'ip6 saddr {render_net(v6)} oifname != "{br}" masquerade')
    return rules


def set_network_rules(tag: str, r: NetworkRules) -> None:
    """Add or replace the chains of network r.bridge atomically; chains left empty are removed."""
    if not isinstance(r, NetworkRules):
        raise InvalidError(f"Invalid network rules {r!r}")
    table = table_name(tag)
    rules = _network_rules(r)
    specs = _net_chains(r.bridge)
    t = f"inet {table}"
    cmds = [f"add table {t}"]
    for chain, body in rules.items():
        cmds.append(f"add chain {t} {chain} {{ {specs[chain]} }}")
        if body:
            cmds.append(f"flush chain {t} {chain}")
            cmds += [f"add rule {t} {chain} {rule}" for rule in body]
        else:
            cmds.append(f"delete chain {t} {chain}")
    run(f"set nftables rules for network {r.bridge}", cmds)


def remove_network_rules(tag: str, bridge: str) -> None:
    """Remove network bridge's chains; missing ones (or a missing table) are fine."""
    table = table_name(tag)
    bridge = checks.interface_name(bridge, "bridge name")
    t = f"inet {table}"
    cmds = []
    for chain, spec in _net_chains(bridge).items():
        cmds += [f"add chain {t} {chain} {{ {spec} }}", f"delete chain {t} {chain}"]
    run_removal(f"remove nftables rules for network {bridge}", "inet", table, cmds)


def delete_inet_table(tag: str) -> None:
    """Delete the inet table and everything in it; a missing table is fine."""
    table = table_name(tag)
    run(f"delete nftables table inet {table}", [f"add table inet {table}", f"delete table inet {table}"])


# Reading back what set_network_rules made (drift check).


def network_rule_counts(r: NetworkRules) -> dict[str, int]:
    """Chain -> number of rules that set_network_rules(r) leaves (chains it removes are absent)."""
    return {chain: len(body) for chain, body in _network_rules(r).items() if body}


def listed_network_rule_counts(tag: str, bridge: str) -> dict[str, int]:
    """Chain -> number of rules, for the chains of network bridge the inet table holds now."""
    chains = set(_net_chains(checks.interface_name(bridge, "bridge name")))
    return rule_counts("inet", table_name(tag), chains) or {}
