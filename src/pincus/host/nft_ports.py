"""The per-NIC port filter: the daemon's bridge-family table ``bridge pincus_<tag>``.

Fixed chains and sets, the same whatever the number of NICs. The base chain on the
bridge ``prerouting`` hook sends frames from ports in the set ``filtered`` to the chain
``port_filter``, which checks them against sets keyed by the input port (``iifname . ether saddr``
in ``allowed_mac``, ``iifname . ip saddr`` in ``allowed_v4``, ...) and hands IPv4/ARP and IPv6 on
to ``port_ipv4`` and ``port_ipv6`` for ports in ``v4_filtered`` / ``v6_filtered``. Prerouting, not
forward/input: it sees every frame once, whether it is forwarded, flooded or delivered to the host
(the bridge's own IP), and before the bridge learns the frame's source MAC; a filter on the forward
hook drops a spoofed frame only after its source MAC has been learnt on the spoofing port, which
diverts the victim's unicast traffic to it. A NIC is only set elements, none of them a verdict.

Adding or deleting plain set elements costs the same with 1 or 500 NICs (bench/bench_nft.py);
per-NIC chains did not, as every batch made the kernel re-validate the jump graph through all of
them. Deleting an element needs its whole key, so this process remembers what it gave each port
(see ``_known``), read back from the kernel once per process and table.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
from dataclasses import dataclass

from pincus.errors import HostError, InvalidError
from pincus.host import checks
from pincus.host.nft_runner import (
    Net,
    NftError,
    check_bool,
    list_json,
    list_tables,
    parse_net,
    render_net,
    rule_counts,
    run,
    run_batch,
    table_name,
)


def _parse_v4_list(values: object, what: str) -> list[ipaddress.IPv4Network]:
    nets = [n for n in _parse_list(values, 4, what) if isinstance(n, ipaddress.IPv4Network)]
    # Duplicates and networks inside others would only lengthen the rules.
    return list(ipaddress.collapse_addresses(nets))


def _parse_v6_list(values: object, what: str) -> list[ipaddress.IPv6Network]:
    nets = [n for n in _parse_list(values, 6, what) if isinstance(n, ipaddress.IPv6Network)]
    return list(ipaddress.collapse_addresses(nets))


def _parse_list(values: object, version: int, what: str) -> list[Net]:
    if not isinstance(values, (list, tuple)):
        raise InvalidError(f"Invalid {what} list {values!r}: must be a list")
    return [parse_net(v, version, what) for v in values]


def _render_raw128(net: ipaddress.IPv6Network) -> str:
    """An IPv6 network as a 128-bit integer or integer range, for raw payload matches."""
    lo, hi = int(net.network_address), int(net.broadcast_address)
    return f"0x{lo:032x}" if lo == hi else f"0x{lo:032x}-0x{hi:032x}"


def _link_local(mac: str) -> ipaddress.IPv6Network:
    """The EUI-64 link-local address derived from a MAC (universal/local bit flipped)."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    addr = ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + iid)
    return ipaddress.IPv6Network((int(addr), 128))


# Which ports have which filter on: sets of port names.
_FILTERED = "filtered"  # any filter: source MAC checked (IP filtering implies MAC filtering)
_IP_FILTERED = "ip_filtered"  # IPv4 or IPv6 filtering: VLAN-tagged frames dropped
_V4_FILTERED = "v4_filtered"  # IPv4 filtering with at least one allowed network
_V4_BLOCKED = "v4_blocked"  # IPv4 filtering with none: no IPv4 or ARP at all
_V6_FILTERED = "v6_filtered"
_V6_BLOCKED = "v6_blocked"  # IPv6 filtering with none: no IPv6 at all, not even link-local
# What each port may send: port . value. Single addresses and networks go to separate sets: a
# hash set's elements are added and deleted in constant time, while deleting from an interval set
# (nft_set_pipapo for concatenations) costs the kernel time in proportion to its size, ~5 ms per
# element at 500 ports. The callers list single addresses; networks are allowed but should stay few.
_ALLOWED_MAC = "allowed_mac"
_ALLOWED_V4 = "allowed_v4"
_ALLOWED_V4_NETS = "allowed_v4_nets"
_ALLOWED_V6 = "allowed_v6"
_ALLOWED_V6_NETS = "allowed_v6_nets"

