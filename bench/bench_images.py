"""Image store costs: `pincus image import` of the busybox image, the safe unpack storage runs once
per pool, and a large upload streamed through pincusd (throughput, and the daemon's RSS staying flat:
the body goes to disk as it arrives, never into memory).

    .venv/bin/python bench/bench_images.py [-n 10] [--upload-mib 1024]

Runs its own pincusd on a throw-away PINCUS_DIR inside a private network namespace (it creates no
kernel object); everything is removed on exit.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from pincus.db.store import Store  # noqa: E402
from pincus.events import EventHub  # noqa: E402
from pincus.server.images import Images  # noqa: E402
from pincus.state import State  # noqa: E402
from tests import imagelib  # noqa: E402


def ms(samples: list[float]) -> str:
    s = sorted(x * 1000 for x in samples)
    return f"median {statistics.median(s):8.1f} ms  min {s[0]:8.1f} ms  n={len(s)}"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=10, help="imports and unpacks to time")
    p.add_argument("--upload-mib", type=int, default=1024, help="size of the streamed upload")
    args = p.parse_args()

    image = imagelib.busybox_image()
    fp = imagelib.sha256(image)
    ns = f"pib{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="pincus-bench-images-"))
    # This checkout's pincus, also for the pincus and pincusd processes (a venv may hold another's).
    pythonpath = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PINCUS_DIR": str(work / "pincus"), "PYTHONPATH": pythonpath}
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        (work / "pincus").mkdir()
        with open(work / "pincusd.stderr", "ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, str(BIN / "pincusd")], env=env, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip

        def cli(*a: str) -> str:
            r = subprocess.run(
                [str(BIN / "pincus"), *a], env=env, capture_output=True, text=True, timeout=300
            )
            if r.returncode != 0:
                raise RuntimeError(f"pincus {' '.join(a)}: {r.stderr}")
            return r.stdout

        cli("admin", "waitready", "--timeout", "30")
        daemon_pid = proc.pid  # `ip netns exec` execs pincusd in place

        imports = []
        for _ in range(args.n):
            t = time.perf_counter()
            cli("image", "import", str(image))
            imports.append(time.perf_counter() - t)
            cli("image", "delete", fp)
        print(f"import busybox ({image.stat().st_size // 1024} KiB xz) via the CLI   {ms(imports)}")

        state = State(work / "unpack", Store(work / "unpack.db"), EventHub())
        state.dir.mkdir()
        images = Images(state)
        images.start()
        shutil.copy(image, images.dir / ".upload-bench")
        from pincus.host.image_upload import Part, Upload

        images.add(Upload((Part("", "", images.dir / ".upload-bench", image.stat().st_size),), fp), {})
        unpacks = []
        for i in range(args.n):
            target = work / f"volume{i}"
            target.mkdir()
            t = time.perf_counter()
            images.unpack(fp, target, skip_devices=True)
            unpacks.append(time.perf_counter() - t)
            shutil.rmtree(target)
        print(f"unpack busybox (checked member by member)        {ms(unpacks)}")

        size = args.upload_mib * 1024 * 1024
        before = rss_kib(daemon_pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(rss_kib(daemon_pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        t = time.perf_counter()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(work / "pincus" / "unix.socket"))
            s.sendall(f"POST /1.0/images HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
            chunk = bytes(1024 * 1024)
            for _ in range(args.upload_mib):
                s.sendall(chunk)
            answer = s.recv(4096)
        took = time.perf_counter() - t
        done.set()
        sampler.join()
        assert b" 202 " in answer.split(b"\r\n")[0], answer  # received whole; the operation refuses it
        print(
            f"upload {args.upload_mib:6d} MiB  {size / took / 1e6:8.1f} MB/s  "
            f"daemon RSS {before // 1024} MiB before, {max(peak) // 1024} MiB peak"
        )
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
