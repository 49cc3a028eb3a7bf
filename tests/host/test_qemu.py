"""host/qemu.py against a real QEMU that runs no guest (-S): QMP, TAP NICs, hot-plug, stop.

QEMU opens TAPs in its own network namespace, so the test bridge and TAPs live in the host
namespace; the bridge has no address and IPv6 is off on every test interface, so nothing
leaves them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pincus.errors import HostError
from pincus.host import qemu
from pincus.host.qmp import QMP
from tests.pincus_testlib import qemu_nic_macs


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def link(name: str) -> dict[str, object]:
    out: list[dict[str, object]] = json.loads(ip("-j", "link", "show", "dev", name))
    return out[0]


def has_carrier(name: str) -> bool:
    flags = link(name)["flags"]
    assert isinstance(flags, list)
    return "LOWER_UP" in flags and "UP" in flags


def pids_named(vm_name: str) -> list[int]:
    """QEMU processes whose command line carries this test's unique VM name."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-name" in argv and vm_name.encode() in argv:
            found.append(int(entry.name))
    return found


def no_ipv6(name: str) -> None:
    Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")


@dataclass
class Net:
    bridge: str
    taps: list[str]


@pytest.fixture
def net(prefix: str) -> Iterator[Net]:
    """A bridge with two TAPs enslaved and up, as the caller of start_qemu must provide."""
    n = Net(bridge=f"{prefix}br", taps=[f"{prefix}t0", f"{prefix}t1"])
    try:
        ip("link", "add", n.bridge, "type", "bridge")
        no_ipv6(n.bridge)
        ip("link", "set", n.bridge, "up")
        for tap in n.taps:
            ip("tuntap", "add", tap, "mode", "tap")
            no_ipv6(tap)
            ip("link", "set", tap, "master", n.bridge)
            ip("link", "set", tap, "up")
        yield n
    finally:
        for name in [*n.taps, n.bridge]:
            subprocess.run(["ip", "link", "del", name], capture_output=True)


@pytest.fixture
def vm_name(prefix: str) -> Iterator[str]:
    """A unique VM name; any QEMU still carrying it after the test is killed."""
    name = f"{prefix}-vm"
    yield name
    for pid in pids_named(name):
        os.kill(pid, 9)


MAC0 = "52:54:00:fa:00:01"
MAC1 = "52:54:00:fa:00:02"


@pytest.fixture
def paused_vm(net: Net, vm_name: str, tmp_path: Path) -> Iterator[qemu.QemuProcess]:
    proc = qemu.start_qemu(vm_name, tmp_path / "vm", [qemu.TapNic("n0", net.taps[0], MAC0)], ["-S"])
    try:
        yield proc
    finally:
        qemu.stop_qemu(proc, timeout=1, force=True)


def test_choose_accelerator_is_tcg_where_dev_kvm_is_pvm() -> None:
    if not Path("/sys/module/kvm_pvm").exists() and Path("/dev/kvm").exists():
        pytest.skip("this host's /dev/kvm is not PVM")
    assert qemu.choose_accelerator() == "tcg"


def test_started_qemu_answers_qmp_and_holds_its_tap(
    paused_vm: qemu.QemuProcess, net: Net, vm_name: str, tmp_path: Path
) -> None:
    assert qemu.is_alive(paused_vm)
    assert paused_vm.qmp_path == tmp_path / "vm" / "qmp.sock"
    with QMP(paused_vm.qmp_path) as qmp:
        assert qmp.execute("query-status")["status"] == "prelaunch"
        assert qmp.execute("query-name")["name"] == vm_name
    assert has_carrier(net.taps[0])
    assert not has_carrier(net.taps[1])  # nobody holds the second TAP yet


def test_qmp_error_is_a_host_error(paused_vm: qemu.QemuProcess) -> None:
    with QMP(paused_vm.qmp_path) as qmp, pytest.raises(HostError, match="no-such-command"):
        qmp.execute("no-such-command")


def test_nic_macs_reports_the_mac_given_to_qemu(paused_vm: qemu.QemuProcess) -> None:
    assert qemu_nic_macs(paused_vm.qmp_path) == {qemu.device_id("n0"): MAC0}


def test_hot_plugged_nic_appears_with_its_mac_and_takes_the_tap(
    paused_vm: qemu.QemuProcess, net: Net
) -> None:
    qemu.add_tap_nic(paused_vm.qmp_path, qemu.TapNic("n1", net.taps[1], MAC1, bootindex=2))
    assert qemu_nic_macs(paused_vm.qmp_path) == {
        qemu.device_id("n0"): MAC0,
        qemu.device_id("n1"): MAC1,
    }
    assert has_carrier(net.taps[1])

    # A paused guest cannot acknowledge the ACPI unplug: the device stays, the TAP is let go.
    assert qemu.remove_nic(paused_vm.qmp_path, "n1", timeout=0.5) is False
    assert not has_carrier(net.taps[1])
    assert has_carrier(net.taps[0])
    # Removing again (the caller retrying) is not an error.
    qemu.remove_nic(paused_vm.qmp_path, "n1", timeout=0.1)


