"""limits.* keys: parsing (units, percentages, CPU sets, allowance) and what a cgroup or QEMU gets."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from pincus.config import validators as v
from pincus.config.device_keys import INSTANCE
from pincus.config.keys import CONTAINER, VM, check_config
from pincus.errors import InvalidError
from pincus.host import cgroups
from pincus.instances import limits

TWO = frozenset({0, 1})
GIB = 1024**3


def refusal(fn: object, value: str) -> str:
    with pytest.raises(ValueError) as info:
        fn(value)  # type: ignore[operator]
    return str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2), ("1", 1), ("0-1", frozenset({0, 1})), ("0,1", frozenset({0, 1})), ("3-3", frozenset({3})),
     ("0-2,5", frozenset({0, 1, 2, 5}))],
)  # fmt: skip
def test_cpu_limit_is_a_count_or_a_set(value: str, expected: object) -> None:
    assert v.parse_cpu_limit(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "outside 1-8192"), ("lots", "not a CPU set"), ("1-0", "runs backwards"), ("0,,1", "not a CPU set"),
     ("-1", "not a CPU set"), ("99999", "outside"), ("0-9000", "above 8191"), ("", "not a CPU set"),
     ("٣", "not a CPU set")],
)  # fmt: skip
def test_bad_cpu_limits_are_refused_clearly(value: str, message: str) -> None:
    assert message in refusal(v.parse_cpu_limit, value)


def test_cpu_allowance_percentage_is_a_share_and_time_a_hard_cap() -> None:
    assert v.parse_cpu_allowance("50%") == v.CpuAllowance(weight=50)
    assert v.parse_cpu_allowance("25ms/100ms") == v.CpuAllowance(quota_us=25_000, period_us=100_000)
    assert v.parse_cpu_allowance("200ms/100ms") == v.CpuAllowance(quota_us=200_000, period_us=100_000)


@pytest.mark.parametrize(
    ("value", "message"),
    [("50", "not a CPU allowance"), ("0%", "outside 1-10000"), ("10001%", "outside"),
     ("x%", "not a CPU allowance"), ("25ms", "not a CPU allowance"), ("25/100", "not a CPU allowance"),
     ("0ms/100ms", "at least 1ms"),
     ("1ms/2000ms", "1ms-1000ms"), ("1ms/0ms", "1ms-1000ms"), ("25ms/100ms/1ms", "not a CPU allowance")],
)  # fmt: skip
def test_bad_cpu_allowances_are_refused_clearly(value: str, message: str) -> None:
    assert message in refusal(v.parse_cpu_allowance, value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("256MiB", 256 * 1024**2), ("1GB", 10**9), ("1048576", 1024**2), ("50%", Fraction(1, 2)),
     ("12.5%", Fraction(1, 8)), ("100%", Fraction(1))],
)  # fmt: skip
def test_memory_limit_is_bytes_or_a_share_of_the_host(value: str, expected: object) -> None:
    assert v.parse_memory_limit(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("0%", "percentage"), ("101%", "percentage"), ("abc%", "percentage"), ("%", "percentage"),
     ("1kB", "below 1MiB"), ("0", "below 1MiB"), ("1 GB", "not a size"), ("1gb", "not a size"),
     ("-5MiB", "not a size")],
)  # fmt: skip
def test_bad_memory_limits_are_refused_clearly(value: str, message: str) -> None:
    assert message in refusal(v.parse_memory_limit, value)


def test_processes_limit_is_a_positive_count_the_kernel_takes() -> None:
    v.is_processes_limit("1")
    v.is_processes_limit(str(v.PROCESSES_MAX))
    for bad in ("0", "-1", str(v.PROCESSES_MAX + 1), "ten", "1e3"):
        with pytest.raises(ValueError):
            v.is_processes_limit(bad)


def test_cgroup_limits_of_a_config() -> None:
    config = {
        "limits.cpu": "1",
        "limits.cpu.allowance": "25ms/50ms",
        "limits.memory": "25%",
        "limits.processes": "7",
    }
    assert limits.cgroup_limits(config, TWO, 4 * GIB) == cgroups.Limits(
        cpus=frozenset({0}), cpu_quota_us=25_000, cpu_period_us=50_000, memory_bytes=GIB, processes=7
    )
    assert limits.cgroup_limits({}, TWO, GIB) == cgroups.Limits()
    assert limits.cgroup_limits({"limits.cpu.allowance": "30%"}, TWO, GIB).cpu_weight == 30


def test_cpu_count_takes_the_first_online_cpus_and_a_set_must_be_online() -> None:
    online = frozenset({0, 2, 3})
    assert limits.cpus("2", online) == frozenset({0, 2})
    assert limits.cpus("2-3", online) == frozenset({2, 3})
    with pytest.raises(InvalidError, match=r'"limits.cpu": CPU 1 is not online \(online: 0,2-3\)'):
        limits.cpus("0-1", online)
    with pytest.raises(InvalidError, match=r"4 CPUs asked, the host has 2 online \(0-1\)"):
        limits.cpus("4", TWO)


def test_a_missing_controller_is_named_with_the_key() -> None:
    wanted = cgroups.Limits(processes=5)
    with pytest.raises(
        InvalidError, match=r'controller "pids" is not available on this host: cannot apply limits.processes'
    ):
        limits.check_controllers(wanted, frozenset({"cpu", "memory"}))
    limits.check_controllers(cgroups.Limits(), frozenset())


def test_vm_takes_the_size_of_a_cpu_set_and_memory_in_mib() -> None:
    assert limits.vm_vcpus("3") == 3
    assert limits.vm_vcpus("0-1,4") == 3
    with pytest.raises(InvalidError, match="at most 64 vCPUs"):
        limits.vm_vcpus("65")
    assert limits.vm_memory_mb("512MiB", GIB) == 512
    assert limits.vm_memory_mb("50%", 4 * GIB) == 2048


def test_key_table_scopes_the_limits() -> None:
    check_config(INSTANCE, {"limits.cpu": "0-1", "limits.memory": "1GiB"}, "i", VM)
    check_config(INSTANCE, {k: "1" for k in ("limits.cpu", "limits.processes")}, "i", CONTAINER)
    with pytest.raises(InvalidError, match="not supported for virtual machines"):
        check_config(INSTANCE, {"limits.processes": "10"}, "i", VM)
    with pytest.raises(InvalidError, match=r'Invalid value for instance "i" key "limits.memory"'):
        check_config(INSTANCE, {"limits.memory": "lots"}, 'instance "i"', CONTAINER)


_MOUNTINFO_HYBRID = """\
30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
"""
_CGROUP_HYBRID = "5:pids:/\n4:memory:/a/b\n3:cpu,cpuacct:/\n2:name=systemd:/x\n0::/x\n"


def test_layout_hybrid_uses_the_v1_hierarchies_and_the_daemons_own_groups() -> None:
    lay = cgroups.parse_layout(_MOUNTINFO_HYBRID, _CGROUP_HYBRID, "")
    assert lay.version == 1
    assert lay.mounts["cpu"] == lay.mounts["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert "cpuset" not in lay.mounts
    assert lay.own[Path("/sys/fs/cgroup/memory")] == "a/b"
    assert lay.own[Path("/sys/fs/cgroup/systemd")] == "x"


def test_layout_pure_v2_has_the_enabled_controllers() -> None:
    mountinfo = "25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    lay = cgroups.parse_layout(mountinfo, "0::/\n", "cpuset cpu io memory pids\n")
    assert lay.version == 2
    assert set(lay.mounts) == {"cpu", "cpuacct", "cpuset", "memory", "pids"}
    assert lay.own == {Path("/sys/fs/cgroup"): ""}
    no_pids = cgroups.parse_layout(mountinfo, "0::/\n", "cpu memory\n")
    assert "pids" not in no_pids.mounts and "cpuset" not in no_pids.mounts


def test_incus_limits_pincus_does_not_apply_are_refused_by_name() -> None:
    with pytest.raises(InvalidError, match=r'Key "limits.memory.swap" of i is not supported yet'):
        check_config(INSTANCE, {"limits.memory.swap": "false"}, "i", CONTAINER)


def test_the_controllers_of_a_v2_mount_are_read_from_its_root(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu memory pids\n")
    mountinfo = f"25 20 0:22 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    controllers = cgroups._v2_controllers(mountinfo)
    assert controllers is not None
    lay = cgroups.parse_layout(mountinfo, "0::/\n", controllers)
    assert lay.version == 2 and set(lay.mounts) == {"cpu", "cpuacct", "cpuset", "memory", "pids"}
    assert (
        cgroups._v2_controllers(_MOUNTINFO_HYBRID.replace("/sys/fs/cgroup/unified", str(tmp_path)))
        is not None
    )
    assert cgroups._v2_controllers("32 30 0:28 / /x rw - cgroup cgroup rw,pids\n") is None
