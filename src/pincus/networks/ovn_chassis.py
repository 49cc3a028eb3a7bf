"""Where this pincusd's OVN lives: the central it uses (its own embedded one, or an existing one)
and its local chassis, and bringing them up, supervising them and shutting them down.

The server key `network.ovn.northbound_connection` (or PINCUS_OVN_NORTHBOUND) names an existing
central, PINCUS_OVN_SOUTHBOUND its southbound connection when not on the standard port next to it
(what the chassis's ovn-controller talks to), `network.ovn.encap_address` (a member's own key) or
PINCUS_OVN_ENCAP_IP this chassis's tunnel endpoint (127.0.0.1 on a single server, the member's
cluster address on a cluster) and PINCUS_OVS_DATAPATH_TYPE (`system` or `netdev`, detected when unset).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from pincus.config.server_keys import parse_address
from pincus.db import cluster as db_cluster
from pincus.errors import InvalidError
from pincus.host import certs, files, ovs_daemons, ovs_layout, ovs_switch, ovsdb
from pincus.host.facade import Host
from pincus.state import State

NORTHBOUND_KEY = "network.ovn.northbound_connection"
NORTHBOUND_ENV = "PINCUS_OVN_NORTHBOUND"
ENCAP_KEY = "network.ovn.encap_address"
SOUTHBOUND_ENV = "PINCUS_OVN_SOUTHBOUND"
ENCAP_IP_ENV = "PINCUS_OVN_ENCAP_IP"
DATAPATH_ENV = "PINCUS_OVS_DATAPATH_TYPE"


@dataclass(frozen=True)
class OvnSite:
    dir: Path  # $PINCUS_DIR/ovn
    nb_remote: str
    sb_remote: str
    embedded: bool
    system_id: str  # this member's chassis name
    integration_bridge: str
    encap_ip: str
    datapath_override: str | None
    clustered: bool = False
    central_member: str = ""  # on a cluster without an existing central: the member running it
    listen: str | None = None  # the address this member's embedded central serves the others on
    logical_tag: str = ""  # in the names of the logical rows: this daemon's tag, or the cluster's

    @property
    def central_dir(self) -> Path:
        return self.dir / "central"

    @property
    def chassis_dir(self) -> Path:
        return self.dir / "chassis"

    @property
    def switch_remote(self) -> str:
        return f"unix:{ovs_layout.chassis_socket(self.chassis_dir)}"

    def central_specs(self) -> list[ovs_layout.DaemonSpec]:
        return ovs_layout.central_specs(self.central_dir, self.listen) if self.embedded else []

    def chassis_specs(self) -> list[ovs_layout.DaemonSpec]:
        return ovs_layout.chassis_specs(self.chassis_dir)

    def all_specs(self) -> list[ovs_layout.DaemonSpec]:
        return [*self.central_specs(), *self.chassis_specs()]


def site(state: State) -> OvnSite:
    """This pincusd's OVN: which central (an existing one named by `network.ovn.northbound_connection`
    or PINCUS_OVN_NORTHBOUND, else an embedded one) and its own chassis.

    On a cluster the embedded central is run by the member with the lowest id (the one that formed
    the cluster), listening on its cluster address; every other member's chassis connects to it
    there. It does not move: while that member is down, chassis keep the flows they have but no
    port can be bound or network changed (a fail-over needs an external, clustered central)."""
    base = state.dir / "ovn"
    member = state.store.member
    server = db_cluster.config(state.store, member)
    nb = server.get(NORTHBOUND_KEY) or os.environ.get(NORTHBOUND_ENV) or ""
    central_member, listen = "", None
    mine = db_cluster.member(state.store, member) if member else None
    if nb:
        sb = os.environ.get(SOUTHBOUND_ENV) or _southbound_of(nb)
        embedded = False
    elif member:
        central = db_cluster.members(state.store)[0]
        central_member = central.name
        ip = parse_address(central.address)[0]
        if central.name == member:
            nb_sock, sb_sock = ovs_layout.central_sockets(base / "central")
            nb, sb, embedded, listen = f"unix:{nb_sock}", f"unix:{sb_sock}", True, ip
        else:
            nb = ovs_layout.tcp_remote(ip, ovs_layout.NB_PORT)
            sb = ovs_layout.tcp_remote(ip, ovs_layout.SB_PORT)
            embedded = False
    else:
        nb_sock, sb_sock = ovs_layout.central_sockets(base / "central")
        nb, sb, embedded = f"unix:{nb_sock}", f"unix:{sb_sock}", True
    default_encap = parse_address(mine.address)[0] if mine is not None else "127.0.0.1"
    encap_ip = server.get(ENCAP_KEY) or os.environ.get(ENCAP_IP_ENV) or default_encap
    try:
        ipaddress.ip_address(encap_ip)
    except ValueError:
        raise InvalidError(f'{ENCAP_IP_ENV} "{encap_ip}" is not an IP address') from None
    return OvnSite(
        dir=base,
        nb_remote=nb,
        sb_remote=sb,
        embedded=embedded,
        system_id=f"pincus-{state.tag}",
        integration_bridge=f"pint{state.tag}",
        encap_ip=encap_ip,
        datapath_override=os.environ.get(DATAPATH_ENV) or None,
        clustered=bool(member),
        central_member=central_member,
        listen=listen,
        logical_tag=_cluster_tag(state) if member else state.tag,
    )


def _cluster_tag(state: State) -> str:
    """Names of logical rows are the cluster's, not one member's: a tag from the cluster's
    certificate, the same on every member and different for another cluster on the same central."""
    pem = state.host(certs.read, state.dir / "cluster.crt")
    return str(state.host(certs.fingerprint, pem))[:6]


def _southbound_of(nb: str) -> str:
    """An existing central's southbound connection: PINCUS_OVN_SOUTHBOUND, else the northbound
    one's hosts on the standard southbound port (6642 next to 6641)."""
    parts = []
    for part in nb.split(","):
        scheme, _, rest = part.partition(":")
        host, _, port = rest.rpartition(":")
        if scheme not in ("tcp", "ssl") or port != str(ovs_layout.NB_PORT):
            raise InvalidError(
                f'The OVN northbound connection "{nb}" is not on port {ovs_layout.NB_PORT}: set '
                f"{SOUTHBOUND_ENV} to the central's southbound connection"
            )
        parts.append(f"{scheme}:{host}:{ovs_layout.SB_PORT}")
    return ",".join(parts)


