"""Read a process's cgroup files the kernel's way: /proc/<pid>/cgroup, then /sys/fs/cgroup.

Independent of pincus.host.cgroups on purpose, so tests check the kernel, not pincus's own idea.
Both layouts: v1 hierarchies mounted at /sys/fs/cgroup/<controller> (this host), or one cgroup2
tree at /sys/fs/cgroup (Debian 12, the test guest).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def is_v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


def groups(pid: int) -> dict[str, str]:
    """Controller (v2: "") -> the process's group path, from /proc/<pid>/cgroup."""
    out: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            out[name] = path
    return out


def group_dir(pid: int, controller: str) -> Path:
    if is_v2():
        return ROOT / groups(pid)[""].lstrip("/")
    return ROOT / controller / groups(pid)[controller].lstrip("/")


def read(pid: int, controller: str, file: str) -> str:
    return (group_dir(pid, controller) / file).read_text().strip()


def flat(text: str) -> dict[str, int]:
    """A "key value" per line file (memory.events, pids.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out
