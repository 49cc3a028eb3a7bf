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


# Busybox only, so it runs in the busybox image on the host and in the test guest. busybox nc ends a
# connection when its stdin ends, and not when the peer's does: the receiver's stdin is a `sleep` as
# long as the stream, and it times a fixed amount of data rather than waiting for the end. It drops
# the first 1.5 MB (the connect, and the burst a limit's bucket lets through), then times the next
# MEASURED bytes with /proc/uptime (10 ms steps, over a second or more).
_SKIPPED = 1_500_000
_LISTENING = ":1389 "  # port 5001 in the local address column of /proc/net/tcp and tcp6


def tcp_rate(daemon: Daemon, sender: str, receiver: str, receiver_ip: str, seconds: float = 2.5) -> float:
    """Bits per second one TCP stream carries from sender to receiver (two containers), in its steady
    state: the time the receiver takes for SECONDS' worth of data at 10 Mbit/s, past the first 1.5 MB."""
    measured = int(seconds * 10_000_000 / 8)
    lasts = seconds * 3 + 5  # the sender's stream: the data at a third of the expected rate, at least
    receive = (
        f"sleep {lasts + 2:g} | nc -l -p 5001 | {{ head -c {_SKIPPED} >/dev/null; read s _ </proc/uptime; "
        f"head -c {measured} >/dev/null; read e _ </proc/uptime; echo {measured} $s $e; }}"
    )
    rx = subprocess.Popen(
        [str(BIN / "pincus"), "exec", receiver, "--", "sh", "-c", receive],
        env=daemon.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        listening = ("exec", receiver, "--", "grep", "-q", _LISTENING, "/proc/net/tcp", "/proc/net/tcp6")
        wait_for(
            lambda: daemon.cli(*listening, check=False).returncode == 0,
            timeout=30,
            what=f"{receiver} to listen",
        )
        send = f"timeout {lasts:g} nc {receiver_ip} 5001 </dev/zero"
        sending = subprocess.Popen(
            [str(BIN / "pincus"), "exec", sender, "--", "sh", "-c", send],
            env=daemon.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        assert rx.stdout is not None
        out = rx.stdout.readline()  # once the data is in: the sleep behind it need not end first
        sending.kill()
        sending.wait()
    finally:
        rx.kill()
        rx.wait()
    count, first, last = out.split()
    return int(count) * 8 / max(float(last) - float(first), 0.01)