_SET_SPECS = {
    _FILTERED: "type ifname ;",
    _IP_FILTERED: "type ifname ;",
    _V4_FILTERED: "type ifname ;",
    _V4_BLOCKED: "type ifname ;",
    _V6_FILTERED: "type ifname ;",
    _V6_BLOCKED: "type ifname ;",
    _ALLOWED_MAC: "type ifname . ether_addr ;",
    _ALLOWED_V4: "type ifname . ipv4_addr ;",
    _ALLOWED_V4_NETS: "type ifname . ipv4_addr ; flags interval ;",
    # Raw 128-bit keys: the ND target address has no named field in nft 1.0.6 (@th,64,128), and a
    # set serves only lookups of its own type, so the IPv6 source is read raw too (@nh,64,128) and
    # the same sets answer both.
    _ALLOWED_V6: "typeof iifname . @nh,64,128 ;",
    _ALLOWED_V6_NETS: "typeof iifname . @nh,64,128 ; flags interval ;",
}

_ETHER_TYPE_IP = "ether type ip"
_ETHER_TYPE_ARP = "ether type arp"
_ETHER_TYPE_IP6 = "ether type ip6"
_ND_TARGET = "@th,64,128"  # 8 bytes into the ICMPv6 header of both NS and NA
_IP6_SADDR = "@nh,64,128"
_ND_KEY = f"iifname . {_ND_TARGET}"


def _not_allowed(key: str, sets: tuple[str, str]) -> str:
    """'key is in neither set' as two ANDed negated lookups."""
    return " ".join(f"{key} != @{s}" for s in sets)


_V4_SETS = (_ALLOWED_V4, _ALLOWED_V4_NETS)
_V6_SETS = (_ALLOWED_V6, _ALLOWED_V6_NETS)

# Fixed chains and their rules. A NIC adds only set elements, never a chain or a rule: the cost of
# a batch then does not grow with the number of NICs (see the module docstring).
_CHAIN_RULES: dict[str, list[str]] = {
    "prerouting": [f"iifname @{_FILTERED} goto port_filter"],
    "input": [
        # Link-local frames (01:80:c2:00:00:0X) the bridge keeps for itself skip prerouting; they
        # still teach the bridge their source MAC, so a filtered port may not send them at all.
        f"ether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00 iifname @{_FILTERED} drop",
    ],
    "port_filter": [
        # A VLAN-tagged frame carries its IP header past 'ether type ip', so none of the IP checks
        # would see it: tagged frames from an IP-filtered instance are dropped outright.
        f"iifname @{_IP_FILTERED} ether type {{ 8021q, 8021ad }} drop",
        f"iifname . ether saddr != @{_ALLOWED_MAC} drop",
        f"{_ETHER_TYPE_ARP} iifname . arp saddr ether != @{_ALLOWED_MAC} drop",
        f"iifname @{_V4_BLOCKED} ether type {{ arp, ip }} drop",
        f"iifname @{_V6_BLOCKED} {_ETHER_TYPE_IP6} drop",
        f"ether type {{ arp, ip }} iifname @{_V4_FILTERED} goto port_ipv4",
        f"{_ETHER_TYPE_IP6} iifname @{_V6_FILTERED} goto port_ipv6",
    ],
    "port_ipv4": [
        # The sender fields are read at fixed offsets: only plain Ethernet/IPv4 ARP may pass.
        f"{_ETHER_TYPE_ARP} arp htype != 1 drop",
        f"{_ETHER_TYPE_ARP} arp ptype != ip drop",
        f"{_ETHER_TYPE_ARP} arp hlen != 6 drop",
        f"{_ETHER_TYPE_ARP} arp plen != 4 drop",
        # 0.0.0.0 is an ARP probe (RFC 5227) for an address the instance is about to use.
        f"{_ETHER_TYPE_ARP} arp saddr ip != 0.0.0.0 {_not_allowed('iifname . arp saddr ip', _V4_SETS)} drop",
        f"{_ETHER_TYPE_IP} udp sport 67 drop",  # the instance acting as a DHCP server
        f"{_ETHER_TYPE_IP} ip saddr 0.0.0.0 udp sport 68 udp dport 67 return",  # DHCP discover/request
        f"{_ETHER_TYPE_IP} {_not_allowed('iifname . ip saddr', _V4_SETS)} drop",
    ],
    "port_ipv6": [
        # RFC 6980: neighbor discovery is never fragmented, and the target of a fragmented NA may
        # lie beyond the first fragment, out of reach of the check below.
        f"{_ETHER_TYPE_IP6} exthdr frag exists icmpv6 type 133-137 drop",
        f"{_ETHER_TYPE_IP6} icmpv6 type nd-router-advert drop",
        f"{_ETHER_TYPE_IP6} udp sport 547 drop",  # the instance acting as a DHCPv6 server
        f"{_ETHER_TYPE_IP6} icmpv6 type nd-neighbor-advert {_not_allowed(_ND_KEY, _V6_SETS)} drop",
        # '::' is only allowed for duplicate address detection, and only of an allowed address.
        f"{_ETHER_TYPE_IP6} ip6 saddr :: icmpv6 type nd-neighbor-solicit "
        f"{_not_allowed(_ND_KEY, _V6_SETS)} drop",
        f"{_ETHER_TYPE_IP6} ip6 saddr :: icmpv6 type nd-neighbor-solicit return",
        f"{_ETHER_TYPE_IP6} {_not_allowed(f'iifname . {_IP6_SADDR}', _V6_SETS)} drop",
    ],
}
_BASE_CHAINS = {
    "prerouting": "type filter hook prerouting priority filter ; policy accept ;",
    "input": "type filter hook input priority filter ; policy accept ;",
}


