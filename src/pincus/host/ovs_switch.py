"""The local chassis's Open vSwitch database: its identity, provider bridges, and instance ports."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pincus.errors import HostError
from pincus.host import checks, ovsdb
from pincus.host.ovs_daemons import check_external_id


def configure_chassis(
    remote: str, system_id: str, sb_remote: str, encap_ip: str, datapath_type: str, integration_bridge: str
) -> None:
    """What ovn-controller reads to join the central as chassis SYSTEM_ID."""
    ovs = ovsdb.switch(remote)
    ids = {
        "system-id": check_external_id(system_id),
        "ovn-remote": check_external_id(sb_remote),
        "ovn-encap-type": "geneve",
        "ovn-encap-ip": check_external_id(encap_ip),
        "ovn-bridge-datapath-type": datapath_type,
        "ovn-bridge": check_external_id(integration_bridge),
    }
    if not ovs.tables["Open_vSwitch"].rows:
        # A new database has no root row yet (what `ovs-vsctl init` makes).
        ovsdb.run(ovs, [ovs.db_create("Open_vSwitch")], "initialise the OVS database", plain=True)
    cmds = [ovs.db_set("Open_vSwitch", ".", ("external_ids", ids))]
    ovsdb.run(ovs, cmds, f"configure OVS chassis {system_id}")


def bridge_mappings(remote: str) -> dict[str, str]:
    """physnet -> provider bridge, from ovn-bridge-mappings."""
    ovs = ovsdb.switch(remote)
    for row in ovs.tables["Open_vSwitch"].rows.values():
        text = row.external_ids.get("ovn-bridge-mappings", "")
        return dict(item.split(":", 1) for item in text.split(",") if ":" in item)
    return {}


def _set_mappings(ovs: Any, mappings: dict[str, str]) -> Any:
    text = ",".join(f"{k}:{v}" for k, v in sorted(mappings.items()))
    if not text:
        return ovs.db_remove("Open_vSwitch", ".", "external_ids", "ovn-bridge-mappings", if_exists=True)
    return ovs.db_set("Open_vSwitch", ".", ("external_ids", {"ovn-bridge-mappings": check_external_id(text)}))


def add_provider_bridge(remote: str, bridge: str, physnet: str, port: str, datapath_type: str) -> None:
    """The OVS bridge BRIDGE with host interface PORT in it, mapped as PHYSNET, in one transaction."""
    ovs = ovsdb.switch(remote)
    mappings = {**bridge_mappings(remote), physnet: bridge}
    cmds = [
        ovs.add_br(bridge, may_exist=True, datapath_type=datapath_type),
        ovs.add_port(bridge, port, may_exist=True),
        _set_mappings(ovs, mappings),
    ]
    ovsdb.run(ovs, cmds, f"add OVS provider bridge {bridge} with port {port}")


def delete_provider_bridge(remote: str, bridge: str, physnet: str) -> None:
    """BRIDGE (and its ports) gone and unmapped; a no-op when neither is there."""
    ovs = ovsdb.switch(remote)
    mappings = {k: v for k, v in bridge_mappings(remote).items() if k != physnet}
    cmds = [ovs.del_br(bridge, if_exists=True), _set_mappings(ovs, mappings)]
    ovsdb.run(ovs, cmds, f"delete OVS provider bridge {bridge}")


def add_instance_port(remote: str, bridge: str, port: str, iface_id: str) -> None:
    """Host interface PORT on the integration bridge, bound to logical port IFACE_ID."""
    ovs = ovsdb.switch(remote)
    cmds = [
        ovs.add_port(bridge, port, may_exist=True),
        ovs.db_set("Interface", port, ("external_ids", {"iface-id": check_external_id(iface_id)})),
    ]
    ovsdb.run(ovs, cmds, f"add port {port} to {bridge}")


def delete_port(remote: str, port: str) -> None:
    ovs = ovsdb.switch(remote)
    ovsdb.run(ovs, [ovs.del_port(port, if_exists=True)], f"delete OVS port {port}")


def bridges(remote: str) -> list[str]:
    ovs = ovsdb.switch(remote)
    return sorted(str(row.name) for row in ovs.tables["Bridge"].rows.values())


def ports(remote: str) -> list[str]:
    ovs = ovsdb.switch(remote)
    return sorted(str(row.name) for row in ovs.tables["Port"].rows.values())


def delete_bridge_if_exists(remote: str, bridge: str) -> None:
    ovs = ovsdb.switch(remote)
    ovsdb.run(ovs, [ovs.del_br(bridge, if_exists=True)], f"delete OVS bridge {bridge}")


def wait_for_interface(name: str, timeout: float = 5.0) -> None:
    """ovs-vswitchd makes a bridge's own interface (its LOCAL port) some time after the database
    got the bridge: wait for it to appear in the kernel."""
    checks.interface_name(name)
    deadline = time.monotonic() + timeout
    while not (Path("/sys/class/net") / name).exists():
        if time.monotonic() > deadline:
            raise HostError(f'OVS bridge interface "{name}" did not appear within {timeout:g} s')
        time.sleep(0.02)
