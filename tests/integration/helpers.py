"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import yaml

from tests.pincus_testlib import Daemon


def config(daemon: Daemon, name: str) -> dict[str, str]:
    doc = yaml.safe_load(daemon.cli("config", "show", name).stdout)
    return dict(doc.get("config") or {})


def in_container(daemon: Daemon, name: str, *argv: str, check: bool = True) -> str:
    return daemon.cli("exec", name, "--", *argv, check=check).stdout


def ping(daemon: Daemon, name: str, address: str, count: int = 1) -> bool:
    r = daemon.cli("exec", name, "--", "busybox", "ping", "-c", str(count), "-W", "2", address, check=False)
    return r.returncode == 0


def wait_for(cond: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ip_link_snapshot(daemon: Daemon) -> list[tuple[str, str | None]]:
    return sorted((link["ifname"], link.get("master")) for link in daemon.ns.ipj("link", "show"))
