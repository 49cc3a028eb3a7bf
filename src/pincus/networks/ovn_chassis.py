"""Where this pincusd's OVN lives: the central it uses (its own embedded one, or an existing one)
and its local chassis, and bringing them up, supervising them and shutting them down.

pincus has no server config yet, so the environment stands in for Incus's server keys:
PINCUS_OVN_NORTHBOUND (`network.ovn.northbound_connection`) with PINCUS_OVN_SOUTHBOUND (what the
chassis's ovn-controller talks to), PINCUS_OVN_ENCAP_IP (this chassis's tunnel endpoint;
127.0.0.1 on one member) and PINCUS_OVS_DATAPATH_TYPE (`system` or `netdev`, detected when unset).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from pincus.errors import InvalidError
from pincus.host import files, ovs_daemons, ovs_layout, ovs_switch, ovsdb
from pincus.host.facade import Host
from pincus.state import State

NORTHBOUND_ENV = "PINCUS_OVN_NORTHBOUND"
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
        return ovs_layout.central_specs(self.central_dir) if self.embedded else []

    def chassis_specs(self) -> list[ovs_layout.DaemonSpec]:
        return ovs_layout.chassis_specs(self.chassis_dir)

    def all_specs(self) -> list[ovs_layout.DaemonSpec]:
        return [*self.central_specs(), *self.chassis_specs()]


def site(state: State) -> OvnSite:
    base = state.dir / "ovn"
    nb = os.environ.get(NORTHBOUND_ENV) or ""
    if nb:
        sb = os.environ.get(SOUTHBOUND_ENV) or ""
        if not sb:
            raise InvalidError(
                f"{NORTHBOUND_ENV} is set but {SOUTHBOUND_ENV} is not: the local chassis needs the "
                "central's southbound connection too"
            )
        embedded = False
    else:
        nb_sock, sb_sock = ovs_layout.central_sockets(base / "central")
        nb, sb, embedded = f"unix:{nb_sock}", f"unix:{sb_sock}", True
    encap_ip = os.environ.get(ENCAP_IP_ENV) or "127.0.0.1"
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
    )


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
