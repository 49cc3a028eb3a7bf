"""What processes use, read from /proc: for an instance's state (processes, memory, CPU time).

Until instances have a cgroup of their own, these are sums over the instance's processes: every
process in a container's pid namespace, or a VM's QEMU.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    processes: int
    memory_bytes: int  # resident set sizes, summed
    cpu_ns: int  # user + system time, summed


def _one(pid: int) -> tuple[int, int] | None:
    """(resident bytes, CPU ns) of one process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
        with open(f"/proc/{pid}/stat") as f:
            # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            rest = f.read().rpartition(")")[2].split()
    except (OSError, IndexError, ValueError):
        return None
    return rss_pages * _PAGE, (int(rest[11]) + int(rest[12])) * _TICK_NS


def process_usage(pid: int) -> Usage:
    one = _one(pid)
    return Usage(0, 0, 0) if one is None else Usage(1, *one)


def pid_namespace_usage(init_pid: int) -> Usage:
    """Every process in INIT_PID's pid namespace (the container's init and what it runs)."""
    return pid_namespaces_usage([init_pid])[init_pid]


def pid_namespaces_usage(init_pids: Collection[int]) -> dict[int, Usage]:
    """pid_namespace_usage of each init, from one pass over /proc (list asks for every container)."""
    inits: dict[int, int] = {}  # pid namespace inode -> its init's pid
    for pid in init_pids:
        try:
            inits[os.stat(f"/proc/{pid}/ns/pid").st_ino] = pid
        except OSError:
            continue
    sums = {pid: (0, 0, 0) for pid in init_pids}
    for entry in os.listdir("/proc") if inits else []:
        if not entry.isdigit():
            continue
        try:
            init = inits.get(os.stat(f"/proc/{entry}/ns/pid").st_ino)
        except OSError:
            continue
        if init is None:
            continue
        one = _one(int(entry))
        if one is not None:
            count, memory, cpu = sums[init]
            sums[init] = (count + 1, memory + one[0], cpu + one[1])
    return {pid: Usage(*sums[pid]) for pid in init_pids}