def _ensure_bridge_cmds(table: str) -> list[str]:
    t = f"bridge {table}"
    cmds = [f"add table {t}"]
    cmds += [f"add set {t} {name} {{ {spec} }}" for name, spec in _SET_SPECS.items()]
    for chain in _CHAIN_RULES:
        spec = _BASE_CHAINS.get(chain)
        cmds.append(f"add chain {t} {chain}" + (f" {{ {spec} }}" if spec else ""))
    # Flush and re-add in the same batch: idempotent, and never a moment without the rules.
    for chain, rules in _CHAIN_RULES.items():
        cmds.append(f"flush chain {t} {chain}")
        cmds += [f"add rule {t} {chain} {rule}" for rule in rules]
    return cmds


@dataclass(frozen=True)
class NicFilter:
    port: str  # host-side interface name (veth host end or TAP)
    mac: str  # the instance's MAC
    ipv4: list[str]  # allowed source IPv4 addresses (empty + filter on = block IPv4 entirely)
    ipv6: list[str]  # allowed global IPv6 addresses (the EUI-64 link-local of mac is always allowed)
    mac_filtering: bool
    ipv4_filtering: bool
    ipv6_filtering: bool  # ip filtering implies mac filtering (the caller ensures)


# One set element: (set name, element as nft text). A port's filter is the set of its elements.
_Element = tuple[str, str]
_Elements = frozenset[_Element]


def _quoted(port: str) -> str:
    return f'"{port}"'


def _net_set(net: Net) -> str:
    if net.version == 4:
        return _ALLOWED_V4 if net.num_addresses == 1 else _ALLOWED_V4_NETS
    return _ALLOWED_V6 if net.num_addresses == 1 else _ALLOWED_V6_NETS


def _nic_elements(f: NicFilter) -> _Elements:
    """The set elements that make up f; empty when every filter is off. Validates every field."""
    port = _quoted(checks.interface_name(f.port, "port name"))
    mac = checks.mac(f.mac)
    mac_on = check_bool(f.mac_filtering, "mac_filtering")
    v4_on = check_bool(f.ipv4_filtering, "ipv4_filtering")
    v6_on = check_bool(f.ipv6_filtering, "ipv6_filtering")
    v4 = _parse_v4_list(f.ipv4, "IPv4 address")
    v6 = _parse_v6_list(f.ipv6, "IPv6 address")
    if not (mac_on or v4_on or v6_on):
        return frozenset()
    elems = {(_FILTERED, port), (_ALLOWED_MAC, f"{port} . {mac}")}
    if v4_on or v6_on:
        elems.add((_IP_FILTERED, port))
    if v4_on and v4:
        elems.add((_V4_FILTERED, port))
        elems |= {(_net_set(n), f"{port} . {render_net(n)}") for n in v4}
    elif v4_on:
        elems.add((_V4_BLOCKED, port))
    if v6_on and v6:
        elems.add((_V6_FILTERED, port))
        # The MAC's own link-local address too: neighbor discovery needs it.
        allowed = ipaddress.collapse_addresses([_link_local(mac), *v6])
        elems |= {(_net_set(n), f"{port} . {_render_raw128(n)}") for n in allowed}
    elif v6_on:
        elems.add((_V6_BLOCKED, port))
    return frozenset(elems)


