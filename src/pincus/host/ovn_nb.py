"""What one OVN network is in the northbound database, made and removed in single transactions.

Every row made here carries the external id `pincus-network=<owner>` (owner: the daemon's tag and
the network's name), which is how `delete_network` finds all of them, whatever names they have.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from pincus.host import ovsdb

OWNER_KEY = "pincus-network"


@dataclass(frozen=True)
class Topology:
    """An OVN network: an internal switch for the instances, a router, and an external switch whose
    localnet port reaches the uplink through the provider bridge mapped as PHYSNET."""

    owner: str  # value of the pincus-network external id of every row
    prefix: str  # name prefix of every row
    physnet: str
    chassis: str  # the gateway chassis (this member's system-id)
    internal4: str  # router's internal address, CIDR (the network's ipv4.address)
    external4: str  # router's address on the uplink, CIDR within the uplink's subnet
    gateway4: str  # the uplink's gateway (next hop of the default route)
    router_mac: str
    external_mac: str
    nat4: bool
    dhcp4: bool
    mtu: int
    dns_domain: str | None = None
    dns_servers: tuple[str, ...] = ()
    internal6: str | None = None  # router's internal IPv6 address, CIDR (router advertisements: SLAAC)
    external6: str | None = None
    gateway6: str | None = None
    nat6: bool = False

    @property
    def router(self) -> str:
        return f"{self.prefix}-lr"

    @property
    def internal_switch(self) -> str:
        return f"{self.prefix}-ls-int"

    @property
    def external_switch(self) -> str:
        return f"{self.prefix}-ls-ext"


def _ids(owner: str, **more: str) -> dict[str, str]:
    return {OWNER_KEY: owner, **more}


def create_network(remote: str, t: Topology) -> None:
    """Make every row of T (a failure leaves none of them)."""
    nb = ovsdb.northbound(remote)
    internal = ipaddress.ip_interface(t.internal4)
    ext = ipaddress.ip_interface(t.external4)
    ids = _ids(t.owner)
    cmds: list[Any] = [
        nb.lr_add(t.router, external_ids=ids),
        nb.lrp_add(
            t.router,
            f"{t.prefix}-lrp-ext",
            t.external_mac,
            [t.external4, *([t.external6] if t.external6 else [])],
            external_ids=ids,
        ),
        nb.lrp_add(
            t.router,
            f"{t.prefix}-lrp-int",
            t.router_mac,
            [t.internal4, *([t.internal6] if t.internal6 else [])],
            external_ids=ids,
            **_ra(t),
        ),
        nb.ls_add(t.external_switch, external_ids=ids),
        nb.lsp_add(
            t.external_switch,
            f"{t.prefix}-ls-ext-localnet",
            type="localnet",
            addresses=["unknown"],
            options={"network_name": t.physnet},
            external_ids=ids,
        ),
        nb.lsp_add(
            t.external_switch,
            f"{t.prefix}-ls-ext-lr",
            type="router",
            addresses=["router"],
            options={"router-port": f"{t.prefix}-lrp-ext", "nat-addresses": "router"},
            external_ids=ids,
        ),
        nb.ls_add(
            t.internal_switch,
            external_ids=ids,
            other_config={"subnet": str(internal.network), "exclude_ips": str(internal.ip)},
        ),
        nb.lsp_add(
            t.internal_switch,
            f"{t.prefix}-ls-int-lr",
            type="router",
            addresses=["router"],
            options={"router-port": f"{t.prefix}-lrp-int"},
            external_ids=ids,
        ),
    ]
    if t.dhcp4:
        cmds.append(nb.dhcp_options_add(str(internal.network), **ids))
    ovsdb.run(nb, cmds, f"create OVN network {t.owner} in {remote}")
    # A second transaction for what refers to rows of the first (ovsdbapp reads them back); its
    # failure takes the first one's rows away again.
    try:
        more: list[Any] = [
            nb.lrp_set_gateway_chassis(f"{t.prefix}-lrp-ext", t.chassis, 1),
            nb.lr_route_add(t.router, "0.0.0.0/0", t.gateway4.split("/")[0]),
        ]
        if t.nat4:
            more.append(nb.lr_nat_add(t.router, "snat", str(ext.ip), str(internal.network)))
        if t.external6 and t.gateway6 and t.internal6:
            more.append(nb.lr_route_add(t.router, "::/0", t.gateway6))
            if t.nat6:
                ext6, int6 = ipaddress.ip_interface(t.external6), ipaddress.ip_interface(t.internal6)
                more.append(nb.lr_nat_add(t.router, "snat", str(ext6.ip), str(int6.network)))
        if t.dhcp4:
            uuid = dhcp_options_uuid(remote, t.owner)
            more.append(nb.dhcp_options_set_options(uuid, **_dhcp_options(t, internal)))
        ovsdb.run(nb, more, f"route and NAT of OVN network {t.owner}")
    except BaseException:
        delete_network(remote, t.owner)
        raise


def _ra(t: Topology) -> dict[str, Any]:
    """Router advertisements from the internal router port: SLAAC in the network's /64."""
    if not t.internal6:
        return {}
    configs = {"address_mode": "slaac", "send_periodic": "true", "max_interval": "30", "mtu": str(t.mtu)}
    return {"ipv6_ra_configs": configs}


