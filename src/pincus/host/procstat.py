"""What processes use, read from /proc: for an instance's state (processes, memory, CPU time).

Until instances have a cgroup of their own, these are sums over the instance's processes: every
process in a container's pid namespace, or a VM's QEMU.
"""

from __future__ import annotations

import os
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
    try:
        ns = os.stat(f"/proc/{init_pid}/ns/pid").st_ino
    except OSError:
        return Usage(0, 0, 0)
    count = memory = cpu = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != ns:
                continue
        except OSError:
            continue
        one = _one(int(entry))
        if one is not None:
            count, memory, cpu = count + 1, memory + one[0], cpu + one[1]
    return Usage(count, memory, cpu)
