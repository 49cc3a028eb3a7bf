"""nftables tables owned by one pincus daemon: per-NIC bridge filtering and per-network NAT/firewall.

Every daemon owns two tables named after its tag, ``bridge pincus_<tag>`` and ``inet pincus_<tag>``;
nothing outside them is ever touched. Each public call is one atomic nft batch.

Bridge table: fixed chains and sets, the same whatever the number of NICs. The base chain on the
bridge ``prerouting`` hook sends frames from ports in the set ``filtered`` to the chain
``port_filter``, which checks them against sets keyed by the input port (``iifname . ether saddr``
in ``allowed_mac``, ``iifname . ip saddr`` in ``allowed_v4``, ...) and hands IPv4/ARP and IPv6 on
to ``port_ipv4`` and ``port_ipv6`` for ports in ``v4_filtered`` / ``v6_filtered``. Prerouting, not
forward/input: it sees every frame once, whether it is forwarded, flooded or delivered to the host
(the bridge's own IP), and before the bridge learns the frame's source MAC; a filter on the forward
hook drops a spoofed frame only after its source MAC has been learnt on the spoofing port, which
diverts the victim's unicast traffic to it. A NIC is only set elements, none of them a verdict.

Cost per NIC: adding or deleting plain set elements is flat (~0.3 ms with libnftables, 1 or 500
NICs alike; bench/bench_nft.py). Per-NIC chains were not: every batch made libnftables fetch all
chains and the kernel re-validate the jump graph through all of them (0.8 -> 2.5 ms at 500 NICs).
Deleting an element needs its whole key, so this process remembers what it gave each port (see
``_known``), read back from the kernel once per process and table.

Inet table: each network gets its own base chains ``fwd_<bridge>``, ``in_<bridge>`` and
``nat_<bridge>`` (networks are few); replacing or removing a network touches only those.

libnftables is called in-process through ctypes, one context per thread, re-made when the thread
has moved to another network namespace (a context keeps acting in the namespace it was made in).
Without the library the ``nft`` program is run instead: 5-20 ms per call, as each process that
deleted anything waits for an RCU grace period when its netlink socket closes.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pincus.errors import HostError, InvalidError
from pincus.host import checks

TABLE_PREFIX = "pincus_"
_TAG = re.compile(r"[0-9a-f]{1,8}")
# Characters kept as they are in chain names; everything else is escaped as _XX (see _chain_part).
_CHAIN_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


# ---------------------------------------------------------------------------------------------
# Validation: every value is checked and re-rendered from its parsed form before it enters a rule.


def _check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise InvalidError(f"Invalid nftables tag {tag!r}: expected 1-8 lowercase hex digits")
    return tag


def _check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidError(f"Invalid {what} {value!r}: must be a bool")
    return value


def _parse_net(value: object, version: int, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or a CIDR of the given IP version; host bits are tolerated and dropped."""
    if not isinstance(value, str) or not value.isascii() or "%" in value or value != value.strip():
        raise InvalidError(f"Invalid {what} {value!r}")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise InvalidError(f"Invalid {what} {value!r}: {e}") from None
    if net.version != version:
        raise InvalidError(f"Invalid {what} {value!r}: not an IPv{version} address")
    # Rebuild from integers so nothing of the input text (e.g. a scope id) can survive.
    if version == 4:
        return ipaddress.IPv4Network((int(net.network_address), net.prefixlen))
    return ipaddress.IPv6Network((int(net.network_address), net.prefixlen))


def _parse_v4_list(values: object, what: str) -> list[ipaddress.IPv4Network]:
    nets = [n for n in _parse_list(values, 4, what) if isinstance(n, ipaddress.IPv4Network)]
    # Duplicates and networks inside others would only lengthen the rules.
    return list(ipaddress.collapse_addresses(nets))


def _parse_v6_list(values: object, what: str) -> list[ipaddress.IPv6Network]:
    nets = [n for n in _parse_list(values, 6, what) if isinstance(n, ipaddress.IPv6Network)]
    return list(ipaddress.collapse_addresses(nets))


