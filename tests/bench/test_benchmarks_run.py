"""Every benchmark in bench/ runs in its short mode, so a refactor that breaks one fails here rather
than rotting until someone next measures. The figures themselves are not judged: the full runs
stay manual (bench/README.md), and a loaded CI machine says nothing about speed."""

from __future__ import annotations

import re
import subprocess
import sys
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
    (["bench_client.py", "--short"], r"^launcher: network show +[\d.]+ +[\d.]+ +[\d.]+x"),
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
