"""`launch` of a container from a cached image to a running init: pincus on a dir pool and on a
btrfs pool against LXD 5.0.2's `lxc launch` of the same image on its dir pool, one run (issue 10).

    .venv/bin/python bench/bench_launch.py [--install-lxd] [-n 10]
    .venv/bin/python bench/bench_launch.py --short [--with-lxd]   # 2 rounds; LXD only if asked

The image is the busybox test image (scripts/build-image.sh, built once and cached under
/tmp/pincus-test-images by tests/imagelib.py), imported, untimed, into pincusd and into LXD. Each
target launches once untimed first, so its pool holds the unpacked image (pincus: the image volume
a create clones, a copy on dir and a snapshot on btrfs; LXD: its image volume on its dir pool):
every timed launch is "from a cached image". Then n rounds, interleaved so all targets see the same
load: each round times, per target, one launch of a new container as a user types it, wall time of
the client process until it returns:

    pincus launch busybox NAME -s POOL          (POOL: a dir pool, a btrfs pool on a loop file)
    lxc launch IMAGE NAME -s default --quiet    (LXD's preseeded dir pool)

plus pincus's same work through raw API requests (POST /1.0/instances with an image source, then
PUT state start, each waited for), so the CLI's own process cost can be subtracted. After each
launch, untimed, the container's init is checked running (its pid's /proc entry is an init), then
the container is deleted (`delete --force`). No NIC on either side (both default profiles hold
only a root disk); both unprivileged (an id map of their own); pincus's init is busybox's init,
LXD's the same image's.

Everything runs in a throw-away namespace (pincusd with `ip netns exec`, own PINCUS_DIR in a tmp
dir) and, for LXD, lxdlib.Lxd (own LXD_DIR, own mount namespace). Cleanup runs whatever happens
(failure, Ctrl-C, SIGTERM): containers, pools, pincusd, LXD's instances, image and daemon, the
namespace and the tmp dir.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_device_add import IMAGE, REPO, Pincus, discard, ms_stats, run_benchmark
from lxdlib import LxcFailed, Lxd, load, lxc_version

BTRFS_SIZE = "2GiB"  # the loop file is sparse: only what the containers write takes space


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def check_init(pid: int, who: str) -> None:
    """The launched container's pid 1 is alive and has exec'd an init: the kernel names a process
    after the file it executed (/proc/PID/status "Name", /sbin/init: "init"). Not its cmdline:
    busybox's init rewrites its argv, and a read at that moment finds it empty."""
    try:
        fields = dict(ln.split(":\t", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines())
    except OSError:
        raise RuntimeError(f"{who}: init pid {pid} is not running after launch") from None
    if fields.get("Name") != "init" or fields.get("State", "").startswith(("Z", "X")):
        what = f"{fields.get('Name')!r} ({fields.get('State')})"
        raise RuntimeError(f"{who}: pid {pid} is {what}, not a running init")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10, help="timed launches per target (default 10)")
    ap.add_argument("--short", action="store_true", help="2 rounds; pincus only unless --with-lxd")
    ap.add_argument("--with-lxd", action="store_true", help="measure LXD in --short mode too")
    ap.add_argument("--pincus-only", action="store_true", help="no LXD")
    ap.add_argument("--install-lxd", action="store_true", help="apt-get install Debian's lxd package first")
    args = ap.parse_args()
    n = 2 if args.short else args.n
    if n < 1:
        ap.error("-n must be at least 1")
    with_lxd = not args.pincus_only and (not args.short or args.with_lxd or args.install_lxd)
    if with_lxd:
        if args.install_lxd:
            Lxd.install()
        if shutil.which("lxd") is None or shutil.which("lxc") is None:
            print("no lxd: run with --install-lxd (apt-get install lxd), or --pincus-only", file=sys.stderr)
            return 2

    print(f"load average at start: {load()}; /proc/loadavg: {loadavg()}")
    tag = "bl" + secrets.token_hex(2)  # namespace, pools, containers, LXD's image alias: bl<hex>...
    ns, dir_pool, btrfs_pool = f"{tag}ns", f"{tag}dir", f"{tag}btr"
    work = Path(tempfile.mkdtemp(prefix=f"pincus-bench-{tag}-"))
    work.chmod(0o711)
    p = Pincus(ns, work)
    lxd: Lxd | None = None
    pincus_names: list[str] = []
    pools: list[str] = []
    try:
        sys.path.insert(0, str(REPO))
        from tests.imagelib import busybox_image

        tarball = busybox_image()
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        p.start()
        pools.append(dir_pool)
        p.cli("storage", "create", dir_pool, "dir")
        pools.append(btrfs_pool)
        p.cli("storage", "create", btrfs_pool, "btrfs", f"size={BTRFS_SIZE}")
        p.image()
        if with_lxd:
            lxd = Lxd(work, tag)
            lxd.start()
            lxd.import_image(tarball)
            print(f"lxc {lxc_version()}; lxd {lxd.version()} on {lxd.dir}")
        print(f"image: {tarball} ({tarball.stat().st_size / 1e6:.1f} MB), in pincusd as {IMAGE!r}"
              f"{f' and in LXD as {lxd.image!r}' if lxd else ''}", flush=True)  # fmt: skip

        def pincus_cli(pool: str) -> Callable[[str], float]:
            def launch(name: str) -> float:
                pincus_names.append(name)
                t = time.perf_counter()
                p.cli("launch", IMAGE, name, "-s", pool)
                return time.perf_counter() - t

            return launch

        def pincus_api(pool: str) -> Callable[[str], float]:
            def launch(name: str) -> float:
                pincus_names.append(name)
                body = {"name": name, "source": p.image_source(),
                        "devices": {"root": {"type": "disk", "path": "/", "pool": pool}}}  # fmt: skip
                t = time.perf_counter()
                p.api("POST", "/1.0/instances", body)
                p.api("PUT", f"/1.0/instances/{name}/state", {"action": "start"})
                return time.perf_counter() - t

            return launch

        def pincus_check_and_delete(name: str) -> None:
            st = p.api("GET", f"/1.0/instances/{name}/state")
            if st["status"] != "Running":
                raise RuntimeError(f"pincus {name}: {st['status']} after launch")
            check_init(int(st["pid"]), f"pincus {name}")
            p.cli("delete", name, "--force")
            pincus_names.remove(name)

        def lxd_launch(name: str) -> float:
            assert lxd is not None
            lxd.instances.append(name)
            return lxd.lxc_cmd("launch", lxd.image, name, "-s", "default", "--quiet")

        def lxd_check_and_delete(name: str) -> None:
            assert lxd is not None
            check_init(lxd.init_pid(name), f"LXD {name}")
            lxd.lxc_cmd("delete", name, "--force")
            lxd.instances.remove(name)

        targets: list[tuple[str, Callable[[str], float], Callable[[str], None]]] = [
            ("pincus dir", pincus_cli(dir_pool), pincus_check_and_delete),
            ("pincus btrfs", pincus_cli(btrfs_pool), pincus_check_and_delete),
            ("pincus API dir", pincus_api(dir_pool), pincus_check_and_delete),
            ("pincus API btrfs", pincus_api(btrfs_pool), pincus_check_and_delete),
        ]
        if lxd is not None:
            targets.append(("LXD dir", lxd_launch, lxd_check_and_delete))

        first: dict[str, float] = {}
        for i, (label, launch, done) in enumerate(targets):  # untimed for the figures: fills the caches
            name = f"{tag}w{i}"
            first[label] = launch(name)
            done(name)
        samples: dict[str, list[float]] = {label: [] for label, _, _ in targets}
        t0 = time.perf_counter()
        for r in range(n):
            for i, (label, launch, done) in enumerate(targets):
                name = f"{tag}r{r}t{i}"
                samples[label].append(launch(name))
                done(name)
        print(f"\n{n} launches per target, interleaved, in {time.perf_counter() - t0:.0f} s; "
              f"load average now {load()}; /proc/loadavg: {loadavg()}\n")  # fmt: skip

        lxd_med = ms_stats(samples["LXD dir"])[0] if lxd is not None else 0.0
        head = f"{'launch to a running init (ms)':<34}{'median':>9}{'p90':>9}{'first':>9}{'/ LXD':>9}"
        print(head)
        print("-" * len(head))
        for label, _, _ in targets:
            med, p90 = ms_stats(samples[label])
            ratio = f"{med / lxd_med:8.2f}x" if lxd_med else f"{'-':>9}"
            print(f"{label:<34}{med:9.1f}{p90:9.1f}{first[label] * 1000:9.1f}{ratio}")
        print()
        for label, _, _ in targets:  # one line each, for a grep (and the suite's short-mode check)
            print(f"launch {label:<20} median {ms_stats(samples[label])[0]:8.1f} ms (n={n})")
        print("first: the untimed first launch on each target (pincus: unpacks the image on that pool)")
        if lxd is None:
            print("LXD not measured (--short without --with-lxd, or --pincus-only)")
        return 0
    finally:
        sys.stdout.flush()
        if lxd is not None:
            lxd.cleanup()  # its instances, image, daemon, mount namespace
        if p.proc is not None and p.proc.poll() is None:
            for name in pincus_names:
                p.cli("delete", name, "--force", check=False)
            for pool in reversed(pools):  # the btrfs pool unmounts and frees its loop device
                p.cli("storage", "delete", pool, check=False)
        discard(p, ns, work)


if __name__ == "__main__":
    run_benchmark(main, LxcFailed, RuntimeError, subprocess.SubprocessError)