_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_list(values: object, version: int, what: str) -> list[_Net]:
    if not isinstance(values, (list, tuple)):
        raise InvalidError(f"Invalid {what} list {values!r}: must be a list")
    return [_parse_net(v, version, what) for v in values]


def _render_net(net: _Net) -> str:
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def _render_raw128(net: ipaddress.IPv6Network) -> str:
    """An IPv6 network as a 128-bit integer or integer range, for raw payload matches."""
    lo, hi = int(net.network_address), int(net.broadcast_address)
    return f"0x{lo:032x}" if lo == hi else f"0x{lo:032x}-0x{hi:032x}"


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


def _link_local(mac: str) -> ipaddress.IPv6Network:
    """The EUI-64 link-local address derived from a MAC (universal/local bit flipped)."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    addr = ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + iid)
    return ipaddress.IPv6Network((int(addr), 128))


# ---------------------------------------------------------------------------------------------
# Running nft: libnftables in-process, or the nft program.

_NFT_CTX_OUTPUT_JSON = 1 << 4  # from <nftables/libnftables.h>
# nfgen_family numbers (NFPROTO_*) of the table families nft knows.
_FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}


class _NftError(Exception):
    """nft refused a batch; the message is nft's first error line."""


class _Runner(Protocol):
    name: str

    def run(self, script: str) -> str: ...

    def list_tables_json(self) -> str: ...

    def list_json(self, command: str) -> str: ...


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("Error:"):
            return line.removeprefix("Error:").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else "unknown error"


def _current_netns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


class _LibContext:
    """One nft_ctx. Its netlink socket is opened at creation and stays in that network namespace."""

    def __init__(self, lib: ctypes.CDLL, netns: tuple[int, int]) -> None:
        self.lib = lib
        self.netns = netns
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise HostError("create libnftables context: nft_ctx_new failed")
        self.ctx: int = ctx
        self._finalizer = weakref.finalize(self, lib.nft_ctx_free, ctx)
        # Output and errors go to memory buffers instead of the daemon's stdout/stderr.
        if lib.nft_ctx_buffer_output(ctx) != 0 or lib.nft_ctx_buffer_error(ctx) != 0:
            raise HostError("create libnftables context: cannot buffer its output")
        self.flags: int = lib.nft_ctx_output_get_flags(ctx)

    def run(self, script: str, json_output: bool = False) -> str:
        self.lib.nft_ctx_output_set_flags(self.ctx, self.flags | (_NFT_CTX_OUTPUT_JSON if json_output else 0))
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, script.encode("utf-8"))
        out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode("utf-8", "replace")
        err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode("utf-8", "replace")
        if rc != 0:
            raise _NftError(_first_error_line(err))
        return out


class _LibRunner:
    name = "libnftables"

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.restype = None
        for fn in (lib.nft_ctx_buffer_output, lib.nft_ctx_buffer_error):
            fn.argtypes = [ctypes.c_void_p]
            fn.restype = ctypes.c_int
        for fn in (lib.nft_ctx_get_output_buffer, lib.nft_ctx_get_error_buffer):
            fn.argtypes = [ctypes.c_void_p]
            fn.restype = ctypes.c_char_p
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self.lib = lib
        # A context is not thread-safe: each thread gets its own.
        self.local = threading.local()

    def _ctx(self) -> _LibContext:
        netns = _current_netns()
        ctx: _LibContext | None = getattr(self.local, "ctx", None)
        if ctx is None or ctx.netns != netns:
            # A thread that moved to another namespace (setns) needs a context opened there.
            ctx = _LibContext(self.lib, netns)
            self.local.ctx = ctx
        return ctx

    def run(self, script: str) -> str:
        return self._ctx().run(script)

    def list_tables_json(self) -> str:
        return self._ctx().run("list tables\n", json_output=True)

    def list_json(self, command: str) -> str:
        return self._ctx().run(command + "\n", json_output=True)


