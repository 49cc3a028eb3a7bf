"""Every benchmark in bench/ runs in its short mode, so a refactor that breaks one fails here rather
than rotting until someone next measures. The figures themselves are not judged: the full runs
stay manual (bench/README.md), and a loaded CI machine says nothing about speed."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# (script and its short-mode arguments, a line the run must print: proof it measured something)
SHORT_RUNS = [
    (["bench_links.py", "-n", "20"], r"^create_veth_into_netns .* n=20 +median +[\d.]+ ms"),
    (["bench_nft.py", "--nics", "20"], r'"add_first10_ms": [\d.]+'),
    (["bench_nic_start.py", "-n", "12"], r"^floor start +[\d.]+"),
    (["bench_device_add.py", "-n", "2"], r"^CLI pair +[\d.]+ +[\d.]+ +[\d.]+x"),
    (["bench_go_client.py", "--short"], r"^pincusd pair +[\d.]+ +[\d.]+"),
    (["bench_scale.py", "--short"], r"^pincusd pid \d+: VmRSS [\d.]+ MB"),
    (["bench_lxd.py", "--short"], r"^1\. own CLI: config device add\+remove +[\d.]+"),
    (["bench_nic_floor.py", "-n", "2", "--nics", "5"], r"^NIC #5: add [\d.]+ ms \(veth [\d.]+"),
    (["bench_rootfs_start.py", "-n", "2"], r"^chown +start median +\d+ ms"),
    (["bench_images.py", "-n", "2", "--upload-mib", "64"], r"^upload +64 MiB +[\d.]+ MB/s"),
    (["bench_ovn.py", "-n", "1"], r"^start to first ping +ovn +median +\d+ ms"),
    (["bench_cluster.py", "--short"], r"^launch to first ping +ovn across +median +\d+ ms .* [\d.]+x floor"),
    (["bench_clusterdb.py", "--short"], r"^fail-over median s +[\d.]+ +[\d.]+"),
    (["bench_volume.py", "-n", "2", "--small"], r"^ratio dir/btrfs create +[\d.]+x"),
    (["bench_client.py", "--short"], r"^launcher: network show +[\d.]+ +[\d.]+ +[\d.]+x"),
    (["bench_launch.py", "--short"], r"^launch pincus btrfs +median +[\d.]+ ms \(n=2\)"),
]


@pytest.mark.parametrize(("args", "expect"), SHORT_RUNS, ids=[run[0][0] for run in SHORT_RUNS])
def test_benchmark_runs_in_its_short_mode(args: list[str], expect: str) -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / args[0]), *args[1:]],
        cwd=REPO, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert re.search(expect, out, re.MULTILINE), out[-3000:]


def test_a_benchmark_failing_midway_leaves_nothing_behind() -> None:
    """bench_scale.py told to fail once its containers run: its namespace, processes (pincusd,
    container inits) and tmp dir are gone afterwards."""
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_scale.py"), "--short", "--fail-after", "start"],
        cwd=REPO, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]
    assert "--fail-after start" in out and "5/5 running" in out, out[-3000:]
    match = re.search(r"^tag (s[0-9a-f]{4});", out, re.MULTILINE)
    assert match, out[-3000:]
    tag = match.group(1)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert tag not in netns
    assert not list(Path(tempfile.gettempdir()).glob(f"pincus-bench-{tag}-*"))
    ours = f"pincus-bench-{tag}-".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert ours not in cmdline, f"pid {entry.name} left running: {cmdline!r}"
