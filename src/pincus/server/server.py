"""The daemon's services, built once and shared by the API handlers."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

from pincus import __version__
from pincus.host import nft_runner, qemu
from pincus.host.facade import Host
from pincus.server.cluster import Cluster
from pincus.server.drift import Drift
from pincus.server.images import Images
from pincus.server.instances import Instances
from pincus.server.moves import Moves
from pincus.server.networks import Networks
from pincus.server.operations import Operations
from pincus.server.profiles import Profiles
from pincus.server.storage import Storage
from pincus.state import State

log = logging.getLogger(__name__)


# Incus API extensions pincus implements, by Incus's names; a client checks them before a call.
API_EXTENSIONS = [
    "etag",
    "patch",
    "network",
    "profile_usedby",
    "container_exec_signal_handling",
    "operation_description",
    "event_lifecycle",
    "network_leases",
    "network_state",
    "container_full",
    "kernel_features",
    "event_location",
    "event_project",
    "instances",
    "api_filtering",
    "instance_nic_network",
    "virtual-machines",
    "vm_boot_priority",
    "firewall_driver",
    "container_nic_ipfilter",
    "container_nic_routes",
    "network_type_physical",
    "network_type_ovn",
    "network_ovn_nat",
    "network_ovn_dhcp",
    "network_physical_ovn_ingress_mode",
    "network_vlan_physical",
    "instance_nic_bridged_vlan",
    "instance_nic_bridged_port_isolation",
    "network_gvrp",
    "network_counters_errors_dropped",
    "instance_get_full",
    "operation_wait",
    "init_preseed",
    "storage",
    "image_types",
    "images_expiry",
    "image_import_alias",
    "clustering",
    "clustering_join",
    "clustering_join_token",
    "clustering_roles",
]


OPERATIONS_GRACE = 10.0  # seconds a stopping daemon gives running operations


class Server:
    def __init__(self, state: State, cluster: Cluster | None = None) -> None:
        self.state = state
        # A single server unless the daemon found it is a member (cluster.json).
        self.cluster = cluster or Cluster(state, None, restart=lambda: None)
        self.operations = Operations(state.events)
        self.networks = Networks(state)
        self.networks.cluster = self.cluster
        self.storage = Storage(state)
        self.images = Images(state, self.storage)
        self.instances = Instances(state, self.storage, self.images)
        self.instances.location = self.cluster.name
        self.storage.per_member = self.cluster.clustered
        self.cluster.on_rename.append(lambda name: setattr(self.instances, "location", name))
        if self.cluster.clustered:
            self.images.fetch = self.cluster.fetch_image
            self.images.on_delete = self._forget_image_elsewhere
        self.moves = Moves(state, self.cluster, self.instances, self.storage)
        self.profiles = Profiles(state, self.instances)
        self.drift = Drift(state, self.networks, self.instances)

    def _forget_image_elsewhere(self, fp: str) -> None:
        for member, result in self.cluster.call_all("DELETE", f"/internal/images/{fp}").items():
            if isinstance(result, Exception):
                log.warning("Image %s's files stay on member %s: %s", fp, member, result)

    @property
    def host(self) -> Host:
        """The door to the host (state.host): every host call goes through it."""
        return self.state.host

    def start(self) -> None:
        self.storage.start()
        self.images.start()
        self.storage.delete_orphan_image_volumes(set(self.images.fingerprints()))
        self.networks.start_all()
        self.networks.start_supervisor()
        self.instances.reconcile()
        self.instances.start_monitor()
        self.cluster.start()

    def stop(self) -> None:
        """SIGTERM: leave instances running for the next daemon to adopt."""
        # Work in flight holds instance locks and half-made host state: let it end first.
        self.operations.wait_all(OPERATIONS_GRACE)
        self.cluster.stop()
        self.instances.stop_monitor()
        self.networks.stop_all()

    def shutdown_instances(self, timeout: float) -> None:
        """`pincus admin shutdown`: stop every instance cleanly before the daemon goes."""
        self.instances.shutdown_all(timeout)

    def info(self) -> dict[str, Any]:
        uname = platform.uname()
        return {
            "api_version": "1.0",
            "api_status": "stable",
            "api_extensions": API_EXTENSIONS,
            "auth": "trusted",
            "auth_methods": [],
            "public": False,
            "config": self.cluster.config(),
            "environment": {
                "addresses": self.cluster.listen_addresses(),
                "architectures": [uname.machine],
                "certificate": "",
                "driver": "pincus | qemu",
                "driver_version": f"{__version__} | {self.host(qemu.version)}",
                "project": "default",
                "server_clustered": self.cluster.clustered,
                "server": "pincus",
                "server_name": self.cluster.name or uname.node,
                "server_version": __version__,
                "server_pid": os.getpid(),
                "kernel": uname.system,
                "kernel_version": uname.release,
                "kernel_architecture": uname.machine,
                "firewall": self.host(nft_runner.firewall_driver),
                # Incus sends these as strings ("true"/"false"); typed clients refuse booleans.
                "kernel_features": {k: str(v).lower() for k, v in self.state.features.items()},
                "storage": " | ".join(sorted({p["driver"] for p in self.storage.list_all()})),
                "storage_version": "",
            },
        }
