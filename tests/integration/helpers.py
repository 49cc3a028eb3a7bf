"""Small helpers shared by the integration tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import yaml

from tests.pincus_testlib import BIN, Daemon


def config(daemon: Daemon, name: str) -> dict[str, str]:
    doc = yaml.safe_load(daemon.cli("config", "show", name).stdout)
    return dict(doc.get("config") or {})


def in_container(daemon: Daemon, name: str, *argv: str, check: bool = True) -> str:
    return daemon.cli("exec", name, "--", *argv, check=check).stdout


def ping(daemon: Daemon, name: str, address: str, count: int = 1) -> bool:
    r = daemon.cli("exec", name, "--", "busybox", "ping", "-c", str(count), "-W", "2", address, check=False)
    return r.returncode == 0


def with_host_usr(daemon: Daemon, name: str) -> None:
    """The host's /usr, read-only, inside container NAME: iproute2's `ip` and python3 for tests
    that need more than the busybox image's applets (the image's /lib and /lib64 lead into /usr)."""
    usr = ("source=/usr", "path=/usr", "readonly=true")
    daemon.cli("config", "device", "add", name, "hostusr", "disk", *usr)


def bridged_container(
    daemon: Daemon, name: str, bridge: str, v4: str, v6: str | None = None, *keys: str
) -> str:
    """A started container with eth0 bridged to bridge (with keys) and these addresses; its host end."""
    daemon.cli("init", "busybox", name)
    with_host_usr(daemon, name)
    daemon.cli("config", "device", "add", name, "eth0", "nic", "nictype=bridged", f"parent={bridge}", *keys)
    daemon.cli("start", name)
    in_container(daemon, name, "ip", "addr", "add", f"{v4}/24", "dev", "eth0")
    if v6:
        in_container(daemon, name, "ip", "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
    return config(daemon, name)["volatile.eth0.host_name"]


def wait_for(cond: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ip_link_snapshot(daemon: Daemon) -> list[tuple[str, str | None]]:
    return sorted((link["ifname"], link.get("master")) for link in daemon.ns.ipj("link", "show"))


# Busybox only, so it runs in the busybox image on the host and in the test guest: the receiver
# times from its first byte to the end of the stream with /proc/uptime (10 ms steps, over seconds).
_RECEIVER = (
    "nc -l -p 5001 | { dd bs=1 count=1 of=/dev/null 2>/dev/null; read s _ </proc/uptime; "
    "c=$(wc -c); read e _ </proc/uptime; echo $c $s $e; }"
)


def tcp_rate(daemon: Daemon, sender: str, receiver: str, receiver_ip: str, seconds: float = 2.5) -> float:
    """Bits per second one TCP stream carries from sender to receiver (two containers)."""
    rx = subprocess.Popen(
        [str(BIN / "pincus"), "exec", receiver, "--", "sh", "-c", _RECEIVER],
        env=daemon.env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        send = f"timeout {seconds:g} nc {receiver_ip} 5001 </dev/zero"
        daemon.cli("exec", sender, "--", "sh", "-c", send, check=False, timeout=60)
        out, _ = rx.communicate(timeout=60)
    finally:
        rx.kill()
        rx.wait()
    count, first, last = out.split()
    return int(count) * 8 / max(float(last) - float(first), 0.01)