def datapath_type(host: Host, s: OvnSite) -> str:
    return host(ovs_daemons.datapath_type, s.datapath_override)


def bring_up(host: Host, s: OvnSite) -> None:
    """Central (when embedded) and chassis running and the chassis configured; an existing central
    is checked first, so an unreachable one fails before anything is started. On failure, stops
    what this call started."""
    datapath = datapath_type(host, s)
    if not s.embedded:
        host(ovsdb.probe, s.nb_remote, "OVN_Northbound")
    specs = s.all_specs()
    was_running = {k for k, v in host(ovs_daemons.running, specs).items() if v is not None}
    try:
        host(ovs_daemons.start_all, [*s.central_specs(), *s.chassis_specs()[:2]])
        host(
            ovs_switch.configure_chassis,
            s.switch_remote,
            s.system_id,
            s.sb_remote,
            s.encap_ip,
            datapath,
            s.integration_bridge,
        )
        host(ovs_daemons.start_all, s.chassis_specs()[2:])
    except BaseException:
        host(ovs_daemons.stop_all, [spec for spec in specs if spec.name not in was_running])
        raise


def shut_down(host: Host, s: OvnSite) -> None:
    """Stop every daemon and forget their databases: nothing of OVN is left of this pincusd."""
    if host(ovs_daemons.find_running, s.chassis_specs()[0]) is not None:
        host(ovs_switch.delete_bridge_if_exists, s.switch_remote, s.integration_bridge)
    host(ovsdb.forget, s.switch_remote)
    if s.embedded:
        host(ovsdb.forget, s.nb_remote)
    host(ovs_daemons.stop_all, s.all_specs())
    host(files.remove_tree, s.dir)


def restart_dead(host: Host, s: OvnSite) -> list[str]:
    return host(ovs_daemons.restart_dead, s.all_specs())
