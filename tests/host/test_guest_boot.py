"""A real guest (scripts/build-guest.sh) boots under start_qemu on a TAP and gets a DHCP lease.

The bridge lives in the host namespace because QEMU opens its TAP there; it carries one
10.250.x.0/24 subnet that no other interface on the host uses, and dnsmasq answers only on it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pincus.host import qemu
from tests.pincus_testlib import qemu_nic_macs

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 120.0


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def free_subnet() -> int:
    """The x of a 10.250.x.0/24 that no address or route on the host touches yet."""
    used = ip("-j", "-4", "addr") + ip("-j", "-4", "route", "show", "table", "all")
    start = 100 + os.getpid() % 100
    for step in range(155):
        x = (start + step) % 155 + 100
        if f'"10.250.{x}.' not in used:
            return x
    pytest.skip("no free 10.250.x.0/24 for the guest test")


@dataclass
class GuestNet:
    bridge: str
    tap: str
    spare_tap: str  # enslaved and up, for a hot-plugged NIC
    router: str
    pool: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]


@pytest.fixture(scope="module")
def guest_image() -> tuple[Path, Path]:
    out = subprocess.run(
        [str(REPO / "scripts" / "build-guest.sh")],
        check=True, capture_output=True, text=True, timeout=900,
    ).stdout.splitlines()  # fmt: skip
    kernel, initrd = Path(out[-2]), Path(out[-1])
    assert kernel.is_file() and initrd.is_file()
    return kernel, initrd


@pytest.fixture
def guest_net(prefix: str, tmp_path: Path) -> Iterator[GuestNet]:
    """A bridge with a /24, dnsmasq serving a pool on it, and a TAP enslaved and up."""
    x = free_subnet()
    net = GuestNet(
        bridge=f"{prefix}br",
        tap=f"{prefix}t0",
        spare_tap=f"{prefix}t1",
        router=f"10.250.{x}.1",
        pool=(ipaddress.IPv4Address(f"10.250.{x}.100"), ipaddress.IPv4Address(f"10.250.{x}.150")),
    )
    dnsmasq: subprocess.Popen[bytes] | None = None
    try:
        ip("link", "add", net.bridge, "type", "bridge")
        Path(f"/proc/sys/net/ipv6/conf/{net.bridge}/disable_ipv6").write_text("1")
        ip("addr", "add", f"{net.router}/24", "dev", net.bridge)
        ip("link", "set", net.bridge, "up")
        for tap in (net.tap, net.spare_tap):
            ip("tuntap", "add", tap, "mode", "tap")
            Path(f"/proc/sys/net/ipv6/conf/{tap}/disable_ipv6").write_text("1")
            ip("link", "set", tap, "master", net.bridge)
            ip("link", "set", tap, "up")
        pidfile = tmp_path / "dnsmasq.pid"
        dnsmasq = subprocess.Popen(
            [
                "dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground",
                "--bind-interfaces", f"--interface={net.bridge}", "--except-interface=lo",
                "--no-ping", "--port=0",
                f"--dhcp-range={net.pool[0]},{net.pool[1]},255.255.255.0,1h",
                f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={pidfile}",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not pidfile.exists():
            if dnsmasq.poll() is not None or time.monotonic() > deadline:
                err = dnsmasq.stderr.read().decode() if dnsmasq.stderr else ""
                pytest.fail(f"dnsmasq did not start: {err}")
            time.sleep(0.02)
        yield net
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            try:
                dnsmasq.wait(timeout=5)
            except subprocess.TimeoutExpired:
                dnsmasq.kill()
                dnsmasq.wait()
        for name in (net.tap, net.spare_tap, net.bridge):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def guest_mac(n: int) -> str:
    return f"52:54:00:fb:{os.getpid() % 256:02x}:{n:02x}"


def markers(console: Path) -> list[list[str]]:
    try:
        text = console.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [
        line.split()[1:] for line in text.replace("\r", "").splitlines() if line.startswith("PINCUS-GUEST ")
    ]


# VM tests run one at a time (one TCG guest keeps a core busy): one xdist group.
@pytest.mark.slow
@pytest.mark.xdist_group("guest-vm")
@pytest.mark.timeout(300)
def test_guest_boots_on_a_tap_and_leases_an_address_for_the_mac_we_gave(
    guest_image: tuple[Path, Path], guest_net: GuestNet, prefix: str, tmp_path: Path
) -> None:
    kernel, initrd = guest_image
    mac = guest_mac(0)
    state = tmp_path / "vm"
    nic = qemu.TapNic("n0", guest_net.tap, mac)
    raw = ["-kernel", str(kernel), "-initrd", str(initrd), "-append", "console=ttyS0 quiet"]

    started = time.monotonic()
    proc = qemu.start_qemu(f"{prefix}-guest", state, [nic], raw)
    try:
        console = state / qemu.CONSOLE_LOG
        deadline = started + BOOT_TIMEOUT
        while ["DONE"] not in markers(console) and qemu.is_alive(proc):
            assert time.monotonic() < deadline, f"no DONE after {BOOT_TIMEOUT}s: {markers(console)}"
            time.sleep(0.1)
        boot_to_done = time.monotonic() - started
        # The guest's own poweroff must end QEMU: nobody else stops it here.
        exit_deadline = time.monotonic() + 20
        while qemu.is_alive(proc) and time.monotonic() < exit_deadline:
            time.sleep(0.05)
        exited_by_itself = not qemu.is_alive(proc)
    finally:
        qemu.stop_qemu(proc, timeout=0, force=True)
    print(f"guest boot-to-DONE {boot_to_done:.2f}s")

    seen = markers(console)
    assert ["DONE"] in seen, console.read_text(errors="replace")
    assert ["MAC", "eth0", mac] in seen
    leases = [m for m in seen if m[:2] == ["LEASE", "eth0"]]
    assert len(leases) == 1, seen
    address = ipaddress.IPv4Address(leases[0][2])
    assert guest_net.pool[0] <= address <= guest_net.pool[1]
    assert ["PING", "ok"] in seen
    assert exited_by_itself
    # dnsmasq's view: the lease belongs to the MAC QEMU was given.
    assert re.search(rf"\b{mac}\s+{address}\b", (tmp_path / "leases").read_text())


def wait_for(console: Path, marker: list[str], proc: qemu.QemuProcess, timeout: float) -> list[str]:
    """Wait for a marker line that starts with `marker` while QEMU lives; return the line."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in markers(console) if m[: len(marker)] == marker]
        if found:
            return found[0]
        assert qemu.is_alive(proc), f"QEMU exited before {marker}: {markers(console)}"
        assert time.monotonic() < deadline, f"no {marker} after {timeout}s: {markers(console)}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.xdist_group("guest-vm")
