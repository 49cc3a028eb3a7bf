"""Start and stop of a container on its own root (host/container.py spawn_container), with
the root idmapped, chown-shifted and privileged, plus a clean busybox poweroff and a chown shift.

    .venv/bin/python bench/bench_rootfs_start.py [-n 7]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from pincus import idmaps  # noqa: E402
from pincus.host import container as hc  # noqa: E402
from pincus.host import idmap  # noqa: E402
from tests.rootfslib import build_volume  # noqa: E402

MAP = (idmaps.IdRange(True, False, 100000, 0, 65536), idmaps.IdRange(False, True, 100000, 0, 65536))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=7, help="starts per mode")
    n = parser.parse_args().n
    work = Path(tempfile.mkdtemp(prefix="pincus-bench-rootfs-"))
    try:
        rootfs = build_volume(work / "vol") / "rootfs"
        on_disk: idmaps.IdMap = ()
        for mode in ("idmapped", "chown", "privileged"):
            wanted = MAP if mode == "chown" else ()
            idmap.shift_tree(rootfs, on_disk, wanted)
            on_disk = wanted
            starts, stops = [], []
            for i in range(n):
                state = work / f"{mode}{i}"
                state.mkdir()
                spec = hc.RootSpec(rootfs, () if mode == "privileged" else MAP, idmapped=mode == "idmapped")
                t = time.monotonic()
                proc = hc.spawn_container("bench", "bench", state, work / "log", spec)
                starts.append(time.monotonic() - t)
                t = time.monotonic()
                hc.stop_container(proc, 10, True, state)
                stops.append(time.monotonic() - t)
            median, least = statistics.median(starts) * 1000, min(starts) * 1000
            stop = statistics.median(stops) * 1000
            print(
                f"{mode:10} start median {median:6.0f} ms  min {least:5.0f} forced stop {stop:5.0f} ms n={n}"
            )
        state = work / "poweroff"
        state.mkdir()
        proc = hc.spawn_container("bench", "bench", state, work / "log", hc.RootSpec(rootfs, ()))
        t = time.monotonic()
        hc.stop_container(proc, 10, False, state, halt_signal=signal.SIGUSR2)
        print(f"busybox poweroff (SIGUSR2) {(time.monotonic() - t) * 1000:.0f} ms")
        t = time.monotonic()
        count = idmap.shift_tree(rootfs, (), MAP)
        print(f"chown shift {count} entries {(time.monotonic() - t) * 1000:.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