# What this process knows the kernel holds, per (network namespace, bridge table): None for "no
# such table", else port name -> that port's elements. A port's old elements are needed to remove
# or replace them (nft deletes set elements only by their full key), and knowing the table exists
# spares the ensure batch and a table listing per call. Filled from one listing of the table the
# first time a table is used; dropped and re-read whenever a batch fails, as then it may be stale.
_known: dict[tuple[int, str], dict[str, _Elements] | None] = {}
_known_lock = threading.Lock()
_SO_NETNS_COOKIE = 71  # from <asm-generic/socket.h>, Linux 5.14+


def _netns_key() -> int:
    """This thread's network namespace, by a cookie the kernel never reuses (inode numbers are)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8), "little")
        except OSError:
            st = os.stat("/proc/thread-self/ns/net")
            return -((st.st_dev << 32) | st.st_ino)


def _render_elem_value(value: object) -> str:
    """One field of a set element from nft's JSON output, as nft text; '' if not understood."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("prefix"), dict):
        p = value["prefix"]
        return f"{p.get('addr')}/{p.get('len')}"
    if isinstance(value, dict) and isinstance(value.get("range"), list) and len(value["range"]) == 2:
        return f"{value['range'][0]}-{value['range'][1]}"
    return ""


def _normalize(set_name: str, field: str) -> str:
    """A listed element's value rendered as _nic_elements renders it, so the two compare equal."""
    try:
        if set_name == _ALLOWED_MAC:
            return checks.mac(field)
        if set_name in _V4_SETS:
            if "-" in field:
                first, last = (ipaddress.IPv4Address(x) for x in field.split("-"))
                return f"{first}-{last}"
            return render_net(parse_net(field, 4, "IPv4 address"))
        if set_name in _V6_SETS:
            lo_s, _, hi_s = field.partition("-")
            lo, hi = int(lo_s, 16), int(hi_s or lo_s, 16)
            return f"0x{lo:032x}" if lo == hi else f"0x{lo:032x}-0x{hi:032x}"
    except (ValueError, InvalidError):
        pass
    return field


def _parse_table_listing(out: str) -> dict[str, _Elements]:
    try:
        items = json.loads(out).get("nftables", [])
    except (ValueError, AttributeError) as e:
        raise HostError(f"list nftables bridge table: unreadable JSON output: {e}") from None
    ports: dict[str, set[_Element]] = {}
    for item in items:
        s = item.get("set") if isinstance(item, dict) else None
        if not isinstance(s, dict) or s.get("name") not in _SET_SPECS:
            continue
        name = str(s["name"])
        for elem in s.get("elem", []):
            if isinstance(elem, dict) and isinstance(elem.get("elem"), dict):  # with comment/timeout
                elem = elem["elem"].get("val")
            if isinstance(elem, str):
                port, rest = elem, None
            elif isinstance(elem, dict) and isinstance(elem.get("concat"), list) and len(elem["concat"]) == 2:
                port, rest = elem["concat"][0], _render_elem_value(elem["concat"][1])
            else:
                raise HostError(f"list nftables bridge table: unexpected element {elem!r} in set {name}")
            if not isinstance(port, str):
                raise HostError(f"list nftables bridge table: unexpected element {elem!r} in set {name}")
            text = _quoted(port) if rest is None else f"{_quoted(port)} . {_normalize(name, rest)}"
            ports.setdefault(port, set()).add((name, text))
    return {port: frozenset(elems) for port, elems in ports.items()}


def _read_table(table: str) -> dict[str, _Elements] | None:
    """The table's ports and their elements, by one listing; None if the table does not exist."""
    try:
        out = list_json(f"list table bridge {table}")
    except NftError as e:
        if ("bridge", table) not in list_tables():
            return None
        raise HostError(f"list nftables table bridge {table}: {e}") from None
    return _parse_table_listing(out)


