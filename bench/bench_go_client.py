"""The same Go client, Debian's LXD 5.0.2 `lxc`, against pincusd and against LXD 5.0.2 itself.

    .venv/bin/python bench/bench_go_client.py [-n 20] [--install-lxd]   # both daemons, ratio
    .venv/bin/python bench/bench_go_client.py --short                   # pincusd only, 2 pairs

Times, n times each and interleaved (a pincusd pair, then an LXD pair), the pair

    lxc config device add C eth1 nic ...
    lxc config device remove C eth1

on a running container, with the same `lxc` binary and a throw-away LXD_CONF; only the daemon
behind LXD_SOCKET differs. On pincusd the NIC is `network=phys0`, a physical network whose
parent is a Linux bridge; on LXD it is `nictype=bridged parent=BR` on a bridge of the same
kind. Both end as the same kernel work: a veth born in the container, enslaved to the bridge.

pincusd runs as in bench_device_add.py: its own PINCUS_DIR, in a throw-away network namespace
with the bridge in it; its container is made with pincus's own CLI. LXD is started by hand
(there is no systemd) on its own LXD_DIR in the same tmp dir, in the host's network namespace
and a mount namespace of its own; it is set up with `lxd init --preseed` (a `dir` pool, no
network), an image built here offline (busybox-static, an /sbin/init that sleeps) and a
bridge named bgc<hex>br in the host namespace. `--install-lxd` first installs Debian's `lxd`
package (a manual benchmark: never from setup.sh).

Cleanup runs whatever happens (failure, Ctrl-C, SIGTERM): both containers deleted, the image
deleted, LXD shut down (then killed; its mount namespace and new empty cgroups removed),
pincusd stopped, leftover processes killed, the bridge, the namespace and the tmp dir deleted.
Exits non-zero, with the failing lxc command and the tail of its --debug output, if lxc fails
against pincusd.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_device_add import Pincus, kill_leftovers, ms_stats

AIM = 0.5  # pincusd pair / LXD pair


class LxcFailed(Exception):
    """An lxc command failed; the message names the daemon, the command and lxc's own output."""


def lxc_env(socket_path: Path, conf: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LXD_DIR", "LXD_SOCKET", "LXD_CONF")}
    conf.mkdir(exist_ok=True)
    return {**env, "LXD_SOCKET": str(socket_path), "LXD_CONF": str(conf)}


def run_lxc(daemon: str, env: dict[str, str], *args: str, debug: bool = False) -> float:
    """One lxc command; its wall time in seconds. Raises LxcFailed (with the --debug tail if asked)."""
    argv = ["lxc", *(["--debug"] if debug else []), *args]
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, text=True, capture_output=True, timeout=120)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        lines = (r.stderr + r.stdout).strip().splitlines()
        tail = "\n".join("    " + (ln if len(ln) <= 400 else ln[:400] + " ...") for ln in lines[-30:])
        raise LxcFailed(f"lxc against {daemon} failed ({r.returncode}): {' '.join(argv)}\n{tail}")
    return elapsed


def time_pair(daemon: str, env: dict[str, str], name: str, nic: list[str], out: dict[str, list[float]],
              debug: bool = False, check_pid: int = 0) -> None:  # fmt: skip
    """One add + remove; with CHECK_PID (the container's init), also that the kernel agrees: one
    more link in the container's network namespace after the add, none left after the remove (the
    name inside may differ: LXD names it as the kernel would, eth0 in a container with no NIC)."""
    before = links_in(check_pid) if check_pid else []
    add = run_lxc(daemon, env, "config", "device", "add", name, "eth1", "nic", *nic, debug=debug)
    if check_pid and len(links_in(check_pid)) != len(before) + 1:
        raise LxcFailed(f"lxc config device add on {daemon} succeeded but container {name} has no new link")
    remove = run_lxc(daemon, env, "config", "device", "remove", name, "eth1", debug=debug)
    if check_pid and links_in(check_pid) != before:
        raise LxcFailed(f"lxc config device remove on {daemon} succeeded but container {name} has "
                        f"{links_in(check_pid)}, not {before}")  # fmt: skip
    out["add"].append(add)
    out["remove"].append(remove)
    out["pair"].append(add + remove)


def links_in(pid: int) -> list[str]:
    """The link names in the network namespace of process PID."""
    argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "link", "show"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines())


# --------------------------------------------------------------------------- LXD


