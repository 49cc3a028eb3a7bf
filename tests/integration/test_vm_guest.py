"""A real guest booted by pincusd through raw.qemu: it sees the volatile MAC and gets a DHCP lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.guest import dnsmasq_on, guest_image, raw_qemu, wait_for_guest
from tests.integration.helpers import config, wait_for
from tests.pincus_testlib import Daemon


@pytest.mark.slow
@pytest.mark.xdist_group("guest-vm")
@pytest.mark.timeout(300)
def test_guest_on_bridged_nic_sees_volatile_mac_and_gets_a_lease(
    daemon: Daemon, prefix: str, tmp_path: Path
) -> None:
    kernel, initrd = guest_image()
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    daemon.ns.ip("addr", "add", "10.250.50.1/24", "dev", br)
    with dnsmasq_on(daemon.ns, br, tmp_path, "10.250.50.100", "10.250.50.150") as leases:
        daemon.cli("init", "v1", "--vm", "-c", f"raw.qemu={raw_qemu(kernel, initrd)}")
        daemon.cli("config", "device", "add", "v1", "eth0", "nic", "nictype=bridged", f"parent={br}")
        daemon.cli("start", "v1")
        mac = config(daemon, "v1")["volatile.eth0.hwaddr"]
        found = wait_for_guest(daemon.dir / "instances" / "v1" / "console.log")
        assert ["MAC", "eth0", mac] in found
        lease = next(m for m in found if m[0] == "LEASE")
        assert lease[2].startswith("10.250.50.1") and 100 <= int(lease[2].split(".")[-1]) <= 150
        assert ["PING", "ok"] in found
        assert mac in leases.read_text()
        # The guest powers off; the daemon notices and removes the TAP.
        wait_for(lambda: "v1,STOPPED" in daemon.cli("list", "--format=csv").stdout, 30, "the VM to stop")
        wait_for(
            lambda: not any(k.endswith(".host_name") for k in config(daemon, "v1")), 10, "the TAP cleanup"
        )