class _BinaryRunner:
    name = "nft program"

    def __init__(self, path: str) -> None:
        self.path = path

    def _nft(self, argv: list[str], stdin: str | None) -> str:
        try:
            proc = subprocess.run(
                [self.path, *argv], input=stdin, capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise _NftError(str(e)) from e
        if proc.returncode != 0:
            raise _NftError(_first_error_line(proc.stderr))
        return proc.stdout

    def run(self, script: str) -> str:
        return self._nft(["-f", "-"], script)

    def list_tables_json(self) -> str:
        # Not "-j -f -": with -j nft reads the file as JSON first and the text parser then gets
        # an already consumed stdin, printing nothing.
        return self._nft(["-j", "list", "tables"], None)

    def list_json(self, command: str) -> str:
        # The command is made of identifiers only (no quoting needed).
        return self._nft(["-j", *command.split()], None)


_runner: _Runner | None = None
_runner_lock = threading.Lock()


def _load_runner(prefer: str = "library") -> _Runner:
    if prefer == "library":
        try:
            return _LibRunner(ctypes.CDLL("libnftables.so.1"))
        except (OSError, AttributeError):
            pass  # no usable library: fall back to the program
    path = shutil.which("nft")
    if path is None:
        raise HostError("run nftables: neither libnftables.so.1 nor the nft program is installed")
    return _BinaryRunner(path)


def _get_runner() -> _Runner:
    global _runner
    if _runner is None:
        with _runner_lock:
            if _runner is None:
                _runner = _load_runner()
    return _runner


def _select_backend(prefer: str) -> str:
    """Force the backend ("library" or "binary"); for benchmarks and tests. Returns its name."""
    global _runner
    with _runner_lock:
        _runner = _load_runner(prefer)
        return _runner.name


def backend_name() -> str:
    """How nft commands are run here: "libnftables" (in-process) or "nft program"."""
    return _get_runner().name


def firewall_driver() -> str:
    """What `GET /1.0` reports as the firewall: "nftables" when rules can be loaded, else "none"."""
    try:
        backend_name()
    except HostError:
        return "none"
    return "nftables"


def _script(cmds: Sequence[str]) -> str:
    return "\n".join(cmds) + "\n"


def _run(operation: str, cmds: Sequence[str]) -> None:
    try:
        _get_runner().run(_script(cmds))
    except _NftError as e:
        raise HostError(f"{operation}: {e}") from None


def _run_removal(operation: str, family: str, table: str, cmds: Sequence[str]) -> None:
    """A removal batch that cannot fail while the table exists; without the table it is a no-op."""
    try:
        _get_runner().run(_script(cmds))
    except _NftError as e:
        if (family, table) not in _list_tables():
            return
        raise HostError(f"{operation}: {e}") from None


def _list_tables() -> list[tuple[str, str]]:
    tables = _list_tables_netlink()
    return tables if tables is not None else _list_tables_nft()


def _list_tables_netlink() -> list[tuple[str, str]] | None:
    """Tables by one netlink dump; None if pyroute2 cannot do it.

    nft's own "list tables" first fetches the whole ruleset, every rule of every table: 100 ms
    with 500 filtered NICs, against 1 ms for this dump.
    """
    try:
        from pyroute2.nftables.main import NFTables
    except ImportError:
        return None
    try:
        with NFTables(nfgen_family=0) as nl:
            msgs = nl.get_tables()
        return [
            (_FAMILIES.get(m["nfgen_family"], str(m["nfgen_family"])), str(m.get_attr("NFTA_TABLE_NAME")))
            for m in msgs
        ]
    except Exception:  # any failure of this shortcut falls back to asking nft
        return None


def _list_tables_nft() -> list[tuple[str, str]]:
    try:
        out = _get_runner().list_tables_json()
    except _NftError as e:
        raise HostError(f"list nftables tables: {e}") from None
    try:
        items = json.loads(out).get("nftables", []) if out.strip() else []
    except (ValueError, AttributeError) as e:
        raise HostError(f"list nftables tables: unreadable JSON output: {e}") from None
    tables = []
    for item in items:
        t = item.get("table") if isinstance(item, dict) else None
        if isinstance(t, dict) and isinstance(t.get("family"), str) and isinstance(t.get("name"), str):
            tables.append((t["family"], t["name"]))
    return tables


# ---------------------------------------------------------------------------------------------
# Bridge family: per-NIC filtering.

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


def _bridge_table(tag: str) -> str:
    return f"{TABLE_PREFIX}{_check_tag(tag)}"


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


def _net_set(net: _Net) -> str:
    if net.version == 4:
        return _ALLOWED_V4 if net.num_addresses == 1 else _ALLOWED_V4_NETS
    return _ALLOWED_V6 if net.num_addresses == 1 else _ALLOWED_V6_NETS


def _nic_elements(f: NicFilter) -> _Elements:
    """The set elements that make up f; empty when every filter is off. Validates every field."""
    port = _quoted(checks.interface_name(f.port, "port name"))
    mac = checks.mac(f.mac)
    mac_on = _check_bool(f.mac_filtering, "mac_filtering")
    v4_on = _check_bool(f.ipv4_filtering, "ipv4_filtering")
    v6_on = _check_bool(f.ipv6_filtering, "ipv6_filtering")
    v4 = _parse_v4_list(f.ipv4, "IPv4 address")
    v6 = _parse_v6_list(f.ipv6, "IPv6 address")
    if not (mac_on or v4_on or v6_on):
        return frozenset()
    elems = {(_FILTERED, port), (_ALLOWED_MAC, f"{port} . {mac}")}
    if v4_on or v6_on:
        elems.add((_IP_FILTERED, port))
    if v4_on and v4:
        elems.add((_V4_FILTERED, port))
        elems |= {(_net_set(n), f"{port} . {_render_net(n)}") for n in v4}
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
            return _render_net(_parse_net(field, 4, "IPv4 address"))
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
        out = _get_runner().list_json(f"list table bridge {table}")
    except _NftError as e:
        if ("bridge", table) not in _list_tables():
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
                _get_runner().run(_script(cmds))
            except _NftError as e:
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
    table = _bridge_table(tag)
    key = (_netns_key(), table)
    with _known_lock:
        try:
            _run(f"create nftables table bridge {table}", _ensure_bridge_cmds(table))
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
    table = _bridge_table(tag)
    elems = _nic_elements(f)  # validates every field before anything runs
    _apply_port(table, f.port, elems, f"set nftables filter for port {f.port}")


def remove_nic_filter(tag: str, port: str) -> None:
    """Remove the filter of port (its set elements); a missing filter or table is fine."""
    table = _bridge_table(tag)
    port = checks.interface_name(port, "port name")
    _apply_port(table, port, frozenset(), f"remove nftables filter for port {port}")


def delete_bridge_table(tag: str) -> None:
    """Delete the bridge table and everything in it; a missing table is fine."""
    table = _bridge_table(tag)
    key = (_netns_key(), table)
    cmds = [f"add table bridge {table}", f"delete table bridge {table}"]
    with _known_lock:
        try:
            _run(f"delete nftables table bridge {table}", cmds)
        except HostError:
            _known.pop(key, None)
            raise
        _known[key] = None


# ---------------------------------------------------------------------------------------------
# Inet family: per managed bridge network NAT and firewall.


@dataclass(frozen=True)
class NetworkRules:
    bridge: str
    ipv4_subnet: str | None
    ipv6_subnet: str | None
    ipv4_nat: bool
    ipv6_nat: bool
    ipv4_firewall: bool  # forward accept to/from the bridge, input accept DHCP/DNS/ICMP from it
    ipv6_firewall: bool


def _inet_table(tag: str) -> str:
    return f"{TABLE_PREFIX}{_check_tag(tag)}"


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
    v4 = None if r.ipv4_subnet is None else _parse_net(r.ipv4_subnet, 4, "IPv4 subnet")
    v6 = None if r.ipv6_subnet is None else _parse_net(r.ipv6_subnet, 6, "IPv6 subnet")
    nat4 = _check_bool(r.ipv4_nat, "ipv4_nat")
    nat6 = _check_bool(r.ipv6_nat, "ipv6_nat")
    fw4 = _check_bool(r.ipv4_firewall, "ipv4_firewall")
    fw6 = _check_bool(r.ipv6_firewall, "ipv6_firewall")
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
        rules[nat].append(f'ip saddr {_render_net(v4)} oifname != "{br}" masquerade')
    if nat6 and v6 is not None:
        rules[nat].append(f'ip6 saddr {_render_net(v6)} oifname != "{br}" masquerade')
    return rules


def set_network_rules(tag: str, r: NetworkRules) -> None:
    """Add or replace the chains of network r.bridge atomically; chains left empty are removed."""
    if not isinstance(r, NetworkRules):
        raise InvalidError(f"Invalid network rules {r!r}")
    table = _inet_table(tag)
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
    _run(f"set nftables rules for network {r.bridge}", cmds)


def remove_network_rules(tag: str, bridge: str) -> None:
    """Remove network bridge's chains; missing ones (or a missing table) are fine."""
    table = _inet_table(tag)
    bridge = checks.interface_name(bridge, "bridge name")
    t = f"inet {table}"
    cmds = []
    for chain, spec in _net_chains(bridge).items():
        cmds += [f"add chain {t} {chain} {{ {spec} }}", f"delete chain {t} {chain}"]
    _run_removal(f"remove nftables rules for network {bridge}", "inet", table, cmds)


def delete_inet_table(tag: str) -> None:
    """Delete the inet table and everything in it; a missing table is fine."""
    table = _inet_table(tag)
    _run(f"delete nftables table inet {table}", [f"add table inet {table}", f"delete table inet {table}"])


def list_owned_tables() -> list[tuple[str, str]]:
    """(family, name) of every pincus_* table in this network namespace, of any daemon."""
    return [(fam, name) for fam, name in _list_tables() if name.startswith(TABLE_PREFIX)]


# ---------------------------------------------------------------------------------------------
# Reading back what the functions above made (drift check). Always a fresh listing, never _known.


def nic_filter_elements(f: NicFilter) -> list[str]:
    """The set elements set_nic_filter(f) puts in the bridge table, as "set { element }"."""
    return sorted(f"{name} {{ {text} }}" for name, text in _nic_elements(f))


def port_filter_elements(tag: str, port: str) -> list[str] | None:
    """The set elements the bridge table holds for port, as nic_filter_elements renders them;
    None if the table does not exist."""
    port = checks.interface_name(port, "port name")
    ports = _read_table(_bridge_table(tag))
    if ports is None:
        return None
    return sorted(f"{name} {{ {text} }}" for name, text in ports.get(port, frozenset()))


def network_rule_counts(r: NetworkRules) -> dict[str, int]:
    """Chain -> number of rules that set_network_rules(r) leaves (chains it removes are absent)."""
    return {chain: len(body) for chain, body in _network_rules(r).items() if body}


def listed_network_rule_counts(tag: str, bridge: str) -> dict[str, int]:
    """Chain -> number of rules, for the chains of network bridge the inet table holds now."""
    chains = set(_net_chains(checks.interface_name(bridge, "bridge name")))
    return _rule_counts("inet", _inet_table(tag), chains) or {}


def bridge_table_rule_counts() -> dict[str, int]:
    """Chain -> number of rules of the bridge table's fixed chains, as set_nic_filter makes them."""
    return {chain: len(rules) for chain, rules in _CHAIN_RULES.items()}


def listed_bridge_table_rule_counts(tag: str) -> dict[str, int] | None:
    """Chain -> number of rules of the bridge table's fixed chains now; None if there is no table."""
    return _rule_counts("bridge", _bridge_table(tag), set(_CHAIN_RULES))


def _rule_counts(family: str, table: str, chains: set[str]) -> dict[str, int] | None:
    if (family, table) not in _list_tables():
        return None
    try:
        items = json.loads(_get_runner().list_json(f"list table {family} {table}")).get("nftables", [])
    except _NftError as e:
        raise HostError(f"list nftables table {family} {table}: {e}") from None
    except (ValueError, AttributeError) as e:
        raise HostError(f"list nftables table {family} {table}: unreadable JSON output: {e}") from None
    counts: dict[str, int] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(c := item.get("chain"), dict) and c.get("name") in chains:
            counts.setdefault(str(c["name"]), 0)
        elif isinstance(r := item.get("rule"), dict) and r.get("chain") in chains:
            counts[str(r["chain"])] = counts.get(str(r["chain"]), 0) + 1
    return counts