def _dhcp_options(t: Topology, internal: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> dict[str, str]:
    options = {
        "lease_time": "3600",
        "router": str(internal.ip),
        "server_id": str(internal.ip),
        "server_mac": t.router_mac,
        "mtu": str(t.mtu),
    }
    if t.dns_servers:
        options["dns_server"] = "{" + ",".join(t.dns_servers) + "}"
    if t.dns_domain:
        options["domain_name"] = f'"{t.dns_domain}"'
    return options


def dhcp_options_uuid(remote: str, owner: str) -> Any:
    nb = ovsdb.northbound(remote)
    for row in nb.tables["DHCP_Options"].rows.values():
        if row.external_ids.get(OWNER_KEY) == owner:
            return row.uuid
    return None


def _owned(nb: Any, table: str, owner: str) -> list[Any]:
    return [row for row in nb.tables[table].rows.values() if row.external_ids.get(OWNER_KEY) == owner]


def owned_rows(remote: str, owner: str) -> dict[str, list[str]]:
    """Table -> names (or uuids) of the rows OWNER has: what `delete_network` would remove."""
    nb = ovsdb.northbound(remote)
    found: dict[str, list[str]] = {}
    for table in (
        "Logical_Switch",
        "Logical_Switch_Port",
        "Logical_Router",
        "Logical_Router_Port",
        "DHCP_Options",
    ):
        rows = _owned(nb, table, owner)
        if rows:
            found[table] = sorted(str(getattr(r, "name", r.uuid)) for r in rows)
    return found


def delete_network(remote: str, owner: str) -> None:
    """Remove every row OWNER has (switches take their ports, routers their ports, NAT rules,
    routes and gateway chassis with them), in one transaction. Nothing there: a no-op."""
    nb = ovsdb.northbound(remote)
    cmds: list[Any] = []
    for row in _owned(nb, "Logical_Router", owner):
        cmds.append(nb.lr_del(row.uuid, if_exists=True))
    for row in _owned(nb, "Logical_Switch", owner):
        cmds.append(nb.ls_del(row.uuid, if_exists=True))
    for row in _owned(nb, "DHCP_Options", owner):
        cmds.append(nb.dhcp_options_del(row.uuid))
    if cmds:
        ovsdb.run(nb, cmds, f"delete OVN network {owner} from {remote}")


def add_port(
    remote: str, switch: str, port: str, owner: str, instance: str, mac: str, ipv4: str | None, dhcp: bool
) -> None:
    """A logical switch port for one NIC of INSTANCE: its MAC and static IPv4 (or one OVN picks
    from the switch's subnet), and the network's DHCP options. No port security (yet): an
    instance may use other addresses, as on a bridge without security.* filtering."""
    nb = ovsdb.northbound(remote)
    address = f"{mac} {ipv4}" if ipv4 else f"{mac} dynamic"
    cmds: list[Any] = [
        nb.lsp_add(
            switch,
            port,
            may_exist=False,
            external_ids=_ids(owner, **{"pincus-nic": port, "pincus-instance": instance}),
        ),
        nb.lsp_set_addresses(port, [address]),
    ]
    if dhcp:
        uuid = dhcp_options_uuid(remote, owner)
        if uuid is not None:
            cmds.append(nb.lsp_set_dhcpv4_options(port, uuid))
    ovsdb.run(nb, cmds, f"add logical port {port} to {switch}")


def delete_port(remote: str, port: str) -> None:
    nb = ovsdb.northbound(remote)
    ovsdb.run(nb, [nb.lsp_del(port, if_exists=True)], f"delete logical port {port}")


def port_addresses(remote: str, port: str) -> list[str]:
    """The port's addresses as OVN has them (a dynamic one resolved by northd)."""
    nb = ovsdb.northbound(remote)
    for row in nb.tables["Logical_Switch_Port"].rows.values():
        if row.name == port:
            dyn = list(row.dynamic_addresses)
            return [*row.addresses, *dyn]
    return []


def nic_ports(remote: str, owner: str) -> list[tuple[str, list[str], list[str]]]:
    """(instance, addresses, dynamic addresses) of every NIC port of OWNER's network."""
    nb = ovsdb.northbound(remote)
    return sorted(
        (row.external_ids.get("pincus-instance", ""), list(row.addresses), list(row.dynamic_addresses))
        for row in _owned(nb, "Logical_Switch_Port", owner)
        if "pincus-nic" in row.external_ids
    )
