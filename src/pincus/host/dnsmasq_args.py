"""dnsmasq's argv for one managed bridge, and the checks every value passes on its way there.

Files live in a per-network directory the caller chooses (``dir``, see ``paths``):

- ``dnsmasq.pid``: written by dnsmasq; with ``/proc/<pid>/cmdline`` it identifies the process
  (``dnsmasq_process``).
- ``dnsmasq.leases``: dnsmasq's lease database (``dnsmasq_hosts.read_leases``).
- ``dnsmasq.hosts/``: ``--dhcp-hostsdir``, one file per NIC named after its ``nic_id``
  (``dnsmasq_hosts``), so adding or removing one NIC touches one small file whatever the number
  of NICs.

Defence in depth: every value that reaches an argv or a hosts file is validated here again
(``InvalidError``), whatever the config layer already checked.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pincus.errors import InvalidError
from pincus.host import checks

DNSMASQ_BINARY = "/usr/sbin/dnsmasq"
PID_FILE = "dnsmasq.pid"
LEASE_FILE = "dnsmasq.leases"
HOSTS_DIR = "dnsmasq.hosts"

DNS_MODES = ("none", "managed", "dynamic")


@dataclass(frozen=True)
class DnsmasqConfig:
    bridge: str
    dir: Path
    ipv4_address: str | None = None  # the bridge's address, "10.250.1.1/24"; None = no IPv4
    ipv4_dhcp: bool = True
    ipv4_ranges: Sequence[tuple[str, str]] = ()  # empty = the whole subnet minus the bridge address
    ipv4_gateway: str | None = None  # DHCP option router; None = the bridge address
    ipv4_expiry: str = "1h"
    ipv6_address: str | None = None  # "fd42:250:1::1/64"; None = no IPv6
    ipv6_dhcp: bool = True
    ipv6_stateful: bool = False
    ipv6_ranges: Sequence[tuple[str, str]] = ()  # stateful only; empty = the whole subnet minus the bridge
    ipv6_ra: bool = True
    ipv6_expiry: str = "1h"
    dns_domain: str | None = None
    dns_mode: str = "none"  # "none": no DNS server at all; "managed"/"dynamic": DNS on the bridge
    user: str = "nobody"  # dnsmasq drops root to this user after start-up
    log_file: Path | None = None  # None = syslog (dnsmasq's default)


# --- validation ---------------------------------------------------------------------------

_NIC_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# dnsmasq reads a bare "<digits>[smhdw]" in a dhcp-host line as a lease time, not a host name.
_LEASE_TIME_LIKE = re.compile(r"[0-9]+[smhdw]?", re.IGNORECASE)
_DHCP_HOST_KEYWORDS = frozenset({"infinite", "ignore"})
_EXPIRY = re.compile(r"[0-9]{1,10}[smhdw]?|infinite")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def fail(what: str, value: object) -> InvalidError:
    return InvalidError(f"Invalid {what} for dnsmasq: {value!r}")


def check_path(path: Path, what: str = "directory") -> str:
    text = str(path)
    if not path.is_absolute() or any(ch in ", " or not ch.isprintable() for ch in text):
        # dnsmasq chdirs to / once it is a daemon, and splits some option values at commas.
        raise fail(f"{what} (must be absolute, without commas, spaces or control characters)", text)
    return os.path.normpath(text)


def check_nic_id(nic_id: str) -> str:
    # A leading dot would make dnsmasq ignore the file; the charset keeps it one path component.
    if not _NIC_ID.fullmatch(nic_id):
        raise fail("NIC id (expected [A-Za-z0-9._-]+, not starting with a dot)", nic_id)
    return nic_id


def check_hostname(name: str) -> str:
    if not _LABEL.fullmatch(name) or _LEASE_TIME_LIKE.fullmatch(name) or name.lower() in _DHCP_HOST_KEYWORDS:
        raise fail("host name (one RFC 1123 label, not a number or lease time)", name)
    return name


def _check_domain(domain: str) -> str:
    labels = domain.split(".")
    if len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise fail("DNS domain", domain)
    return domain


def _check_expiry(expiry: str) -> str:
    if not _EXPIRY.fullmatch(expiry):
        raise fail("lease time", expiry)
    return expiry


def parse_ipv4(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError):
        raise fail(what, value) from None


def parse_ipv6(value: str, what: str) -> ipaddress.IPv6Address:
    try:
        addr = ipaddress.IPv6Address(value)
    except (ipaddress.AddressValueError, ValueError):
        raise fail(what, value) from None
    if "%" in value:
        raise fail(what, value)
    return addr


def _ipv4_interface(value: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(value)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError):
        raise fail("IPv4 bridge address", value) from None
    if "/" not in value:
        raise fail("IPv4 bridge address (CIDR expected)", value)
    return iface


def ipv6_interface(value: str) -> ipaddress.IPv6Interface:
    try:
        iface = ipaddress.IPv6Interface(value)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError):
        raise fail("IPv6 bridge address", value) from None
    if "/" not in value or "%" in value:
        raise fail("IPv6 bridge address (CIDR expected)", value)
    return iface


_Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

_Iface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _ranges(given: Sequence[tuple[str, str]], iface: _Iface, family: str) -> list[tuple[_Addr, _Addr]]:
    """The caller's ranges, checked to lie inside the subnet; or the whole subnet minus the
    network address, the IPv4 broadcast address and the bridge's own address."""
    parse = parse_ipv4 if family == "IPv4" else parse_ipv6
    net = iface.network
    if given:
        out: list[tuple[_Addr, _Addr]] = []
        for start_s, end_s in given:
            start, end = parse(start_s, f"{family} range start"), parse(end_s, f"{family} range end")
            if int(start) > int(end) or start not in net or end not in net:
                raise fail(f"{family} range (must lie in {net}, start <= end)", f"{start_s}-{end_s}")
            out.append((start, end))
        return out
    # Integers: the bridge address may sit at either end of the address space.
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if family == "IPv4" else 0)
    own = int(iface.ip)
    whole = [(first, min(own - 1, last)), (max(own + 1, first), last)]
    make = type(iface.ip)
    out = [(make(a), make(b)) for a, b in whole if a <= b]
    if not out:
        raise fail(f"{family} subnet (no address left to hand out)", str(iface))
    return out


