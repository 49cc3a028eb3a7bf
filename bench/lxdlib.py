"""LXD 5.0.2 for side-by-side figures: started by hand (no systemd here), a tiny image built offline,
the `lxc` Go client pointed at either daemon, and cleanup of everything made.

Used by bench_go_client.py and bench_lxd.py. LXD runs on its own LXD_DIR in the bench's tmp dir
(never the system's /var/lib/lxd), with a `dir` pool there and no network of its own; its bridges
are made in the host's network namespace (LXD shares it) and removed by cleanup(), as are its
instances, images and profiles, its daemon, its mount namespace and the cgroups it left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# The image's init: busybox sh as pid 1. A trapped signal interrupts `wait` (not a foreground
# sleep), so `lxc stop` (SIGPWR) ends it at once, as SIGTERM ends pincus's init.
INIT_SCRIPT = """#!/bin/busybox sh
trap 'exit 0' PWR TERM INT
while :; do /bin/busybox sleep 3600 & wait $!; done
"""


class LxcFailed(Exception):
    """An lxc command failed; the message names the daemon, the command and lxc's own output."""


def lxc_env(socket_path: Path, conf: Path) -> dict[str, str]:
    """Environment for `lxc` against the daemon at socket_path, with a throw-away LXD_CONF."""
    env = {k: v for k, v in os.environ.items() if k not in ("LXD_DIR", "LXD_SOCKET", "LXD_CONF")}
    conf.mkdir(exist_ok=True)
    return {**env, "LXD_SOCKET": str(socket_path), "LXD_CONF": str(conf)}


def run_lxc(
    daemon: str, env: dict[str, str], *args: str, debug: bool = False, stdin: str | None = None
) -> float:
    """One lxc command; its wall time in seconds. Raises LxcFailed (with the --debug tail if asked)."""
    argv = ["lxc", *(["--debug"] if debug else []), *args]
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, text=True, capture_output=True, timeout=300, input=stdin)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        lines = (r.stderr + r.stdout).strip().splitlines()
        tail = "\n".join("    " + (ln if len(ln) <= 400 else ln[:400] + " ...") for ln in lines[-30:])
        raise LxcFailed(f"lxc against {daemon} failed ({r.returncode}): {' '.join(argv)}\n{tail}")
    return elapsed


def links_in(pid: int) -> list[str]:
    """The link names in the network namespace of process PID."""
    argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "link", "show"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines())


def load() -> str:
    """/proc/loadavg's three averages and the core count: the machine is shared."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def lxc_version() -> str:
    return subprocess.run(["lxc", "--version"], capture_output=True, text=True).stdout.strip()


def build_image(where: Path) -> Path:
    """A unified LXD image (metadata.yaml + rootfs/, tar.xz) of Debian's busybox-static and an init
    that sleeps until told to stop; built offline, about 1 MB. Returns the tarball.

    Not scripts/build-image.sh's image: that one boots busybox's init, and a timed `lxc stop`
    would then measure that init's shutdown sequence rather than LXD."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise RuntimeError("no /bin/busybox: install Debian's busybox-static")
    img = where / "image"
    rootfs = img / "rootfs"
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "run", "var", "root"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    init = rootfs / "sbin" / "init"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
    (img / "metadata.yaml").write_text(
        f"architecture: x86_64\ncreation_date: {int(time.time())}\n"
        "properties:\n  description: busybox sleeping\n  os: busybox\n"
    )
    tarball = where / "image.tar.xz"
    subprocess.run(["tar", "-C", str(img), "-cJf", str(tarball), "metadata.yaml", "rootfs"], check=True)
    return tarball