@pytest.mark.timeout(300)
def test_live_guest_takes_a_hot_plugged_nic_acks_its_unplug_and_powers_off_gracefully(
    guest_image: tuple[Path, Path], guest_net: GuestNet, prefix: str, tmp_path: Path
) -> None:
    kernel, initrd = guest_image
    state = tmp_path / "vm"
    first = qemu.TapNic("n0", guest_net.tap, guest_mac(0))
    second = qemu.TapNic("n1", guest_net.spare_tap, guest_mac(1))
    append = "console=ttyS0 quiet pincus.hold=100"
    raw = ["-kernel", str(kernel), "-initrd", str(initrd), "-append", append]
    console = state / qemu.CONSOLE_LOG

    proc = qemu.start_qemu(f"{prefix}-live", state, [first], raw)
    try:
        wait_for(console, ["HOLD", "100"], proc, BOOT_TIMEOUT)

        started = time.monotonic()
        qemu.add_tap_nic(proc.qmp_path, second)
        hotplug = time.monotonic() - started
        wait_for(console, ["MAC", "eth1", second.mac], proc, 30)
        assert qemu_nic_macs(proc.qmp_path)[qemu.device_id("n1")] == second.mac
        lease = wait_for(console, ["LEASE", "eth1"], proc, 30)
        assert guest_net.pool[0] <= ipaddress.IPv4Address(lease[2]) <= guest_net.pool[1]

        started = time.monotonic()
        assert qemu.remove_nic(proc.qmp_path, "n1", timeout=20) is True  # the guest acked
        unplug = time.monotonic() - started
        assert qemu.device_id("n1") not in qemu_nic_macs(proc.qmp_path)
        wait_for(console, ["GONE", "eth1"], proc, 10)

        started = time.monotonic()
        qemu.stop_qemu(proc, timeout=30, force=False)
        graceful = time.monotonic() - started
    finally:
        qemu.stop_qemu(proc, timeout=0, force=True)
    print(f"live guest: hot-plug {hotplug:.3f}s, acked unplug {unplug:.2f}s, graceful stop {graceful:.2f}s")
    assert ["POWERBUTTON"] in markers(console)  # it was the guest that powered off, not `quit`
    assert graceful < 30
    assert not qemu.is_alive(proc)
