"""An instance's limits.* keys as the values a cgroup or QEMU takes, checked against the host.

Pure: the caller reads the host's online CPUs and memory (through the host facade) and hands them
in, so the same translation serves a container's cgroup, a VM's command line and unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from pincus.config import validators as v
from pincus.errors import InvalidError
from pincus.host.cgroups import Limits

CGROUP_KEYS = ("limits.cpu", "limits.cpu.allowance", "limits.memory", "limits.processes")
# The controller each key needs, for the error when the host lacks it.
_KEY_OF_CONTROLLER = {
    "cpuset": "limits.cpu",
    "cpu": "limits.cpu.allowance",
    "memory": "limits.memory",
    "pids": "limits.processes",
}
VM_VCPUS_MAX = 64  # what pincus's QEMU machine type is run with, tested


def _bad(key: str, e: ValueError) -> InvalidError:
    return InvalidError(f'Invalid value for key "{key}": {e}')


def _range_text(cpus: frozenset[int]) -> str:
    out: list[str] = []
    for c in sorted(cpus):
        if out and out[-1].rpartition("-")[2] == str(c - 1):
            out[-1] = f"{out[-1].partition('-')[0]}-{c}"
        else:
            out.append(str(c))
    return ",".join(out)


def cpus(value: str, online: frozenset[int]) -> frozenset[int]:
    """The cpuset of a limits.cpu value: a count takes the first online CPUs."""
    try:
        parsed = v.parse_cpu_limit(value)
    except ValueError as e:
        raise _bad("limits.cpu", e) from None
    if isinstance(parsed, int):
        if parsed > len(online):
            raise InvalidError(
                f'Invalid value for key "limits.cpu": {parsed} CPUs asked, the host has '
                f"{len(online)} online ({_range_text(online)})"
            )
        return frozenset(sorted(online)[:parsed])
    offline = parsed - online
    if offline:
        raise InvalidError(
            f'Invalid value for key "limits.cpu": CPU {_range_text(frozenset(offline))} is not online '
            f"(online: {_range_text(online)})"
        )
    return parsed


def memory_bytes(value: str, host_memory: int) -> int:
    try:
        parsed = v.parse_memory_limit(value)
    except ValueError as e:
        raise _bad("limits.memory", e) from None
    if isinstance(parsed, Fraction):
        return max(v.MEMORY_MIN, int(host_memory * parsed))
    return parsed


def cgroup_limits(config: Mapping[str, str], online: frozenset[int], host_memory: int) -> Limits:
    """The Limits of an expanded config (keys left out are no limit)."""
    allowance = v.CpuAllowance()
    if "limits.cpu.allowance" in config:
        try:
            allowance = v.parse_cpu_allowance(config["limits.cpu.allowance"])
        except ValueError as e:
            raise _bad("limits.cpu.allowance", e) from None
    processes = None
    if "limits.processes" in config:
        try:
            v.is_processes_limit(config["limits.processes"])
        except ValueError as e:
            raise _bad("limits.processes", e) from None
        processes = int(config["limits.processes"])
    return Limits(
        cpus=cpus(config["limits.cpu"], online) if "limits.cpu" in config else None,
        cpu_weight=allowance.weight,
        cpu_quota_us=allowance.quota_us,
        cpu_period_us=allowance.period_us,
        memory_bytes=(
            memory_bytes(config["limits.memory"], host_memory) if "limits.memory" in config else None
        ),
        processes=processes,
    )


def check_controllers(limits: Limits, available: frozenset[str]) -> None:
    """Refuse limits the host has no controller for, naming the key."""
    for controller in sorted(limits.controllers()):
        if controller not in available:
            raise InvalidError(
                f'cgroup controller "{controller}" is not available on this host: cannot apply '
                f"{_KEY_OF_CONTROLLER[controller]}"
            )


def changed(old: Mapping[str, str], new: Mapping[str, str]) -> bool:
    return any(old.get(k) != new.get(k) for k in CGROUP_KEYS)


def vm_vcpus(value: str) -> int:
    """QEMU's -smp for limits.cpu: the count, or the size of the set."""
    try:
        parsed = v.parse_cpu_limit(value)
    except ValueError as e:
        raise _bad("limits.cpu", e) from None
    count = parsed if isinstance(parsed, int) else len(parsed)
    if count > VM_VCPUS_MAX:
        raise InvalidError(f'Invalid value for key "limits.cpu": a VM has at most {VM_VCPUS_MAX} vCPUs')
    return count


def vm_memory_mb(value: str, host_memory: int) -> int:
    return max(16, memory_bytes(value, host_memory) // (1024 * 1024))