# --- argv -----------------------------------------------------------------------------------


def paths(dir: Path) -> tuple[Path, Path, Path]:
    """The pid file, the lease file and the hosts directory of DIR."""
    base = Path(check_path(dir))
    return base / PID_FILE, base / LEASE_FILE, base / HOSTS_DIR


def render_args(cfg: DnsmasqConfig) -> list[str]:
    """The full dnsmasq argv for cfg; raises InvalidError for any unsafe or inconsistent value."""
    bridge = checks.interface_name(cfg.bridge)
    pid_file, lease_file, hosts_dir = paths(cfg.dir)
    if not _USER.fullmatch(cfg.user):
        raise fail("user", cfg.user)
    if cfg.dns_mode not in DNS_MODES:
        raise fail("DNS mode", cfg.dns_mode)
    args = [
        DNSMASQ_BINARY,
        "--conf-file=/dev/null",  # never read /etc/dnsmasq.conf or /etc/dnsmasq.d
        "--no-hosts",  # the host's /etc/hosts is not this network's business
        "--bind-interfaces",  # bind this bridge's addresses only: instances run side by side
        f"--interface={bridge}",
        "--except-interface=lo",
        "--no-ping",  # a pool lease otherwise waits 3 s for a ping to time out
        "--dhcp-authoritative",  # answer clients holding leases from before a restart at once
        "--dhcp-no-override",
        f"--pid-file={pid_file}",
        f"--dhcp-leasefile={lease_file}",
        f"--dhcp-hostsdir={hosts_dir}",
        f"--user={cfg.user}",
    ]
    if cfg.log_file is not None:
        args.append(f"--log-facility={check_path(cfg.log_file, 'log file')}")
    domain = None if cfg.dns_domain is None else _check_domain(cfg.dns_domain)
    if cfg.dns_mode == "none":
        args.append("--port=0")
    else:
        if cfg.dns_mode == "managed":
            args.append("--dhcp-ignore-names")  # names come from static allocations only
        if domain is not None:
            # Names in the domain are answered from DHCP data only, never forwarded upstream.
            args += [f"--domain={domain}", f"--local=/{domain}/"]
    args += _ipv4_args(cfg)
    args += _ipv6_args(cfg)
    return args


def _ipv4_args(cfg: DnsmasqConfig) -> list[str]:
    _check_expiry(cfg.ipv4_expiry)
    if cfg.ipv4_address is None:
        if cfg.ipv4_ranges or cfg.ipv4_gateway:
            raise InvalidError("Invalid dnsmasq config: IPv4 ranges or gateway without an IPv4 address")
        return []
    iface = _ipv4_interface(cfg.ipv4_address)
    gateway = iface.ip if cfg.ipv4_gateway is None else parse_ipv4(cfg.ipv4_gateway, "IPv4 gateway")
    if not cfg.ipv4_dhcp:
        return []
    args = [f"--dhcp-range={a},{b},{cfg.ipv4_expiry}" for a, b in _ranges(cfg.ipv4_ranges, iface, "IPv4")]
    args.append(f"--dhcp-option=option:router,{gateway}")
    return args


def _ipv6_args(cfg: DnsmasqConfig) -> list[str]:
    _check_expiry(cfg.ipv6_expiry)
    if cfg.ipv6_address is None:
        if cfg.ipv6_ranges:
            raise InvalidError("Invalid dnsmasq config: IPv6 ranges without an IPv6 address")
        return []
    iface = ipv6_interface(cfg.ipv6_address)
    net, plen = iface.network.network_address, iface.network.prefixlen
    args: list[str] = []
    if cfg.ipv6_dhcp and cfg.ipv6_stateful:
        ranges = _ranges(cfg.ipv6_ranges, iface, "IPv6")
        args += [f"--dhcp-range={a},{b},{plen},{cfg.ipv6_expiry}" for a, b in ranges]
    elif cfg.ipv6_ranges:
        raise InvalidError("Invalid dnsmasq config: IPv6 ranges need stateful DHCPv6")
    elif cfg.ipv6_dhcp:
        # dnsmasq only offers stateless DHCPv6 together with RAs carrying the O flag.
        if not cfg.ipv6_ra:
            raise InvalidError(
                "Invalid dnsmasq config: stateless DHCPv6 needs router advertisements (ipv6_ra)"
            )
        args.append(f"--dhcp-range={net},ra-stateless,{plen},{cfg.ipv6_expiry}")
    elif cfg.ipv6_ra:
        args.append(f"--dhcp-range={net},ra-only,{plen},{cfg.ipv6_expiry}")
    if cfg.ipv6_ra:
        args.append("--enable-ra")
    return args


def digest(args: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(args).encode()).hexdigest()


def config_digest(cfg: DnsmasqConfig) -> str:
    """A digest of the argv; equal digests mean a restart would change nothing."""
    return digest(render_args(cfg))
