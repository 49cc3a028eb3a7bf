"""What this kernel can do, found by trying each thing where nothing can leak.

The link probes are rtnetlink requests on a socket opened in a new, empty network namespace
(netlink.socket_in_new_netns): the namespace lives only as long as that socket, so whatever
the probes create vanishes with it, even if the daemon dies mid-probe. tc's police action is
probed the same way (tc.has_police); nftables' bridge family by nft(8) under `unshare --net`.
A request the kernel refuses, or a missing nft, counts as a missing feature.

One effect outlives the namespace, by the kernel's design: a probe may autoload a module
(8021q, act_police, nft_chain_filter...), and the `dummy` module, when first loaded,
creates its own `dummy0` in the host's initial namespace. This kernel has no dummy.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pincus.errors import HostError
from pincus.host import links, netlink, sysfs, tc

FEATURES = (
    "bridge_vlan_filtering",
    "vlan_8021q",
    "tc_police",
    "dummy",
    "nftables_bridge",
    "kvm",
)

_PROBE_TIMEOUT = 10.0

# linux/if_link.h: the few attributes the probes set
_IFLA_IFNAME = 3
_VETH_INFO_PEER = 1
_IFLA_VLAN_ID = 1
_IFLA_BR_VLAN_FILTERING = 7
_NFT_SCRIPT = (
    "table bridge pfprobe { chain pfchain { type filter hook forward priority 0; policy accept; }; }"
)


def _network_probes() -> dict[str, bool]:
    try:
        conn = netlink.Rtnl(netlink.socket_in_new_netns())
    except OSError:
        return {}
    try:
        found = _link_probes(conn)
    finally:
        conn.close()  # the namespace, and all the probes made in it, go with the socket
    try:
        found["tc_police"] = tc.has_police()
    except HostError:
        found["tc_police"] = False
    found["nftables_bridge"] = _nft_bridge()
    return found


def _link_probes(nl: netlink.Rtnl) -> dict[str, bool]:
    peer = links.ifinfo() + netlink.text(_IFLA_IFNAME, "pfveth1")
    if not _works(links.add_link, nl, "pfveth0", "veth", data=netlink.attr(_VETH_INFO_PEER, peer)):
        return {}
    vlan10 = netlink.attr(_IFLA_VLAN_ID, struct.pack("=H", 10))
    parent = links.index_of(nl, "pfveth0")
    return {
        # A kernel without the option refuses to turn filtering on (the stub answers EOPNOTSUPP).
        "bridge_vlan_filtering": _works(
            links.add_link, nl, "pfbr0", "bridge", data=netlink.u8(_IFLA_BR_VLAN_FILTERING, 1)
        ),
        "vlan_8021q": _works(links.add_link, nl, "pfveth0.10", "vlan", data=vlan10, parent=parent),
        "dummy": _works(links.add_link, nl, "pfdummy0", "dummy"),
    }


def _works(fn: Callable[..., object], *args: Any, **kwargs: Any) -> bool:
    try:
        fn(*args, **kwargs)
    except (OSError, HostError):
        return False
    return True


def _nft_bridge() -> bool:
    """Whether nftables' bridge family takes a base chain, tried by nft(8) in a namespace of its own."""
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"}
    unshare, nft = shutil.which("unshare", path=env["PATH"]), shutil.which("nft", path=env["PATH"])
    if unshare is None or nft is None:
        return False
    try:
        proc = subprocess.run(
            [unshare, "--net", nft, "-f", "-"],
            input=_NFT_SCRIPT,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False  # killed on timeout: its namespace dies with it
    return proc.returncode == 0


def _has_kvm() -> bool:
    """Hardware KVM only: /dev/kvm opens, the CPU has vmx/svm, and it is not PVM.

    PVM also provides /dev/kvm, but a stock guest kernel hangs under it (MACHINE.md).
    """
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {
        flag
        for line in cpuinfo.splitlines()
        if line.startswith("flags")
        for flag in line.partition(":")[2].split()
    }
    if not flags & {"vmx", "svm"}:
        return False
    return not (sysfs.root() / "module" / "kvm_pvm").exists()


def probe_kernel_features() -> dict[str, bool]:
    """Every name in FEATURES mapped to whether this kernel has it (~30 ms, no side effects)."""
    found = _network_probes()
    result = {name: found.get(name, False) for name in FEATURES}
    result["kvm"] = _has_kvm()
    return result
