"""Cost of pincus.host.nft operations as NICs accumulate: libnftables in-process vs the nft program.

Runs in a private network namespace it creates (nothing outside it is touched):

    .venv/bin/python bench/bench_nft.py [--nics 500] [--backend library|binary|both]

Prints, per backend, median times (ms) of: set_nic_filter for the first and last 10 NICs added;
replacing the filter of the first 10 NICs (addresses changed) while only they exist and of the
last 10 once all exist; remove_nic_filter of the first 10 removed (table full) and the last 10
(table nearly empty); the per-network calls. Also the one-off cost of the first call of a
process on a full table (it reads the table back, as a restarted daemon does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 3)


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _inside(nics: int, backend: str) -> dict[str, object]:
    sys.path.insert(0, str(REPO / "src"))
    from pincus.host import nft_networks, nft_ports, nft_runner

    name = nft_runner.select_backend(backend)
    tag = "be"
    nft_ports.ensure_bridge_table(tag)

    def nic(i: int, variant: int = 0) -> nft_ports.NicFilter:
        return nft_ports.NicFilter(
            port=f"bn{i:05d}",
            mac=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}",
            ipv4=[f"10.{250 - variant}.{i >> 8}.{i & 255}"],
            ipv6=[f"fd42:{250 + variant:x}::{i:x}"],
            mac_filtering=True,
            ipv4_filtering=True,
            ipv6_filtering=True,
        )

    adds = [_timed(partial(nft_ports.set_nic_filter, tag, nic(i))) for i in range(10)]
    replace_first = [
        _timed(partial(nft_ports.set_nic_filter, tag, nic(i, v))) for v in (1, 0) for i in range(10)
    ]
    adds += [_timed(partial(nft_ports.set_nic_filter, tag, nic(i))) for i in range(10, nics)]
    replace_last = [
        _timed(partial(nft_ports.set_nic_filter, tag, nic(i, v)))
        for v in (1, 0)
        for i in range(nics - 10, nics)
    ]
    nft_ports._known.clear()  # as a new process: the first call reads the table back
    cold = _timed(partial(nft_ports.set_nic_filter, tag, nic(0, 1)))
    nft_runner.list_tables()  # the first call imports pyroute2
    list_tables = _timed(nft_runner.list_tables)
    list_tables_nft = _timed(nft_runner._list_tables_nft)
    removes = [_timed(partial(nft_ports.remove_nic_filter, tag, f"bn{i:05d}")) for i in range(nics)]
    missing = [_timed(partial(nft_ports.remove_nic_filter, tag, f"bn{i:05d}")) for i in range(10)]
    nets = []
    for i in range(10):
        v4, v6 = f"10.250.{200 + i}.1/24", f"fd42:250:{i}::1/64"
        rules = nft_networks.NetworkRules(f"bb{i}", v4, v6, True, True, True, True)
        nets.append(_timed(partial(nft_networks.set_network_rules, tag, rules)))
    net_removes = [_timed(partial(nft_networks.remove_network_rules, tag, f"bb{i}")) for i in range(10)]
    nft_ports.delete_bridge_table(tag)
    nft_networks.delete_inet_table(tag)
    return {
        "backend": name,
        "nics": nics,
        "add_first10_ms": _ms(adds[:10]),
        "add_last10_ms": _ms(adds[-10:]),
        "replace_first10_ms": _ms(replace_first),
        "replace_last10_ms": _ms(replace_last),
        "first_call_of_a_process_at_full_ms": round(cold * 1000, 3),
        "list_owned_tables_at_full_ms": round(list_tables * 1000, 3),
        "nft_list_tables_at_full_ms": round(list_tables_nft * 1000, 3),
        "remove_first10_at_full_ms": _ms(removes[:10]),
        "remove_last10_at_empty_ms": _ms(removes[-10:]),
        "remove_missing_ms": _ms(missing),
        "set_network_rules_ms": _ms(nets),
        "remove_network_rules_ms": _ms(net_removes),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nics", type=int, default=500)
    ap.add_argument("--backend", choices=["library", "binary", "both"], default="both")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        print(json.dumps(_inside(args.nics, args.backend)))
        return
    ns = f"bnft{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for backend in ["library", "binary"] if args.backend == "both" else [args.backend]:
            out = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    sys.executable,
                    __file__,
                    "--inside",
                    "--nics",
                    str(args.nics),
                    "--backend",
                    backend,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            print(json.dumps(json.loads(out), indent=1))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