def _apply_port(table: str, port: str, new: _Elements, operation: str) -> None:
    """Make port's elements exactly new, in one batch (none at all if there is nothing to do).

    Every element of new is (re-)added, a no-op for those already there. Should the table have been
    changed behind this process's back the batch fails; it is then retried once, after reading the
    table again and with the table's set-up (sets, chains, rules) redone in the same batch, which
    also repairs a table left by an older layout.
    """
    t = f"bridge {table}"
    key = (_netns_key(), table)
    with _known_lock:
        for attempt in (1, 2):
            if key not in _known:
                _known[key] = _read_table(table)
            ports = _known[key]
            old = ports.get(port, frozenset()) if ports is not None else frozenset()
            if not new and not old:
                return  # nothing to remove (or no table at all)
            cmds = _ensure_bridge_cmds(table) if ports is None or attempt == 2 else []
            cmds += [f"delete element {t} {name} {{ {text} }}" for name, text in sorted(old - new)]
            cmds += [f"add element {t} {name} {{ {text} }}" for name, text in sorted(new)]
            try:
                run_batch(cmds)
            except NftError as e:
                del _known[key]
                if attempt == 2:
                    raise HostError(f"{operation}: {e}") from None
                continue
            ports = {} if ports is None else ports
            if new:
                ports[port] = new
            else:
                ports.pop(port, None)
            _known[key] = ports
            return


def ensure_bridge_table(tag: str) -> None:
    """Create the bridge table, its sets and fixed chains; idempotent."""
    table = table_name(tag)
    key = (_netns_key(), table)
    with _known_lock:
        try:
            run(f"create nftables table bridge {table}", _ensure_bridge_cmds(table))
        except HostError:
            _known.pop(key, None)
            raise
        if key in _known and _known[key] is None:
            _known[key] = {}


def set_nic_filter(tag: str, f: NicFilter) -> None:
    """Add or replace the filter of f.port, atomically; with every filter off, remove it.

    Adds and deletes only this port's set elements. Creates the table first if it is missing.
    """
    if not isinstance(f, NicFilter):
        raise InvalidError(f"Invalid NIC filter {f!r}")
    table = table_name(tag)
    elems = _nic_elements(f)  # validates every field before anything runs
    _apply_port(table, f.port, elems, f"set nftables filter for port {f.port}")


def remove_nic_filter(tag: str, port: str) -> None:
    """Remove the filter of port (its set elements); a missing filter or table is fine."""
    table = table_name(tag)
    port = checks.interface_name(port, "port name")
    _apply_port(table, port, frozenset(), f"remove nftables filter for port {port}")


def delete_bridge_table(tag: str) -> None:
    """Delete the bridge table and everything in it; a missing table is fine."""
    table = table_name(tag)
    key = (_netns_key(), table)
    cmds = [f"add table bridge {table}", f"delete table bridge {table}"]
    with _known_lock:
        try:
            run(f"delete nftables table bridge {table}", cmds)
        except HostError:
            _known.pop(key, None)
            raise
        _known[key] = None


# ---------------------------------------------------------------------------------------------
# Reading back what the functions above made (drift check). Always a fresh listing, never _known.


def nic_filter_elements(f: NicFilter) -> list[str]:
    """The set elements set_nic_filter(f) puts in the bridge table, as "set { element }"."""
    return sorted(f"{name} {{ {text} }}" for name, text in _nic_elements(f))


def port_filter_elements(tag: str, port: str) -> list[str] | None:
    """The set elements the bridge table holds for port, as nic_filter_elements renders them;
    None if the table does not exist."""
    port = checks.interface_name(port, "port name")
    ports = _read_table(table_name(tag))
    if ports is None:
        return None
    return sorted(f"{name} {{ {text} }}" for name, text in ports.get(port, frozenset()))


def bridge_table_rule_counts() -> dict[str, int]:
    """Chain -> number of rules of the bridge table's fixed chains, as set_nic_filter makes them."""
    return {chain: len(rules) for chain, rules in _CHAIN_RULES.items()}


def listed_bridge_table_rule_counts(tag: str) -> dict[str, int] | None:
    """Chain -> number of rules of the bridge table's fixed chains now; None if there is no table."""
    return rule_counts("bridge", table_name(tag), set(_CHAIN_RULES))
