"""Giving a DHCP lease back to dnsmasq before it expires, as the client itself would (a NIC that
leaves a managed bridge frees its addresses at once, as with Incus). dnsmasq-base ships neither
dhcp_release nor dhcp_release6, so the release messages are built here."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct

from pincus.errors import HostError
from pincus.host import checks
from pincus.host.dnsmasq_args import fail, parse_ipv4, parse_ipv6

_DHCP_SERVER_PORT = 67


def release_ipv4_lease(bridge: str, server: str, mac: str, address: str) -> None:
    """Ask the dnsmasq serving `bridge` at `server` to drop the lease of `mac` on `address`.

    A DHCPRELEASE as the client would send it (RFC 2131 4.4.6), sent from a socket bound to the
    bridge: the kernel then reports the bridge as the arrival interface, which dnsmasq requires
    (dnsmasq's own dhcp_release does the same). dnsmasq answers nothing; it rewrites its leases
    file. An unknown lease is ignored by dnsmasq.
    """
    hw = bytes.fromhex(checks.mac(mac).replace(":", ""))
    ciaddr = parse_ipv4(address, "lease address").packed
    server_id = parse_ipv4(server, "server address").packed
    bootp = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, secrets.randbits(32), 0, 0,  # BOOTREQUEST, Ethernet, 6-byte address
        ciaddr, bytes(4), bytes(4), bytes(4), hw, b"", b"",
    )  # fmt: skip
    options = b"\x63\x82\x53\x63" + bytes([53, 1, 7, 54, 4]) + server_id + b"\xff"  # RELEASE
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, checks.interface_name(bridge).encode())
            s.sendto(bootp + options, (str(ipaddress.IPv4Address(server_id)), _DHCP_SERVER_PORT))
    except OSError as e:
        raise HostError(f"release DHCP lease {address} of {mac} on {bridge}: {e.strerror}") from e


_DHCP6_SERVER_PORT = 547
_ALL_DHCP6_SERVERS = "ff02::1:2"


def _dhcp6_option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def _duid(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        raise fail(what, text) from None
    if not 2 < len(raw) <= 130:  # RFC 8415 11.1: at most 128 octets after the type
        raise fail(what, text)
    return raw


def release_ipv6_lease(bridge: str, server_duid: str, client_duid: str, iaid: int, address: str) -> None:
    """Ask the dnsmasq serving `bridge` to drop a DHCPv6 lease: a Release as the client would
    send it (RFC 8415 18.2.7) to All_DHCP_Relay_Agents_and_Servers on the bridge. The multicast
    copy looped back to this host arrives on the bridge, where dnsmasq listens (dnsmasq's own
    dhcp_release6 does the same)."""
    addr = parse_ipv6(address, "lease address").packed
    iaaddr = _dhcp6_option(5, addr + struct.pack("!II", 0, 0))
    message = (
        struct.pack("!I", (8 << 24) | secrets.randbits(24))  # RELEASE, transaction id
        + _dhcp6_option(1, _duid(client_duid, "client DUID"))
        + _dhcp6_option(2, _duid(server_duid, "server DUID"))
        + _dhcp6_option(3, struct.pack("!III", iaid, 0, 0) + iaaddr)  # IA_NA
    )
    name = checks.interface_name(bridge)
    try:
        index = socket.if_nametoindex(name)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, name.encode())
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            s.sendto(message, (_ALL_DHCP6_SERVERS, _DHCP6_SERVER_PORT, 0, index))
    except OSError as e:
        raise HostError(f"release DHCPv6 lease {address} on {bridge}: {e.strerror}") from e