class Lxd:
    """LXD 5.0.2 started by hand on its own LXD_DIR; never the system's (/var/lib/lxd).

    It runs in a mount namespace of its own (a slave of the host's, kept by a bind mount on
    a file in the tmp dir), so the tmpfs it mounts (shmounts/, devlxd/) never reach the host
    and go with the namespace; it still shares the host's network namespace, where its bridge is.
    """

    def __init__(self, work: Path, tag: str) -> None:
        self.work = work
        self.dir = work / "lxd"
        self.log = work / "lxd.log"
        self.mntns = work / "lxd.mntns"
        self.name = tag  # the container
        self.image = f"{tag}img"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "LXD_DIR": str(self.dir)}
        self.env.pop("LXD_SOCKET", None)
        self.lxc = lxc_env(self.dir / "unix.socket", work / "lxc-conf-lxd")
        self.cgroups_before: set[str] = set()

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

    def make_container(self) -> None:
        """An offline image (unified tarball: metadata.yaml + rootfs/ of busybox-static), a container
        from it, started."""
        img = self.work / "image"
        rootfs = img / "rootfs"
        for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "run", "var", "root"):
            (rootfs / d).mkdir(parents=True)
        shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
        (rootfs / "bin" / "sh").symlink_to("busybox")
        init = rootfs / "sbin" / "init"
        init.write_text("#!/bin/busybox sh\nwhile :; do /bin/busybox sleep 3600; done\n")
        init.chmod(0o755)
        (img / "metadata.yaml").write_text(
            f"architecture: x86_64\ncreation_date: {int(time.time())}\n"
            "properties:\n  description: busybox sleeping\n  os: busybox\n"
        )
        tarball = self.work / "image.tar.gz"
        subprocess.run(["tar", "-C", str(img), "-czf", str(tarball), "metadata.yaml", "rootfs"], check=True)
        run_lxc("LXD", self.lxc, "image", "import", str(tarball), "--alias", self.image)
        run_lxc("LXD", self.lxc, "init", self.image, self.name, "--quiet")
        run_lxc("LXD", self.lxc, "start", self.name)

    def init_pid(self) -> int:
        out = subprocess.run(["lxc", "query", f"/1.0/instances/{self.name}/state"], env=self.lxc,
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        return int(json.loads(out)["pid"])

    def _lxc_cgroups(self) -> set[str]:
        """The lxc.* cgroups (liblxc leaves lxc.pivot behind), as LXD's namespace sees them."""
        out = self._in_ns("ls -d /sys/fs/cgroup/*/lxc.* 2>/dev/null", check=False)
        return set(out.split())

    def cleanup(self) -> None:
        """Everything this LXD made, each step whatever the previous did."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                run_lxc("LXD", self.lxc, "delete", "--force", self.name)
            with contextlib.suppress(Exception):
                run_lxc("LXD", self.lxc, "image", "delete", self.image)
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

    def _kill_leftovers(self) -> None:
        """`lxd forkstart`/monitor processes (their command line names our LXD_DIR) and anything
        left in our container's cgroups; never a process that is not ours."""
        pids: set[int] = set()
        needles = (f"{self.dir}/".encode(), str(self.log).encode())
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = (entry / "cmdline").read_bytes()
                    if any(needle in cmdline for needle in needles):
                        pids.add(int(entry.name))
        procs = f"/sys/fs/cgroup/*/lxc.payload.{self.name}/cgroup.procs"
        out = self._in_ns(f"cat {procs} 2>/dev/null", check=False)
        pids |= {int(p) for p in out.split() if p.isdigit()}
        pids.discard(os.getpid())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            time.sleep(0.5)


# --------------------------------------------------------------------------- report


def report_rows(label: str, data: dict[str, list[float]]) -> None:
    for op in ("pair", "add", "remove"):
        med, p90 = ms_stats(data[op])
        print(f"{label + ' ' + op:<44}{med:9.1f}{p90:9.1f}")


def time_lxc_startup(env: dict[str, str], n: int) -> list[float]:
    """`lxc --version`: the Go client's process start-up, no request."""
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["lxc", "--version"], env=env, check=True, capture_output=True)
        samples.append(time.perf_counter() - t)
    return samples


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="add+remove pairs per daemon (default 20)")
    ap.add_argument("--short", action="store_true", help="2 pairs, pincusd only, no LXD (seconds)")
    ap.add_argument("--install-lxd", action="store_true",
                    help="apt-get install Debian's lxd package first (no recommends)")  # fmt: skip
    args = ap.parse_args()
    n = 2 if args.short else args.n
    if n < 1:
        ap.error("-n must be at least 1")
    if shutil.which("lxc") is None:
        print("no lxc: install Debian's lxd-client (the LXD 5.0.2 Go client)", file=sys.stderr)
        return 2
    if not args.short:
        if args.install_lxd:
            Lxd.install()
        if shutil.which("lxd") is None:
            print("no lxd: run with --install-lxd (apt-get install lxd), or use --short", file=sys.stderr)
            return 2

    print(f"load average at start: {load()}")
    hexa = secrets.token_hex(2)
    tag = f"bgc{hexa}"  # bridges, namespace, containers, image alias: all bgc<hex>...
    ns, bridge, name = f"{tag}ns", f"{tag}br", tag
    work = Path(tempfile.mkdtemp(prefix=f"pincus-bench-{tag}-"))
    work.chmod(0o711)
    p = Pincus(ns, work)
    lxd: Lxd | None = None
    made_bridge = False
    init_pid = 0
    try:
        # pincusd: private namespace with a bridge, a physical network on it, a running container.
        subprocess.run(["ip", "netns", "add", ns], check=True)
        for cmd in (["link", "set", "lo", "up"], ["link", "add", bridge, "type", "bridge"],
                    ["link", "set", bridge, "up"]):  # fmt: skip
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        p.start()
        p.cli("network", "create", "phys0", "--type=physical", f"parent={bridge}")
        p.cli("init", name)
        p.cli("start", name)
        init_pid = int(p.api("GET", f"/1.0/instances/{name}/state")["pid"])
        pincus_env = lxc_env(p.dir / "unix.socket", work / "lxc-conf-pincus")
        pincus_nic = ["network=phys0"]

        # LXD: its own LXD_DIR, a bridge in the host namespace, a running container.
        if not args.short:
            lxd = Lxd(work, tag)
            lxd.start()
            subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
            made_bridge = True
            subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
            lxd.make_container()
            lxd_nic = ["nictype=bridged", f"parent={bridge}"]
            print(f"lxc {subprocess.run(['lxc', '--version'], capture_output=True, text=True).stdout.strip()}"
                  f" ({shutil.which('lxc')}); lxd {lxd.version()} on {lxd.dir}")  # fmt: skip

        results: dict[str, dict[str, list[float]]] = {}
        pincus_error: LxcFailed | None = None
        keys = ("add", "remove", "pair")
        # Warm-up pair on each (with --debug on pincusd: the failing request, if any, is in the output).
        try:
            time_pair("pincusd", pincus_env, name, pincus_nic, {k: [] for k in keys}, debug=True,
                      check_pid=init_pid)  # fmt: skip
        except LxcFailed as e:
            pincus_error = e
        if lxd is not None:
            time_pair("LXD", lxd.lxc, name, lxd_nic, {k: [] for k in keys}, check_pid=lxd.init_pid())

        t = time.perf_counter()
        for daemon in ("pincusd", "LXD"):
            results[daemon] = {k: [] for k in keys}
        for _ in range(n):
            if pincus_error is None:
                try:
                    time_pair("pincusd", pincus_env, name, pincus_nic, results["pincusd"])
                except LxcFailed as e:
                    pincus_error = e
            if lxd is not None:
                time_pair("LXD", lxd.lxc, name, lxd_nic, results["LXD"])
        startup = time_lxc_startup(pincus_env, n)
        elapsed = time.perf_counter() - t

        which = "per daemon, interleaved" if lxd is not None else "on pincusd only"
        print(f"{n} add+remove pairs {which}, in {elapsed:.1f} s; "
              f"load average now {load()}\n")  # fmt: skip
        head = f"{'lxc config device add/remove (ms)':<44}{'median':>9}{'p90':>9}"
        print(head)
        print("-" * len(head))
        if pincus_error is None:
            report_rows("pincusd", results["pincusd"])
        else:
            print(f"{'pincusd':<44}{'(lxc failed: see below)':>18}")
        if lxd is not None:
            report_rows("LXD 5.0.2", results["LXD"])
        med, p90 = ms_stats(startup)
        print(f"{'lxc --version (client start-up, no request)':<44}{med:9.1f}{p90:9.1f}")
        if pincus_error is None and lxd is not None:
            ratio = ms_stats(results["pincusd"]["pair"])[0] / ms_stats(results["LXD"]["pair"])[0]
            verdict = "met" if ratio <= AIM else "NOT met"
            print(f"\npair median pincusd / LXD 5.0.2: {ratio:.2f}x (aim: at most {AIM}x, {verdict})")
        if pincus_error is not None:
            print(f"\nFAILED: {pincus_error}", file=sys.stderr)
            return 1
        return 0
    finally:
        sys.stdout.flush()
        if lxd is not None:
            lxd.cleanup()
        if made_bridge:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        if p.proc is not None and p.proc.poll() is None:
            if not init_pid:  # interrupted between start and reading the pid
                with contextlib.suppress(Exception):
                    init_pid = int(p.api("GET", f"/1.0/instances/{name}/state")["pid"])
            p.cli("delete", name, "-f", check=False)
        p.stop()
        kill_leftovers(ns, work, init_pid)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up too, as Ctrl-C does
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    except (LxcFailed, RuntimeError, subprocess.SubprocessError) as e:
        print(f"FAILED (cleaned up): {e}", file=sys.stderr)
        sys.exit(1)
