"""A network namespace's links as an instance's state shows them, read in one go.

One socket and two dumps (links with their counters, then every address) for the whole
namespace, instead of a socket and three requests per interface: `list` asks this for every
running container.
"""

from __future__ import annotations

from dataclasses import dataclass

from pincus.host import addresses, links, netlink


@dataclass(frozen=True)
class LinkView:
    link: links.LinkInfo
    stats: links.LinkStats | None  # None when the kernel sent no counters
    addresses: list[addresses.AddressInfo]


def namespace_links(netns: str | None = None) -> dict[str, LinkView]:
    """Every link of the namespace by name, with its counters and addresses."""
    with netlink.rtnl("Failed to list links and addresses", netns) as nl:
        found = links.links_with_stats(nl)
        addrs = addresses.address_info_by_link(nl)
    return {info.name: LinkView(info, stats, addrs.get(info.index, [])) for info, stats in found}
