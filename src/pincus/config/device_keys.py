"""Keys of instance devices (NICs) and of instances themselves, with Incus's meaning."""

from __future__ import annotations

from pincus.config import validators as v
from pincus.config.keys import CONTAINER, VM, Key, KeyTable

_VM_ONLY = frozenset({VM})
_CONTAINER_ONLY = frozenset({CONTAINER})
_ADDR4 = v.is_address_or_keyword(("none",), v.is_ipv4)
_ADDR6 = v.is_address_or_keyword(("none",), v.is_ipv6)

# Keys every NIC has, whatever its nictype.
NIC_COMMON: KeyTable = {
    "type": Key(v.is_one_of("nic"), "Device type", live=False),
    "nictype": Key(v.is_one_of("bridged", "physical"), "NIC type (or use network=)", live=False),
    "network": Key(v.is_interface_name, "Managed network to attach to", live=False),
    "parent": Key(v.is_interface_name, "Host bridge (bridged) or interface (physical)", live=False),
    "name": Key(v.is_interface_name, "Interface name inside the instance", live=False),
    "boot.priority": Key(v.is_int_range(0, 65535), "Boot order (higher boots first)", _VM_ONLY, live=False),
}

NIC_BRIDGED: KeyTable = {
    **NIC_COMMON,
    "host_name": Key(v.is_interface_name, "Name of the host-side interface", live=False),
    "hwaddr": Key(v.is_mac, "MAC address of the instance's interface", live=False),
    "mtu": Key(v.is_mtu, "MTU of the interface", live=False),
    "queue.tx.length": Key(v.is_int_range(0, 1_000_000), "Transmit queue length"),
    "ipv4.address": Key(_ADDR4, "Static DHCPv4 allocation (none: block IPv4 with filtering)"),
    "ipv6.address": Key(_ADDR6, "Static DHCPv6 allocation (none: block IPv6 with filtering)"),
    "ipv4.routes": Key(v.is_list_of(v.is_cidr4), "Host routes towards this NIC"),
    "ipv6.routes": Key(v.is_list_of(v.is_cidr6), "Host routes towards this NIC"),
    "limits.ingress": Key(v.is_bit_rate, "Limit of traffic into the instance"),
    "limits.egress": Key(v.is_bit_rate, "Limit of traffic out of the instance"),
    "limits.max": Key(v.is_bit_rate, "Limit in both directions"),
    "limits.priority": Key(v.is_priority, "Priority of the instance's outgoing packets"),
    "security.mac_filtering": Key(v.is_bool, "Drop frames with another source MAC"),
    "security.ipv4_filtering": Key(v.is_bool, "Drop IPv4 from other addresses (implies MAC filtering)"),
    "security.ipv6_filtering": Key(v.is_bool, "Drop IPv6 from other addresses (implies MAC filtering)"),
    "security.port_isolation": Key(v.is_bool, "Isolate the port from other isolated ports"),
    "vlan": Key(v.is_vlan_id, "Untagged VLAN of the port"),
    "vlan.tagged": Key(v.is_vlan_list, "Tagged VLANs of the port"),
    "attached": Key(v.is_bool, "Whether the NIC is plugged in", live=False),
    "connected": Key(v.is_bool, "Whether the link has carrier"),
}

NIC_PHYSICAL: KeyTable = {
    **NIC_COMMON,
    "hwaddr": Key(v.is_mac, "MAC address to set on the interface", live=False),
    "mtu": Key(v.is_mtu, "MTU to set on the interface", live=False),
    "vlan": Key(v.is_vlan_id, "VLAN sub-interface to create on the parent", live=False),
    "gvrp": Key(v.is_bool, "Register the VLAN with GVRP", live=False),
}

NIC_OVN: KeyTable = {
    **NIC_COMMON,
    "host_name": Key(v.is_interface_name, "Name of the host-side interface", live=False),
    "hwaddr": Key(v.is_mac, "MAC address of the instance's interface", live=False),
    "ipv4.address": Key(v.is_ipv4, "Static IPv4 address of the logical port (DHCP hands it out)", live=False),
}

INSTANCE: KeyTable = {
    "raw.qemu": Key(v.is_argv, "Extra QEMU command-line arguments", _VM_ONLY, live=False),
    # Live on a running container (its cgroup); a VM takes a change at its next start.
    "limits.cpu": Key(v.is_cpu_limit, 'CPUs: a count ("2") or a set ("0-1", "0,2"); a VM\'s vCPUs'),
    "limits.cpu.allowance": Key(
        v.is_cpu_allowance, 'CPU share ("50%") or hard cap ("25ms/100ms")', _CONTAINER_ONLY
    ),
    "limits.memory": Key(v.is_memory_limit, 'Memory: bytes ("256MiB") or a share of the host\'s ("50%")'),
    "limits.processes": Key(v.is_processes_limit, "Most processes at once", _CONTAINER_ONLY),
    # Incus keys next to these that pincus does not apply: refused by name rather than stored.
    **{
        key: Key(v.is_any, what, unsupported=f"pincus does not set {what.lower()}")
        for key, what in (
            ("limits.cpu.priority", "CPU priority against other instances"),
            ("limits.cpu.nodes", "NUMA nodes for the CPUs"),
            ("limits.memory.enforce", "Soft memory limits"),
            ("limits.memory.swap", "Swap limits"),
            ("limits.disk.priority", "Disk I/O priority"),
        )
    },
    "boot.autostart": Key(v.is_bool, "Start with the daemon"),
    "security.privileged": Key(
        v.is_bool, "Run without a user namespace (root is host root)", _CONTAINER_ONLY, live=False
    ),
    "security.idmap.isolated": Key(
        v.is_bool, "Own id range, not shared with other containers", _CONTAINER_ONLY, live=False
    ),
    "security.idmap.base": Key(
        v.is_int_range(0, 2**32 - 2), "First host id of the container's range", _CONTAINER_ONLY, live=False
    ),
    "security.idmap.size": Key(
        v.is_int_range(1, 2**32 - 1), "Number of ids mapped", _CONTAINER_ONLY, live=False
    ),
}
