"""Interfaces' state in Incus's shapes, shared by the instance and the network views: addresses as
{family, address, netmask, scope}, counters under Incus's names."""

from __future__ import annotations

import ipaddress

from pincus.host.addresses import AddressInfo
from pincus.host.links import LinkStats


def cidr_objects(cidrs: list[str]) -> list[dict[str, str]]:
    """ "10.0.0.5/24" strings as address objects; the scope follows the address class."""
    out = []
    for text in cidrs:
        iface = ipaddress.ip_interface(text)
        ip = iface.ip
        out.append(
            {
                "family": "inet6" if ip.version == 6 else "inet",
                "address": str(ip),
                "netmask": str(iface.network.prefixlen),
                "scope": "link" if ip.is_link_local else "local" if ip.is_loopback else "global",
            }
        )
    return out


def info_objects(infos: list[AddressInfo]) -> list[dict[str, str]]:
    """The kernel's addresses of a link as address objects, with the kernel's scope."""
    return [
        {"family": a.family, "address": a.address, "netmask": str(a.prefixlen), "scope": a.scope}
        for a in infos
    ]


def counters(stats: LinkStats, peer_view: bool = False) -> dict[str, int]:
    """The link's counters; with PEER_VIEW, as the other end of the wire sees them (a VM's TAP
    receives what the guest sent)."""
    rx = (stats.rx_bytes, stats.rx_packets, stats.rx_errors, stats.rx_dropped)
    tx = (stats.tx_bytes, stats.tx_packets, stats.tx_errors, stats.tx_dropped)
    received, sent = (tx, rx) if peer_view else (rx, tx)
    return {
        "bytes_received": received[0],
        "bytes_sent": sent[0],
        "packets_received": received[1],
        "packets_sent": sent[1],
        "errors_received": received[2],
        "errors_sent": sent[2],
        "packets_dropped_inbound": received[3],
        "packets_dropped_outbound": sent[3],
    }
