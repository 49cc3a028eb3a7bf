"""Fail every host call of an operation in turn: the operation fails and leaves the host and the
database exactly as they were, or it does without that call and still undoes cleanly.

Each scenario runs in its own network namespace (tests/faults/run.py holds the driver and the
snapshot of what pincus may touch: links, addresses, routes, bridge ports and VLANs, qdiscs, the
nft ruleset, its processes, its files, its database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.pincus_testlib import NSEXEC, Daemon, NetNS, cleanup_dir, kill_leftovers, unique_prefix

SCENARIOS = ["network-create", "network-delete", "instance-start", "instance-stop"]
SCENARIOS += ["hot-plug", "unplug", "live-update", "live-limits", "ovn-network-create", "ovn-network-delete"]
SCENARIOS += ["ovn-instance-start", "disk-hot-plug", "disk-unplug", "image-delete"]
SCENARIOS += ["pool-create", "instance-create-image", "instance-rename", "instance-delete"]
# A rename moves two directories (the instance's state and its volume): each failed in turn.
MIN_CALLS = {"instance-rename": 2, "disk-hot-plug": 2, "disk-unplug": 2, "image-delete": 4}


def run_scenario(scenario: str, *extra: str, timeout: float = 900) -> dict[str, Any]:
    ns = NetNS(f"{unique_prefix()}fi")
    path = Path(tempfile.mkdtemp(prefix="pincus-faults-"))
    env = {**Daemon(ns, path).env}
    try:
        r = subprocess.run(
            [*NSEXEC, ns.name, sys.executable, "-m", "tests.faults.run", scenario, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert r.returncode == 0, r.stderr[-4000:]
        return dict(json.loads(r.stdout.strip().splitlines()[-1]))
    finally:
        kill_leftovers(path)
        ns.delete()
        cleanup_dir(path)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_failed_host_call_leaves_the_host_as_it_was(scenario: str) -> None:
    report = run_scenario(scenario)
    calls = report["calls"]
    assert len(calls) >= MIN_CALLS.get(scenario, 5), report
    assert report["problems"] == [], "\n".join(report["problems"])
    print(f"{scenario}: {len(calls)} host calls, each failed in turn; tolerated: {report['tolerated']}")


RANDOM_FAILURES = int(os.environ.get("PINCUS_FAULTS_RANDOM", "0"))


@pytest.mark.slow
@pytest.mark.skipif(not RANDOM_FAILURES, reason="set PINCUS_FAULTS_RANDOM=N for N random failures a scenario")
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_random_failures_leave_the_host_as_it_was(scenario: str) -> None:
    seed = int(os.environ.get("PINCUS_FAULTS_SEED", "1"))
    report = run_scenario(scenario, "--random", str(RANDOM_FAILURES), "--seed", str(seed), timeout=3600)
    assert report["problems"] == [], "\n".join(report["problems"])
    print(
        f"{scenario}: {report['tried']} random failures (seed {seed}), tolerated {len(report['tolerated'])}"
    )