def test_failed_device_add_rolls_back_the_netdev(paused_vm: qemu.QemuProcess, net: Net) -> None:
    with pytest.raises(HostError):
        qemu.add_tap_nic(paused_vm.qmp_path, qemu.TapNic("n1", net.taps[1], "not-a-mac"))
    assert not has_carrier(net.taps[1])
    # The netdev id is free again: the same NIC with a valid MAC goes in.
    qemu.add_tap_nic(paused_vm.qmp_path, qemu.TapNic("n1", net.taps[1], MAC1))
    assert qemu_nic_macs(paused_vm.qmp_path)[qemu.device_id("n1")] == MAC1


def test_forced_stop_leaves_no_process_and_frees_the_tap(
    paused_vm: qemu.QemuProcess, net: Net, vm_name: str
) -> None:
    qemu.stop_qemu(paused_vm, timeout=10, force=True)
    assert not qemu.is_alive(paused_vm)
    assert not Path(f"/proc/{paused_vm.pid}").exists()  # reaped, not a zombie
    assert pids_named(vm_name) == []
    assert not has_carrier(net.taps[0])


def test_graceful_stop_of_a_paused_guest_does_not_wait_for_acpi(
    paused_vm: qemu.QemuProcess, vm_name: str
) -> None:
    started = time.monotonic()
    qemu.stop_qemu(paused_vm, timeout=30, force=False)
    assert time.monotonic() - started < 5
    assert not Path(f"/proc/{paused_vm.pid}").exists()
    assert pids_named(vm_name) == []


def test_graceful_stop_falls_back_to_quit_when_the_guest_ignores_powerdown(
    vm_name: str, tmp_path: Path
) -> None:
    # Running, but only firmware with nothing to boot: nobody answers the power button.
    proc = qemu.start_qemu(vm_name, tmp_path / "vm", [], [])
    try:
        started = time.monotonic()
        qemu.stop_qemu(proc, timeout=1, force=False)
        elapsed = time.monotonic() - started
    finally:
        qemu.stop_qemu(proc, timeout=0, force=True)
    assert 1 <= elapsed < 8
    assert pids_named(vm_name) == []


def test_bad_raw_arg_fails_with_qemu_message_and_leaves_nothing(
    net: Net, vm_name: str, tmp_path: Path
) -> None:
    state = tmp_path / "vm"
    nic = qemu.TapNic("n0", net.taps[0], MAC0)
    with pytest.raises(HostError, match="no-such-option"):
        qemu.start_qemu(vm_name, state, [nic], ["-no-such-option"])
    assert pids_named(vm_name) == []
    assert not state.exists()
    assert not has_carrier(net.taps[0])


def test_qmp_that_does_not_answer_in_time_kills_qemu(vm_name: str, tmp_path: Path) -> None:
    state = tmp_path / "vm"
    state.mkdir()
    with pytest.raises(HostError, match="did not answer"):
        qemu.start_qemu(vm_name, state, [], ["-S"], ready_timeout=0.001)
    assert pids_named(vm_name) == []
    assert list(state.iterdir()) == []  # the directory was the caller's: kept, emptied


def test_is_alive_does_not_trust_a_recycled_pid(paused_vm: qemu.QemuProcess) -> None:
    other = qemu.QemuProcess(paused_vm.pid, paused_vm.start_time + 1, paused_vm.qmp_path)
    assert not qemu.is_alive(other)
    assert qemu.is_alive(paused_vm)


def test_start_refuses_a_state_dir_whose_qemu_still_runs(
    paused_vm: qemu.QemuProcess, vm_name: str, tmp_path: Path
) -> None:
    with pytest.raises(HostError, match="running QEMU"):
        qemu.start_qemu(f"{vm_name}2", tmp_path / "vm", [], ["-S"])
    with QMP(paused_vm.qmp_path) as qmp:
        assert qmp.execute("query-name")["name"] == vm_name
    assert pids_named(f"{vm_name}2") == []


def test_commas_in_name_and_state_dir_reach_qemu_intact(vm_name: str, tmp_path: Path) -> None:
    name = f"{vm_name},process=evil"
    state = tmp_path / "a,b=c"
    proc = qemu.start_qemu(name, state, [], ["-S"])
    try:
        assert proc.qmp_path == state / "qmp.sock"
        with QMP(proc.qmp_path) as qmp:
            assert qmp.execute("query-name")["name"] == name
        assert (state / "console.log").exists()
    finally:
        qemu.stop_qemu(proc, timeout=0, force=True)