class Lxd:
    """LXD 5.0.2 started by hand on its own LXD_DIR; never the system's (/var/lib/lxd).

    It runs in a mount namespace of its own (a slave of the host's, kept by a bind mount on
    a file in the tmp dir), so the tmpfs it mounts (shmounts/, devlxd/) never reach the host
    and go with the namespace; it still shares the host's network namespace, where its bridges are.
    Every instance, image, profile and bridge made through this object is removed by cleanup().
    """

    def __init__(self, work: Path, tag: str) -> None:
        self.work = work
        self.tag = tag
        self.dir = work / "lxd"
        self.log = work / "lxd.log"
        self.mntns = work / "lxd.mntns"
        self.name = tag  # make_container()'s container
        self.image = f"{tag}img"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "LXD_DIR": str(self.dir)}
        self.env.pop("LXD_SOCKET", None)
        self.lxc = lxc_env(self.dir / "unix.socket", work / "lxc-conf-lxd")
        self.cgroups_before: set[str] = set()
        self.instances: list[str] = []
        self.images: list[str] = []
        self.profiles: list[str] = []
        self.bridges: list[str] = []

    @staticmethod
    def install() -> None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "--no-install-recommends", "lxd"]
        print("installing Debian's lxd:", " ".join(argv), flush=True)
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, timeout=900)

    def _run(self, *argv: str, stdin: str | None = None, timeout: float = 120, check: bool = True) -> str:
        r = subprocess.run(argv, env=self.env, input=stdin, text=True, capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r.stdout

    def _in_ns(self, script: str, check: bool = True) -> str:
        """A shell script in LXD's mount namespace."""
        return self._run("nsenter", f"--mount={self.mntns}", "--", "sh", "-c", script, check=check)

    def _make_mntns(self) -> None:
        self.mntns.touch()
        self._run("unshare", f"--mount={self.mntns}", "--propagation", "slave", "true")
        # LXD finds a NIC's parent in /sys/class/net: the /sys it sees must show the host's links.
        # A sysfs mounted from another network namespace stacked on the host's /sys (left by
        # someone's bad exit) hides them, and /sys/fs/cgroup with them: unstack it here only.
        for _ in range(5):
            if self._in_ns("test -e /sys/class/net/lo && echo ok", check=False).strip() == "ok":
                break
            sys.stdout.flush()
            print("note: this host's /sys is overmounted by another network namespace's sysfs; "
                  "unmounted in LXD's mount namespace only", file=sys.stderr)  # fmt: skip
            self._in_ns("umount /sys")
        else:
            raise RuntimeError("no /sys showing the host's network interfaces for LXD")
        self.cgroups_before = self._lxc_cgroups()

    def start(self) -> None:
        self.dir.mkdir(mode=0o711)
        self._make_mntns()
        with open(self.work / "lxd.stderr", "ab") as out:
            argv = ["nsenter", f"--mount={self.mntns}", "--",
                    "lxd", "--group", "root", f"--logfile={self.log}"]  # fmt: skip
            self.proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=out, start_new_session=True)
        try:
            self._run("lxd", "waitready", "--timeout", "60", timeout=90)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\nlxd log:\n{self.log_tail()}") from None
        preseed = (
            "storage_pools:\n- name: default\n  driver: dir\n"
            "profiles:\n- name: default\n  devices:\n"
            "    root:\n      path: /\n      pool: default\n      type: disk\n"
        )
        self._run("lxd", "init", "--preseed", stdin=preseed)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text().splitlines()[-15:])
        return "(no log)"

    def version(self) -> str:
        return self._run("lxd", "--version").strip()

    def lxc_cmd(self, *args: str, stdin: str | None = None) -> float:
        return run_lxc("LXD", self.lxc, *args, stdin=stdin)

    def add_bridge(self, name: str) -> None:
        """A Linux bridge, up, in the host's namespace (LXD's); deleted by cleanup()."""
        subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
        self.bridges.append(name)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)

    def import_image(self, tarball: Path | None = None) -> None:
        """build_image()'s image (or TARBALL, a unified image), imported once under the alias self.image."""
        if self.image in self.images:
            return
        tarball = tarball or build_image(self.work)
        self.images.append(self.image)
        self.lxc_cmd("image", "import", str(tarball), "--alias", self.image)

    def init(self, name: str, *devices: list[str]) -> None:
        """An instance from the image (stopped), with devices given as `config device add` arguments."""
        self.import_image()
        self.instances.append(name)
        self.lxc_cmd("init", self.image, name, "--quiet")
        for dev in devices:
            self.lxc_cmd("config", "device", "add", name, *dev)

    def make_container(self) -> None:
        """bench_go_client.py's container: self.name from the image, started, no NIC."""
        self.init(self.name)
        self.lxc_cmd("start", self.name)

    def wait_stoppable(self, name: str, timeout: float = 30) -> None:
        """Wait until the container's init has trapped SIGPWR. `lxc start` returns before the init
        script has run its `trap`, and a pid 1 ignores a signal it has no handler for, so an
        early `lxc stop` would wait for ever."""
        pid = self.init_pid(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("SigCgt:") and int(line.split()[1], 16) >> (signal.SIGPWR - 1) & 1:
                        return
            time.sleep(0.01)
        raise RuntimeError(f"LXD container {name}: init pid {pid} did not trap SIGPWR in {timeout:g}s")

    def init_pid(self, name: str | None = None) -> int:
        path = f"/1.0/instances/{name or self.name}/state"
        out = subprocess.run(["lxc", "query", path], env=self.lxc, check=True, capture_output=True,
                             text=True).stdout  # fmt: skip
        return int(json.loads(out)["pid"])

    def _lxc_cgroups(self) -> set[str]:
        """The lxc.* cgroups (liblxc leaves lxc.pivot behind), as LXD's namespace sees them."""
        out = self._in_ns("ls -d /sys/fs/cgroup/*/lxc.* 2>/dev/null", check=False)
        return set(out.split())

    def cleanup(self) -> None:
        """Everything this LXD made, each step whatever the previous did."""
        if self.proc is not None and self.proc.poll() is None:
            for name in reversed(self.instances):
                with contextlib.suppress(Exception):
                    self.lxc_cmd("delete", "--force", name)
            for image in self.images:
                with contextlib.suppress(Exception):
                    self.lxc_cmd("image", "delete", image)
            for profile in self.profiles:
                with contextlib.suppress(Exception):
                    self.lxc_cmd("profile", "delete", profile)
            with contextlib.suppress(Exception):
                self._run("lxd", "shutdown", "--timeout", "30", timeout=60)
        if self.proc is not None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self.mntns.exists() and os.path.ismount(self.mntns):
            with contextlib.suppress(Exception):
                self._kill_leftovers()
            # New empty cgroups only, deepest first; a non-empty one still runs something: left.
            new = sorted(self._lxc_cgroups() - self.cgroups_before, key=lambda p: -p.count("/"))
            if new:
                self._in_ns(" ".join(["rmdir", *new]) + " 2>/dev/null", check=False)
            subprocess.run(["umount", str(self.mntns)], capture_output=True)
        for bridge in self.bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        self.bridges = []

    def _kill_leftovers(self) -> None:
        """`lxd forkstart`/monitor processes (their command line names our LXD_DIR) and anything
        left in our containers' cgroups; never a process that is not ours."""
        pids: set[int] = set()
        needles = (f"{self.dir}/".encode(), str(self.log).encode())
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = (entry / "cmdline").read_bytes()
                    if any(needle in cmdline for needle in needles):
                        pids.add(int(entry.name))
        for name in self.instances:
            procs = f"/sys/fs/cgroup/*/lxc.payload.{name}/cgroup.procs"
            out = self._in_ns(f"cat {procs} 2>/dev/null", check=False)
            pids |= {int(p) for p in out.split() if p.isdigit()}
        pids.discard(os.getpid())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            time.sleep(0.5)
