"""Netns handles against the real kernel: bind, wire a NIC through, outlive the process, release."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pincus.errors import HostError
from pincus.host.netns import bind_netns, netns_is_bound, release_netns
from tests.pincus_testlib import NetNS


@pytest.fixture
def netns_process() -> Iterator[subprocess.Popen[bytes]]:
    """A sleep in a netns of its own (unshare execs it: its pid is the Popen's)."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/exe").endswith("unshare"):
            assert time.monotonic() < deadline, "unshare did not exec sleep"
            time.sleep(0.005)
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def handle(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "netns"
    try:
        yield path
    finally:
        release_netns(path)


def links_in(handle: Path) -> set[str]:
    out = subprocess.run(
        ["nsenter", f"--net={handle}", "ip", "-o", "link", "show"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_bound_handle_is_the_process_netns(netns_process: subprocess.Popen[bytes], handle: Path) -> None:
    assert not netns_is_bound(handle)
    bind_netns(netns_process.pid, handle)
    assert netns_is_bound(handle)
    assert os.stat(handle).st_ino == os.stat(f"/proc/{netns_process.pid}/ns/net").st_ino
    assert os.stat(handle).st_ino != os.stat("/proc/self/ns/net").st_ino


def test_nic_wired_through_the_handle_stays_after_the_process_dies(
    netns_process: subprocess.Popen[bytes], handle: Path, netns: NetNS, prefix: str
) -> None:
    bind_netns(netns_process.pid, handle)
    peer = netns.add_standin_nic(f"{prefix}h")
    # `ip link set ... netns` takes a path (anything with a "/"), unlike `ip -n`.
    netns.ip("link", "set", "dev", f"{prefix}h", "netns", str(handle))
    assert links_in(handle) == {"lo", f"{prefix}h"}
    netns_process.kill()
    netns_process.wait()
    assert links_in(handle) == {"lo", f"{prefix}h"}
    assert netns.link(peer) is not None

    release_netns(handle)
    assert not handle.exists()
    # The last reference is gone: the kernel destroys the netns and the veth pair with it.
    deadline = time.monotonic() + 5
    while netns.link(peer) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert netns.link(peer) is None


def test_release_of_a_missing_or_unbound_handle_is_fine(tmp_path: Path) -> None:
    release_netns(tmp_path / "never-bound")
    plain = tmp_path / "plain"
    plain.write_text("")
    assert not netns_is_bound(plain)
    release_netns(plain)
    assert not plain.exists()


def test_release_works_while_someone_holds_the_handle_open(
    netns_process: subprocess.Popen[bytes], handle: Path
) -> None:
    bind_netns(netns_process.pid, handle)
    fd = os.open(handle, os.O_RDONLY)
    try:
        release_netns(handle)
    finally:
        os.close(fd)
    assert not netns_is_bound(handle)
    assert not handle.exists()


def test_release_undoes_a_handle_bound_twice(netns_process: subprocess.Popen[bytes], handle: Path) -> None:
    bind_netns(netns_process.pid, handle)
    subprocess.run(["mount", "--bind", f"/proc/{netns_process.pid}/ns/net", str(handle)], check=True)
    release_netns(handle)
    assert not handle.exists()
    assert str(handle) not in Path("/proc/self/mountinfo").read_text()


def test_binding_twice_is_refused(netns_process: subprocess.Popen[bytes], handle: Path) -> None:
    bind_netns(netns_process.pid, handle)
    with pytest.raises(HostError, match="already bound"):
        bind_netns(os.getpid(), handle)
    assert os.stat(handle).st_ino == os.stat(f"/proc/{netns_process.pid}/ns/net").st_ino


def test_binding_a_missing_process_fails_and_leaves_no_file(handle: Path) -> None:
    with pytest.raises(HostError, match="bind netns of pid"):
        bind_netns(2**22 + 1, handle)  # above any pid_max
    assert not handle.exists()


def test_binding_into_a_missing_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="No such file"):
        bind_netns(os.getpid(), tmp_path / "missing" / "netns")
