"""host/features.py: the probe's answers match independent evidence, and it leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pincus.host import features
from tests.pincus_testlib import NSEXEC, NetNS


@pytest.fixture(scope="module")
def probed() -> dict[str, bool]:
    return features.probe_kernel_features()


def test_the_probe_answers_six_booleans(probed: dict[str, bool]) -> None:
    assert (
        set(probed)
        == set(features.FEATURES)
        == {
            "bridge_vlan_filtering",
            "vlan_8021q",
            "tc_police",
            "dummy",
            "nftables_bridge",
            "kvm",
        }
    )
    assert all(isinstance(v, bool) for v in probed.values())


def _ok(ns: NetNS, *argv: str, stdin: str | None = None) -> bool:
    proc = subprocess.run([*NSEXEC, ns.name, *argv], input=stdin, capture_output=True, text=True, timeout=10)
    return proc.returncode == 0


def test_the_network_probes_match_what_the_tools_say(probed: dict[str, bool], netns: NetNS) -> None:
    assert probed["dummy"] == _ok(netns, "ip", "link", "add", "d0", "type", "dummy")
    table = "table bridge evidence { chain c { type filter hook forward priority 0; }; }\n"
    assert probed["nftables_bridge"] == _ok(netns, "nft", "-f", "-", stdin=table)
    netns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    assert probed["vlan_8021q"] == _ok(
        netns, "ip", "link", "add", "link", "v0", "name", "v0.5", "type", "vlan", "id", "5"
    )
    netns.ip("link", "add", "br0", "type", "bridge")
    _ok(netns, "ip", "link", "set", "br0", "type", "bridge", "vlan_filtering", "1")
    details = json.loads(netns.ip("-j", "-d", "link", "show", "br0").stdout)[0]
    assert probed["bridge_vlan_filtering"] == (details["linkinfo"]["info_data"].get("vlan_filtering") == 1)
    _ok(netns, "tc", "qdisc", "add", "dev", "v0", "ingress")
    police = [
        "tc",
        "filter",
        "add",
        "dev",
        "v0",
        "parent",
        "ffff:",
        "protocol",
        "all",
        "u32",
        "match",
        "u32",
        "0",
        "0",
    ]
    assert probed["tc_police"] == _ok(
        netns, *police, "action", "police", "rate", "1mbit", "burst", "10k", "drop"
    )


def test_this_machine_has_what_machine_md_says(probed: dict[str, bool]) -> None:
    # MACHINE.md: this kernel lacks dummy, 802.1Q, bridge VLAN filtering and tc police; it has
    # nftables' bridge family; its /dev/kvm is PVM, not hardware KVM.
    if not Path("/sys/module/kvm_pvm").exists():
        pytest.skip("not the machine kind MACHINE.md describes (PVM host)")
    assert probed == {
        "bridge_vlan_filtering": False,
        "vlan_8021q": False,
        "tc_police": False,
        "dummy": False,
        "nftables_bridge": True,
        "kvm": False,
    }


def test_kvm_means_hardware_kvm(probed: dict[str, bool]) -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    has_vmx = " vmx" in cpuinfo or " svm" in cpuinfo
    if probed["kvm"]:
        assert (
            has_vmx and not Path("/sys/module/kvm_pvm").exists() and os.access("/dev/kvm", os.R_OK | os.W_OK)
        )
    elif Path("/sys/module/kvm_pvm").exists() or not has_vmx or not Path("/dev/kvm").exists():
        assert probed["kvm"] is False


def _host_link_names() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    return {entry["ifname"] for entry in json.loads(out)}


def _probe_processes() -> list[int]:
    """Our children that are the probe's `unshare` or its shell."""
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == me and (cmdline.split(b"\0")[0].endswith(b"unshare") or b"pfveth0" in cmdline):
            found.append(int(pid))
    return found


def test_the_probe_leaves_no_namespace_interface_table_or_process_behind() -> None:
    named_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    start = time.monotonic()
    features.probe_kernel_features()
    elapsed = time.monotonic() - start
    assert elapsed < 1.0
    assert not {n for n in _host_link_names() if n.startswith("pf")}
    named_after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert not {n for n in named_after - named_before if n.startswith("pf")}
    tables = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True).stdout
    assert "pfprobe" not in tables
    assert _probe_processes() == []
