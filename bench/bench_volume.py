"""Cost of an instance volume made from a cached image volume: dir (a full copy) against btrfs (a
subvolume snapshot), through the storage drivers pincusd uses.

    .venv/bin/python bench/bench_volume.py [-n 10] [--small]

The image is busybox-static plus a copy of /usr/lib/python3.11 (~56 MB, ~1500 files); --small
(the short mode) is busybox alone. The bench re-runs itself in a private mount namespace, so the
btrfs pool's mount (and with it its autoclear loop device) goes when it exits, whatever happens;
its throw-away PINCUS_DIR is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pincus.storage.base import Pool

INNER = "PINCUS_BENCH_INNER"
FP = "be" * 32


def timed(label: str, n: int, op: Callable[[int], object]) -> float:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        op(i)
        samples.append((time.perf_counter() - start) * 1000)
    ms = sorted(samples)
    median = statistics.median(ms)
    print(f"{label:<34} n={n:<3} median {median:9.2f} ms   min {ms[0]:9.2f}   max {ms[-1]:9.2f}", flush=True)
    return median


def fill(small: bool) -> Callable[[Path], None]:
    def go(target: Path) -> None:
        rootfs = target / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
        for tool in ("sh", "ls", "cat", "ip", "ping"):
            (rootfs / "bin" / tool).symlink_to("busybox")
        if not small:
            subprocess.run(["cp", "-a", "/usr/lib/python3.11", str(rootfs / "python3.11")], check=True)
        (target / "metadata.yaml").write_text("architecture: x86_64\n")

    return go


def measure(pool: Pool, n: int, small: bool) -> float:
    """Median ms of an instance volume create on POOL, made and removed around the measurement."""
    pool.create()
    try:
        start = time.perf_counter()
        pool.create_image_volume(FP, fill(small))
        took = (time.perf_counter() - start) * 1000
        print(f"{pool.driver}: image volume filled once in {took:.0f} ms")
        median = timed(
            f"{pool.driver} instance volume create", n, lambda i: pool.create_instance_volume(f"c{i}", FP)
        )
        timed(f"{pool.driver} instance volume delete", n, lambda i: pool.delete_instance_volume(f"c{i}"))
        pool.delete_image_volume(FP)
        return median
    finally:
        pool.delete()


def inner(n: int, small: bool) -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    sys.path.insert(0, str(src))
    from pincus.db.store import Store
    from pincus.events import EventHub
    from pincus.state import State
    from pincus.storage.btrfs import BtrfsPool
    from pincus.storage.dir import DirPool

    root = Path(tempfile.mkdtemp(prefix="pincus-bench-volume-"))
    try:
        state = State(dir=root, store=Store(root / "pincus.db"), events=EventHub())
        medians: dict[str, float] = {}
        pools = [DirPool(state, "bdir", {}), BtrfsPool(state, "bbtrfs", {"size": "2GiB"})]
        for pool in pools:
            medians[pool.driver] = measure(pool, n, small)
        size = subprocess.run(
            ["du", "-sh", "--apparent-size", "/usr/lib/python3.11"], capture_output=True, text=True
        )
        what = "busybox only" if small else f"busybox + /usr/lib/python3.11 ({size.stdout.split()[0]})"
        print(f"rootfs: {what}")
        print(f"ratio dir/btrfs create {medians['dir'] / medians['btrfs']:.1f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10, help="instance volumes per driver")
    ap.add_argument("--small", action="store_true", help="busybox alone (the short mode)")
    args = ap.parse_args()
    if os.environ.get(INNER):
        inner(args.n, args.small)
        return
    argv = [sys.executable, __file__, "-n", str(args.n), *(["--small"] if args.small else [])]
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", *argv], env={**os.environ, INNER: "1"}
    )
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
