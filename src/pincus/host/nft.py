"""nftables tables owned by one pincus daemon: per-NIC bridge filtering and per-network NAT/firewall.

Every daemon owns two tables named after its tag, ``bridge pincus_<tag>`` and ``inet pincus_<tag>``;
nothing outside them is ever touched. Each public call is one atomic nft batch.

Bridge table: the base chain on the bridge ``prerouting`` hook sends each frame through the verdict
map ``nic_ports`` (input port name -> ``goto nic_<port>``) to its port's chain. Prerouting, not
forward/input: it sees every frame once, whether it is forwarded, flooded or delivered to the host
(the bridge's own IP), and before the bridge learns the frame's source MAC; a filter on the forward
hook drops a spoofed frame only after its source MAC has been learnt on the spoofing port, which
diverts the victim's unicast traffic to it. A NIC is one chain plus one element in each of two sets.

Cost per NIC: a batch names only that NIC's objects and nft is never asked to list rules. What still
grows with the number of NICs, and cannot be avoided with per-NIC chains, is the kernel's check of
the whole table on every commit that adds a verdict (``nft_chain_validate`` walks every chain the
map reaches, ~3 us per filtered NIC) and nft's fetch of the table's chain names: with libnftables a
NIC costs ~0.8 ms in an empty table and ~2.5 ms with 500 NICs (bench/bench_nft.py).

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
import subprocess
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pincus.errors import HostError, InvalidError

TABLE_PREFIX = "pincus_"
_NIC_MAP = "nic_ports"
_LL_SET = "nic_ports_ll"
_IFNAME_MAX_BYTES = 15
# '/' and ':' the kernel refuses; quotes and backslash would end or escape an nft string; '*' is a
# wildcard in nft interface-name matches.
_IFNAME_FORBIDDEN = frozenset("/:\"'\\`*")
_TAG = re.compile(r"[0-9a-f]{1,8}")
_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")
# Characters kept as they are in chain names; everything else is escaped as _XX (see _chain_part).
_CHAIN_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


# ---------------------------------------------------------------------------------------------
# Validation: every value is checked and re-rendered from its parsed form before it enters a rule.


def _check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise InvalidError(f"Invalid nftables tag {tag!r}: expected 1-8 lowercase hex digits")
    return tag


def _check_ifname(name: object, what: str = "interface name") -> str:
    if not isinstance(name, str) or name == "":
        raise InvalidError(f"Invalid {what} {name!r}: must be a non-empty string")
    for ch in name:
        # isprintable() is False for control characters and lone surrogates too.
        if ch.isspace() or not ch.isprintable() or ch in _IFNAME_FORBIDDEN:
            raise InvalidError(f"Invalid {what} {name!r}: character {ch!r} is not allowed")
    if len(name.encode("utf-8")) > _IFNAME_MAX_BYTES:
        raise InvalidError(f"Invalid {what} {name!r}: longer than {_IFNAME_MAX_BYTES} bytes")
    if name in (".", ".."):
        raise InvalidError(f"Invalid {what} {name!r}")
    return name


def _check_mac(mac: object) -> str:
    if not isinstance(mac, str) or not _MAC.fullmatch(mac):
        raise InvalidError(f"Invalid MAC address {mac!r}")
    return mac.lower()


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


def _none_of(field: str, values: Iterable[str]) -> str:
    """'field is none of values' as ANDed '!=' matches.

    Deliberately not an anonymous set: nft fetches every set of every table before adding a rule,
    so one anonymous set per NIC would make each addition slower than the last.
    """
    return " ".join(f"{field} != {v}" for v in values)


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


def _bridge_table(tag: str) -> str:
    return f"{TABLE_PREFIX}{_check_tag(tag)}"


def _nic_chain(port: str) -> str:
    return f"nic_{_chain_part(port)}"


def _ensure_bridge_cmds(table: str) -> list[str]:
    t = f"bridge {table}"
    return [
        f"add table {t}",
        f"add map {t} {_NIC_MAP} {{ type ifname : verdict ; }}",
        f"add set {t} {_LL_SET} {{ type ifname ; }}",
        f"add chain {t} prerouting {{ type filter hook prerouting priority filter ; policy accept ; }}",
        f"add chain {t} input {{ type filter hook input priority filter ; policy accept ; }}",
        # Flush and re-add in the same batch: idempotent, and never a moment without the rules.
        f"flush chain {t} prerouting",
        f"add rule {t} prerouting iifname vmap @{_NIC_MAP}",
        f"flush chain {t} input",
        # Link-local frames (01:80:c2:00:00:0X) the bridge keeps for itself skip prerouting; they
        # still teach the bridge their source MAC, so a filtered port may not send them at all.
        f"add rule {t} input ether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00 iifname @{_LL_SET} drop",
    ]


def ensure_bridge_table(tag: str) -> None:
    """Create the bridge table, its port map and base chains; idempotent."""
    table = _bridge_table(tag)
    _run(f"create nftables table bridge {table}", _ensure_bridge_cmds(table))


@dataclass(frozen=True)
class NicFilter:
    port: str  # host-side interface name (veth host end or TAP)
    mac: str  # the instance's MAC
    ipv4: list[str]  # allowed source IPv4 addresses (empty + filter on = block IPv4 entirely)
    ipv6: list[str]  # allowed global IPv6 addresses (the EUI-64 link-local of mac is always allowed)
    mac_filtering: bool
    ipv4_filtering: bool
    ipv6_filtering: bool  # ip filtering implies mac filtering (the caller ensures)


def _nic_rules(f: NicFilter) -> list[str]:
    """Rule bodies for frames arriving from the instance on its port."""
    _check_ifname(f.port, "port name")
    mac = _check_mac(f.mac)
    mac_on = _check_bool(f.mac_filtering, "mac_filtering")
    v4_on = _check_bool(f.ipv4_filtering, "ipv4_filtering")
    v6_on = _check_bool(f.ipv6_filtering, "ipv6_filtering")
    v4 = _parse_v4_list(f.ipv4, "IPv4 address")
    v6 = _parse_v6_list(f.ipv6, "IPv6 address")
    rules: list[str] = []
    if v4_on or v6_on:
        # A VLAN-tagged frame carries its IP header past 'ether type ip', so none of the IP checks
        # below would see it: tagged frames from a filtered instance are dropped outright.
        rules += ["ether type 8021q drop", "ether type 8021ad drop"]
    if mac_on or v4_on or v6_on:
        rules += [
            f"ether saddr != {mac} drop",
            f"ether type arp arp saddr ether != {mac} drop",
        ]
    if v4_on:
        rules += _ipv4_rules(v4)
    if v6_on:
        rules += _ipv6_rules(mac, v6)
    return rules


def _ipv4_rules(allowed: list[ipaddress.IPv4Network]) -> list[str]:
    if not allowed:
        return ["ether type arp drop", "ether type ip drop"]
    # 0.0.0.0 is an ARP probe (RFC 5227) for an address the instance is about to use.
    arp_senders = [_render_net(n) for n in [*allowed, ipaddress.IPv4Network("0.0.0.0/32")]]
    return [
        # The sender fields are read at fixed offsets: only plain Ethernet/IPv4 ARP may pass.
        "ether type arp arp htype != 1 drop",
        "ether type arp arp ptype != ip drop",
        "ether type arp arp hlen != 6 drop",
        "ether type arp arp plen != 4 drop",
        f"ether type arp {_none_of('arp saddr ip', arp_senders)} drop",
        "ether type ip udp sport 67 drop",  # the instance acting as a DHCP server
        "ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 return",  # DHCP discover/request
        f"ether type ip {_none_of('ip saddr', [_render_net(n) for n in allowed])} drop",
    ]


def _ipv6_rules(mac: str, listed: list[ipaddress.IPv6Network]) -> list[str]:
    allowed = list(ipaddress.collapse_addresses([_link_local(mac), *listed]))
    # The ND target address sits 8 bytes into the ICMPv6 header of both NS and NA; nft 1.0.6 has
    # no named field for it.
    target_not_allowed = _none_of("@th,64,128", [_render_raw128(n) for n in allowed])
    return [
        # RFC 6980: neighbor discovery is never fragmented, and the target of a fragmented NA may lie
        # beyond the first fragment, out of reach of the check below.
        "ether type ip6 exthdr frag exists icmpv6 type 133-137 drop",
        "ether type ip6 icmpv6 type nd-router-advert drop",
        "ether type ip6 udp sport 547 drop",  # the instance acting as a DHCPv6 server
        f"ether type ip6 icmpv6 type nd-neighbor-advert {target_not_allowed} drop",
        # '::' is only allowed for duplicate address detection, and only of an allowed address.
        f"ether type ip6 ip6 saddr :: icmpv6 type nd-neighbor-solicit {target_not_allowed} drop",
        "ether type ip6 ip6 saddr :: icmpv6 type nd-neighbor-solicit return",
        f"ether type ip6 {_none_of('ip6 saddr', [_render_net(n) for n in allowed])} drop",
    ]


def set_nic_filter(tag: str, f: NicFilter) -> None:
    """Add or replace the filter chain of f.port, atomically; with every filter off, remove it.

    Touches only this port's chain and set elements. Creates the table first if it is missing.
    """
    if not isinstance(f, NicFilter):
        raise InvalidError(f"Invalid NIC filter {f!r}")
    table = _bridge_table(tag)
    rules = _nic_rules(f)  # validates every field before anything runs
    if not rules:
        remove_nic_filter(tag, f.port)
        return
    t = f"bridge {table}"
    chain = _nic_chain(f.port)
    cmds = [
        f"add chain {t} {chain}",
        f"flush chain {t} {chain}",
        *(f"add rule {t} {chain} {r}" for r in rules),
        f'add element {t} {_NIC_MAP} {{ "{f.port}" : goto {chain} }}',
        f'add element {t} {_LL_SET} {{ "{f.port}" }}',
    ]
    operation = f"set nftables filter for port {f.port}"
    try:
        _get_runner().run(_script(cmds))
    except _NftError:
        # The table set-up is not repeated in every batch: re-adding the dispatch rule makes the
        # kernel walk the whole port map. Only when the batch fails is it (re)made, then retried.
        _run(f"create nftables table bridge {table}", _ensure_bridge_cmds(table))
        _run(operation, cmds)


def remove_nic_filter(tag: str, port: str) -> None:
    """Remove the filter chain and set elements of port; missing ones (or table) are fine."""
    table = _bridge_table(tag)
    port = _check_ifname(port, "port name")
    t = f"bridge {table}"
    chain = _nic_chain(port)
    # nft 1.0.6 has no 'destroy': adding first makes each delete valid whether or not it existed.
    # (Trying the deletes alone first would be quicker when they succeed, but a failed batch costs
    # the kernel an RCU grace period, 8-20 ms.)
    cmds = [
        f"add chain {t} {chain}",
        f"flush chain {t} {chain}",
        f'add element {t} {_NIC_MAP} {{ "{port}" : goto {chain} }}',
        f'add element {t} {_LL_SET} {{ "{port}" }}',
        f'delete element {t} {_NIC_MAP} {{ "{port}" }}',
        f"delete chain {t} {chain}",
        f'delete element {t} {_LL_SET} {{ "{port}" }}',
    ]
    _run_removal(f"remove nftables filter for port {port}", "bridge", table, cmds)


def delete_bridge_table(tag: str) -> None:
    """Delete the bridge table and everything in it; a missing table is fine."""
    table = _bridge_table(tag)
    cmds = [f"add table bridge {table}", f"delete table bridge {table}"]
    _run(f"delete nftables table bridge {table}", cmds)


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
    br = _check_ifname(r.bridge, "bridge name")
    v4 = None if r.ipv4_subnet is None else _parse_net(r.ipv4_subnet, 4, "IPv4 subnet")
    v6 = None if r.ipv6_subnet is None else _parse_net(r.ipv6_subnet, 6, "IPv6 subnet")
    nat4 = _check_bool(r.ipv4_nat, "ipv4_nat")
    nat6 = _check_bool(r.ipv6_nat, "ipv6_nat")
    fw4 = _check_bool(r.ipv4_firewall, "ipv4_firewall")
    fw6 = _check_bool(r.ipv6_firewall, "ipv6_firewall")
    fwd, inp, nat = _net_chains(br)
    rules: dict[str, list[str]] = {fwd: [], inp: [], nat: []}
    if fw4:
        rules[fwd] += [f'meta nfproto ipv4 iifname "{br}" accept', f'meta nfproto ipv4 oifname "{br}" accept']
        rules[inp] += [
            f'iifname "{br}" meta nfproto ipv4 udp dport 67 accept',
            f'iifname "{br}" meta nfproto ipv4 udp dport 53 accept',
            f'iifname "{br}" meta nfproto ipv4 tcp dport 53 accept',
            f'iifname "{br}" meta l4proto icmp accept',
        ]
    if fw6:
        rules[fwd] += [f'meta nfproto ipv6 iifname "{br}" accept', f'meta nfproto ipv6 oifname "{br}" accept']
        rules[inp] += [
            f'iifname "{br}" meta nfproto ipv6 udp dport 547 accept',
            f'iifname "{br}" meta nfproto ipv6 udp dport 53 accept',
            f'iifname "{br}" meta nfproto ipv6 tcp dport 53 accept',
            f'iifname "{br}" meta l4proto ipv6-icmp accept',
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
    bridge = _check_ifname(bridge, "bridge name")
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
