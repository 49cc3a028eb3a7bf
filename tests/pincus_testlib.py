"""Fixtures' machinery: a private network namespace per test with its own pincusd inside it."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pincus.host.qmp import QMP, QMP_TIMEOUT

BIN = Path(sys.executable).parent
# The test guest runs under TCG, several times slower than the host when the host is busy.
DAEMON_START_TIMEOUT = 60.0 if os.environ.get("PINCUS_IN_TEST_GUEST") == "1" else 20.0
# `ip netns exec`, but also where / is not a mount point (a chroot).
NSEXEC = [sys.executable, "-m", "pincus.host.nsexec"]


def unique_prefix() -> str:
    """4-6 chars, unique across parallel runs; leaves room for suffixes within 15 bytes."""
    return "t" + secrets.token_hex(2)


class NetNS:
    """A throw-away network namespace; every test interface lives inside one."""

    def __init__(self, name: str) -> None:
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.ip("link", "set", "lo", "up")

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # nsenter, not `ip -n`: iproute2 remounts /sys for -n, which fails where / is not a mount point.
        return subprocess.run(
            ["nsenter", f"--net={self.path}", "ip", *args], check=check, text=True, capture_output=True
        )

    def ipj(self, *args: str) -> Any:
        out = self.ip("-j", *args).stdout
        return json.loads(out) if out.strip() else []

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*NSEXEC, self.name, *argv],
            check=check,
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    def link(self, name: str) -> dict[str, Any] | None:
        for link in self.ipj("link", "show"):
            if link["ifname"] == name:
                return dict(link)
        return None

    def link_names(self) -> set[str]:
        return {link["ifname"] for link in self.ipj("link", "show")}

    def add_bridge(self, name: str) -> None:
        self.ip("link", "add", name, "type", "bridge")
        self.ip("link", "set", name, "up")

    def add_standin_nic(self, name: str) -> str:
        """This kernel has no dummy: one end of a veth pair stands in for a physical NIC."""
        peer = name[:12] + "p"
        self.ip("link", "add", name, "type", "veth", "peer", "name", peer)
        return peer

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "pids", self.name], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


# The alias of scripts/build-image.sh's busybox image in every test daemon: imported on first use
# (a `pincus init|launch busybox NAME`, or Daemon.image()), not at every daemon start.
IMAGE = "busybox"


def image_source() -> dict[str, str]:
    """An instance create's "source" for the test image (call Daemon.image() first)."""
    return {"type": "image", "alias": IMAGE}


class Daemon:
    """pincusd on its own PINCUS_DIR inside a NetNS; `cli` and `api` talk to it."""

    def __init__(self, ns: NetNS, pincus_dir: Path) -> None:
        self.ns = ns
        self.dir = pincus_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self._image_imported = False

    def image(self) -> str:
        """The test image's alias, imported into this daemon the first time it is asked for."""
        if not self._image_imported:
            from tests.imagelib import busybox_image

            self.cli("image", "import", str(busybox_image()), "--alias", IMAGE)
            self._image_imported = True
        return IMAGE

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PINCUS_DIR": str(self.dir),
            # "auto" subnets of managed bridges come from the test ranges only.
            "PINCUS_AUTO_IPV4_POOL": "10.250.0.0/16",
            "PINCUS_AUTO_IPV6_POOL": "fd42:250::/32",
        }

    def start(self, timeout: float = DAEMON_START_TIMEOUT) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "pincusd.stderr", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*NSEXEC, self.ns.name, str(BIN / "pincusd"), "--debug"],
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pincusd exited: {(self.dir / 'pincusd.stderr').read_text()[-2000:]}")
            r = self.cli("admin", "waitready", "--timeout", "0.2", check=False)
            if r.returncode == 0:
                return
        raise RuntimeError("pincusd did not become ready")

    def shut_down(self) -> None:
        """Stop its instances through it (SIGTERM leaves them running by design), then the daemon,
        then anything of its that is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.cli("admin", "shutdown", "--timeout", "2", check=False, timeout=60)
        self.stop()
        self.stop(signal.SIGKILL)
        kill_leftovers(self.dir)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        if args[:1] in (("init",), ("launch",)) and IMAGE in args[1:2]:
            self.image()
        r = subprocess.run(
            [str(BIN / "pincus"), *args],
            env=self.env,
            text=True,
            capture_output=True,
            # No input given: an empty stdin, never the runner's own (a command may read it).
            **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}),
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"pincus {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """Run a command that must fail as the CLI contract says; return its error message."""
        r = self.cli(*args, check=False, stdin=stdin)
        assert r.returncode == 1, f"expected exit 1, got {r.returncode}: {r.stdout}{r.stderr}"
        assert r.stderr.startswith("Error: "), r.stderr
        return r.stderr[len("Error: ") :].strip()

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        status, _, doc = self.api_full(method, path, body)
        return status, doc

    def api_full(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """(status, response headers with lower-case names, envelope) of one raw request."""
        data = b"" if body is None else json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(60)
            s.connect(str(self.dir / "unix.socket"))
            s.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
                f"{extra}Connection: close\r\n\r\n".encode()
                + data
            )
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        head, _, payload = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        found = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), found, json.loads(payload)

    def wait_op(self, envelope: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """The finished operation an async response started."""
        assert envelope["type"] == "async", envelope
        status, doc = self.api("GET", f"{envelope['operation']}/wait?timeout={timeout}")
        assert status == 200, doc
        return dict(doc["metadata"])

    def db_dump(self) -> list[str]:
        """Every row of the store, to prove a refused request changed nothing."""
        import sqlite3

        conn = sqlite3.connect(self.dir / "pincus.db")
        try:
            return list(conn.iterdump())
        finally:
            conn.close()


def kill_leftovers(path: Path) -> None:
    """SIGKILL what still runs from a test's PINCUS_DIR (dnsmasq, QEMU, inits outlive pincusd),
    then whatever is left in its daemon's cgroups, and the groups."""
    needle = str(path).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    remove_daemon_groups(path)


def remove_daemon_groups(path: Path, timeout: float = 5.0) -> None:
    """The cgroups of the daemon of PINCUS_DIR PATH, deepest first, after SIGKILL to every process in
    them: a container's init names no PINCUS_DIR on its command line, and a killed daemon (a cluster
    member, a crash test) leaves its containers running."""
    from pincus.host import cgroups
    from pincus.server.daemon import daemon_tag

    lay = cgroups.layout()
    tops = [point / lay.own[point] / f"pincus-{daemon_tag(path)}" for point in set(lay.mounts.values())]
    for group in (g for top in tops for g in sorted(top.glob("**/"), key=lambda p: -len(p.parts))):
        deadline = time.monotonic() + timeout
        while group.is_dir():
            try:
                pids = (group / "cgroup.procs").read_text().split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                group.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def qemu_nic_macs(qmp_path: Path, timeout: float = QMP_TIMEOUT) -> dict[str, str]:
    """QEMU device id -> MAC of every virtio-net device, as QEMU itself reports it."""
    macs: dict[str, str] = {}
    with QMP(qmp_path, timeout) as qmp:
        for child in qmp.execute("qom-list", path="/machine/peripheral"):
            if child.get("type") != "child<virtio-net-pci>":
                continue
            name = child["name"]
            macs[name] = qmp.execute("qom-get", path=f"/machine/peripheral/{name}", property="mac")
    return macs
