"""The host's forwarding sysctls, shared by every managed bridge of a daemon: turned on when a
bridge with addresses needs them, their first values saved in one file, and given back when the
daemon's last managed bridge goes."""

from __future__ import annotations

import logging
from pathlib import Path

from pincus.errors import HostError, InvalidError
from pincus.host import files, sysctl, sysfs
from pincus.host.facade import Host

log = logging.getLogger(__name__)

_SAVED_FILE = "host-sysctls.json"


class HostForwarding:
    def __init__(self, host: Host, networks_dir: Path) -> None:
        self.host = host
        # What forwarding looked like before us.
        self.saved_file = networks_dir / _SAVED_FILE

    def enable(self, bridge: str, ipv4: bool, ipv6: bool) -> None:
        """As Incus: a network with addresses routes (and NATs) for its instances, so the
        namespace must forward (for each family BRIDGE has an address of)."""
        if ipv4 and self.host(sysctl.get_sysctl, "net/ipv4/ip_forward") != "1":
            self._set("net/ipv4/ip_forward", "1")
        if not ipv6 or self.host(sysctl.get_sysctl, "net/ipv6/conf/all/forwarding") == "1":
            return
        # With forwarding on, the kernel ignores router advertisements on interfaces with
        # accept_ra=1; the host's own uplinks that take their addresses from RAs get 2.
        for iface in self.host(sysfs.list_interfaces):
            key = f"net/ipv6/conf/{iface}/accept_ra"
            try:
                if iface != bridge and self.host(sysctl.get_sysctl, key) == "1":
                    self._set(key, "2")
            except (InvalidError, HostError):
                continue  # a name no sysctl can have, or an interface without IPv6
        self._set("net/ipv6/conf/all/forwarding", "1")

    def _set(self, key: str, value: str) -> None:
        """Change a namespace-wide sysctl, remembering its first value so the last network gives it back."""
        saved = self.host(files.read_json, self.saved_file) or {}
        if key not in saved:
            saved[key] = self.host(sysctl.get_sysctl, key)
            self.host(files.write_json, self.saved_file, saved)
        self.host(sysctl.set_sysctl, key, value)

    def give_back(self) -> None:
        """Give back every saved sysctl. One that cannot be set stays on record (and the call
        fails) so that trying again gives it back; one whose interface is gone is dropped."""
        saved = self.host(files.read_json, self.saved_file) or {}
        left: dict[str, str] = {}
        for key, value in saved.items():
            try:
                self.host(sysctl.set_sysctl, key, value)
            except (InvalidError, HostError) as e:
                if self._exists(key):
                    left[key] = value
                    log.warning("Could not restore sysctl %s to %s: %s", key, value, e)
        if left:
            self.host(files.write_json, self.saved_file, left)
            raise HostError(f"Could not give back the host's sysctls {', '.join(sorted(left))}; try again")
        self.host(files.remove, self.saved_file)

    def _exists(self, key: str) -> bool:
        try:
            self.host(sysctl.get_sysctl, key)
        except (InvalidError, HostError):
            return False
        return True
