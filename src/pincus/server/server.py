"""The daemon's services, built once and shared by the API handlers."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

from pincus import __version__
from pincus.host import nft
from pincus.server.instances import Instances
from pincus.server.networks import Networks
from pincus.state import State

log = logging.getLogger(__name__)


class Server:
    def __init__(self, state: State) -> None:
        self.state = state
        self.networks = Networks(state)
        self.instances = Instances(state)

    def start(self) -> None:
        self.networks.start_all()
        self.networks.start_supervisor()
        self.instances.reconcile()
        self.instances.start_monitor()

    def stop(self) -> None:
        """SIGTERM: leave instances running for the next daemon to adopt."""
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
            "api_extensions": [],
            "auth": "trusted",
            "public": False,
            "environment": {
                "server": "pincus",
                "server_name": uname.node,
                "server_version": __version__,
                "server_pid": os.getpid(),
                "kernel": uname.system,
                "kernel_version": uname.release,
                "kernel_architecture": uname.machine,
                "firewall": nft.firewall_driver(),
                "kernel_features": dict(self.state.features),
                "storage": "dir",
            },
        }
