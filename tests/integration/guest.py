"""The project's tiny test guest (scripts/build-guest.sh) and a DHCP server for it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.pincus_testlib import NSEXEC, NetNS

REPO = Path(__file__).resolve().parents[2]


def guest_image() -> tuple[Path, Path]:
    out = subprocess.run(
        [str(REPO / "scripts" / "build-guest.sh")], check=True, capture_output=True, text=True, timeout=900
    ).stdout.splitlines()
    return Path(out[-2]), Path(out[-1])


def raw_qemu(kernel: Path, initrd: Path) -> str:
    return f"-kernel {kernel} -initrd {initrd} -append 'console=ttyS0 quiet'"


@contextmanager
def dnsmasq_on(ns: NetNS, bridge: str, tmp: Path, first: str, last: str) -> Iterator[Path]:
    """A dnsmasq the test runs itself on a bridge in its namespace; yields the lease file."""
    leases = tmp / "leases"
    proc = subprocess.Popen(
        [*NSEXEC, ns.name, "dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground",
         "--bind-interfaces", f"--interface={bridge}", "--except-interface=lo", "--no-ping", "--port=0",
         f"--dhcp-range={first},{last},1h", f"--dhcp-leasefile={leases}", f"--pid-file={tmp / 'pid'}",
         "--user=root"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.2)
        yield leases
    finally:
        proc.terminate()
        proc.wait(5)


def markers(console: Path) -> list[list[str]]:
    if not console.exists():
        return []
    text = console.read_text(errors="replace")
    return [line.split()[1:] for line in text.splitlines() if line.startswith("PINCUS-GUEST ")]


def wait_for_guest(console: Path, timeout: float = 120) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = markers(console)
        if ["DONE"] in found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"guest did not finish in {timeout:g} s: {markers(console)}")
