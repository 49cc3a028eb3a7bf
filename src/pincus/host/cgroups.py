"""cgroups: one group per instance, `pincus-<tag>/<instance>`, in either layout of the host.

The layout is read from /proc/self/mountinfo: v1 (one hierarchy per controller, as this host's
hybrid layout mounts them) or v2 (one unified tree, Debian 12's default). Groups sit under the
daemon's own cgroup in each hierarchy, so what a container uses stays counted where the daemon's
is; `pincus-<tag>` ties them to the daemon's PINCUS_DIR. No policy here: the callers decide the
values, this module writes them into the right files and reads usage back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pincus.errors import HostError, InvalidError

# The controllers pincus sets limits with or reads usage from.
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids")
# v1 only: the named hierarchy systemd (in a container too) keeps its own tree in.
_SYSTEMD = "name=systemd"
# v1 hosts: the controller-less cgroup2 tree beside the v1 ones (hybrid layout). A container gets a
# group in it too, so it can mount a cgroup2 of its own: what systemd runs on.
_UNIFIED = "unified"
_NOT_CONTROLLERS = frozenset({_SYSTEMD, _UNIFIED})
_REMOVE_TIMEOUT = 2.0
_CPU_WEIGHT_DEFAULT = 100  # v2 cpu.weight; v1 cpu.shares is 1024 for the same share
_UNLIMITED_V1 = "-1"


@dataclass(frozen=True)
class Layout:
    version: int  # 1 or 2
    # v1: controller (or "name=systemd") -> mount point of its hierarchy; v2: each controller
    # enabled at the root -> the one cgroup2 mount point.
    mounts: dict[str, Path]
    # Hierarchy mount point -> the daemon's own cgroup in it (relative path).
    own: dict[Path, str]


@dataclass(frozen=True)
class Limits:
    """What a group may use; None is "no limit" (the default value is written, so an update that
    drops a key lifts its limit)."""

    cpus: frozenset[int] | None = None  # the cpuset
    cpu_weight: int | None = None  # relative share, 100 = default (v2 cpu.weight; v1 shares*100/1024)
    cpu_quota_us: int | None = None  # with cpu_period_us: a hard cap per period
    cpu_period_us: int | None = None
    memory_bytes: int | None = None
    processes: int | None = None

    def controllers(self) -> dict[str, str]:
        """Controller -> the limit needing it (for the "not available" error)."""
        needed: dict[str, str] = {}
        if self.cpus is not None:
            needed["cpuset"] = "cpus"
        if self.cpu_weight is not None or self.cpu_quota_us is not None:
            needed["cpu"] = "cpu allowance"
        if self.memory_bytes is not None:
            needed["memory"] = "memory"
        if self.processes is not None:
            needed["pids"] = "processes"
        return needed


@dataclass(frozen=True)
class GroupUsage:
    memory_bytes: int | None
    cpu_ns: int | None
    processes: int | None


class ControllerMissing(HostError):
    def __init__(self, controller: str) -> None:
        super().__init__(f'cgroup controller "{controller}" is not available on this host')
        self.controller = controller


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def parse_layout(mountinfo: str, self_cgroup: str, v2_controllers: str | None) -> Layout:
    """The layout from the text of /proc/self/mountinfo, /proc/self/cgroup and (when a cgroup2 is
    mounted) its root's cgroup.controllers. A v1 hierarchy wins over v2 for a controller."""
    v1: dict[str, Path] = {}
    v2_root: Path | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        point = Path(_unescape(fields[4]))
        # A later mount hides an earlier one at the same place: the last one counts.
        if rfields[0] == "cgroup2":
            v2_root = point
        elif rfields[0] == "cgroup":
            for opt in rfields[2].split(","):
                if opt in CONTROLLERS or opt == _SYSTEMD:
                    v1[opt] = point
    own_v1: dict[str, str] = {}
    own_v2 = "/"
    for line in self_cgroup.splitlines():
        num, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if num == "0" and names == "":
            own_v2 = path
        for name in names.split(","):
            own_v1[name] = path
    has_v1_controller = any(c in v1 for c in CONTROLLERS)
    if not has_v1_controller and v2_root is not None:
        enabled = (v2_controllers or "").split()
        # v2 counts CPU time in the cpu controller's cpu.stat: "cpuacct" is that.
        mounts = {c: v2_root for c in CONTROLLERS if c in enabled or (c == "cpuacct" and "cpu" in enabled)}
        return Layout(2, mounts, {v2_root: own_v2.lstrip("/")})
    own = {point: own_v1.get(name, "/").lstrip("/") for name, point in v1.items()}
    if v2_root is not None and has_v1_controller:
        v1[_UNIFIED] = v2_root
        own[v2_root] = own_v2.lstrip("/")
    return Layout(1, v1, own)


@cache
def layout() -> Layout:
    """This host's layout, read once: mounts do not change under a running daemon."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        self_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError as e:
        raise HostError(f"read cgroup layout: {e.strerror}") from e
    return parse_layout(mountinfo, self_cgroup, _v2_controllers(mountinfo))


def _v2_controllers(mountinfo: str) -> str | None:
    """The cgroup.controllers of the (last) cgroup2 mount; None without one."""
    points = [line.partition(" - ")[0].split()[4] for line in mountinfo.splitlines() if " - cgroup2 " in line]
    if not points:
        return None
    try:
        return (Path(_unescape(points[-1])) / "cgroup.controllers").read_text()
    except OSError:
        return ""


def available() -> frozenset[str]:
    """The controllers this host can limit or count with."""
    return frozenset(layout().mounts) - _NOT_CONTROLLERS


def has_cgroup2() -> bool:
    """Whether an instance has a group in a cgroup2 tree (v2, or v1's unified beside it): then its
    own cgroup namespace can mount a cgroup2 rooted at that group."""
    lay = layout()
    return lay.version == 2 or _UNIFIED in lay.mounts


def _check_part(part: str, what: str) -> None:
    if not part or part in (".", "..") or "/" in part or "\0" in part or "\n" in part or len(part) > 200:
        raise InvalidError(f"Invalid {what} {part!r} for a cgroup name")


def _parent(lay: Layout, point: Path, tag: str) -> Path:
    _check_part(tag, "daemon tag")
    return point / lay.own[point] / f"pincus-{tag}"


def _hierarchies(lay: Layout) -> list[Path]:
    """Each mounted hierarchy pincus uses, once (v1 may mount cpu and cpuacct together)."""
    return sorted(set(lay.mounts.values()))


def group_paths(tag: str, name: str) -> list[Path]:
    """The instance's group directory in every hierarchy pincus uses."""
    _check_part(name, "instance name")
    lay = layout()
    return [_parent(lay, point, tag) / name for point in _hierarchies(lay)]


def _path(lay: Layout, controller: str, tag: str, name: str) -> Path:
    point = lay.mounts.get(controller)
    if point is None:
        raise ControllerMissing(controller)
    return _parent(lay, point, tag) / name


def _write(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise HostError(f"cgroup: open {path}: {e.strerror}") from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise HostError(f"cgroup: write {value!r} to {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise HostError(f"cgroup: read {path}: {e.strerror}") from e


def _mkdir(path: Path) -> bool:
    """True when this call made it."""
    try:
        path.mkdir()
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise HostError(f"cgroup: create {path}: {e.strerror}") from e


def _fill_cpuset(lay: Layout, path: Path) -> None:
    """A new v1 cpuset is empty and takes no task until given its parent's CPUs and memory nodes."""
    cpuset = lay.mounts.get("cpuset")
    if lay.version == 1 and cpuset is not None and path.is_relative_to(cpuset):
        for f in ("cpuset.cpus", "cpuset.mems"):
            if not _read(path / f):
                _write(path / f, _read(path.parent / f))


def _enable_v2(path: Path) -> None:
    """Let PATH's children use every controller PATH has (v2's subtree_control)."""
    have = _read(path / "cgroup.controllers").split()
    on = set(_read(path / "cgroup.subtree_control").split())
    want = [c for c in ("cpu", "cpuset", "memory", "pids") if c in have and c not in on]
    if want:
        try:
            _write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in want))
        except HostError as e:
            raise HostError(
                f"{e}: the cgroup {path} holds processes itself, so v2 lets its children have no "
                "controllers; run pincusd in a leaf cgroup of its own"
            ) from e


def create_group(tag: str, name: str) -> None:
    """Make the instance's group in every hierarchy (an existing one is kept: limits are written
    whole afterwards). On failure the directories this call made are removed again."""
    _check_part(name, "instance name")
    lay = layout()
    made: list[Path] = []
    try:
        for point in _hierarchies(lay):
            parent = _parent(lay, point, tag)
            base = parent.parent
            if lay.version == 2:
                _enable_v2(base)
            if _mkdir(parent):
                made.append(parent)
            _fill_cpuset(lay, parent)
            if lay.version == 2:
                _enable_v2(parent)
            group = parent / name
            if _mkdir(group):
                made.append(group)
            _fill_cpuset(lay, group)
    except BaseException:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def procs_files(tag: str, name: str) -> list[Path]:
    """The cgroup.procs files a process writes "0" to, to join the group in every hierarchy where
    it exists (none for a container started before it had a group)."""
    return [p / "cgroup.procs" for p in group_paths(tag, name) if p.is_dir()]


def init_procs_files(tag: str, name: str, pid: int) -> list[Path]:
    """The cgroup.procs files of the groups PID (the container's init) is in, in every hierarchy
    where the instance has a group: a process joining the container joins init there. A systemd
    inside moves itself to a sub-group and v2 then refuses processes in the group itself. A path
    that is not under the instance's group (not one the kernel would give it) counts as the group."""
    lay = layout()
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError as e:
        raise HostError(f"cgroup: read the groups of process {pid}: {e.strerror}") from e
    by_point: dict[Path, str] = {}
    for line in text.splitlines():
        num, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if num == "0" and names == "":
            point = lay.mounts.get(_UNIFIED) if lay.version == 1 else next(iter(lay.mounts.values()), None)
        else:
            point = next((lay.mounts[n] for n in names.split(",") if n in lay.mounts), None)
        if point is not None:
            by_point[point] = path
    out = []
    for point in _hierarchies(lay):
        group = _parent(lay, point, tag) / name
        if not group.is_dir():
            continue
        inner = Path(point / by_point.get(point, "/").lstrip("/"))
        inside = inner.is_relative_to(group) and ".." not in inner.parts and inner.is_dir()
        out.append((inner if inside else group) / "cgroup.procs")
    return out


def attach(tag: str, name: str, pid: int) -> None:
    """Move PID (all its threads) into the instance's group in every hierarchy."""
    for f in procs_files(tag, name):
        _write(f, str(pid))


def join_self(files: list[Path]) -> None:
    """In a forked child before exec: move this process into the groups of FILES (procs_files)."""
    for f in files:
        fd = os.open(f, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def _cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def apply_limits(tag: str, name: str, limits: Limits) -> None:
    """Make the group carry exactly LIMITS (a limit left out is lifted)."""
    lay = layout()
    for controller in limits.controllers():
        if controller not in lay.mounts:
            raise ControllerMissing(controller)
    if "cpuset" in lay.mounts:
        path = _path(lay, "cpuset", tag, name)
        cpus = _read(path.parent / ("cpuset.cpus.effective" if lay.version == 2 else "cpuset.cpus"))
        _write(path / "cpuset.cpus", cpus if limits.cpus is None else _cpu_list(limits.cpus))
    if "cpu" in lay.mounts:
        _apply_cpu(lay, _path(lay, "cpu", tag, name), limits)
    if "memory" in lay.mounts:
        _apply_memory(lay, _path(lay, "memory", tag, name), limits.memory_bytes)
    if "pids" in lay.mounts:
        processes = "max" if limits.processes is None else str(limits.processes)
        _write(_path(lay, "pids", tag, name) / "pids.max", processes)


def _apply_cpu(lay: Layout, path: Path, limits: Limits) -> None:
    weight = _CPU_WEIGHT_DEFAULT if limits.cpu_weight is None else limits.cpu_weight
    quota, period = limits.cpu_quota_us, limits.cpu_period_us or 100_000
    if lay.version == 2:
        _write(path / "cpu.weight", str(max(1, min(10_000, weight))))
        _write(path / "cpu.max", f"{'max' if quota is None else quota} {period}")
        return
    _write(path / "cpu.shares", str(max(2, weight * 1024 // 100)))
    # The kernel checks quota against the period already there: lift the quota first.
    _write(path / "cpu.cfs_quota_us", _UNLIMITED_V1)
    _write(path / "cpu.cfs_period_us", str(period))
    if quota is not None:
        _write(path / "cpu.cfs_quota_us", str(quota))


def _apply_memory(lay: Layout, path: Path, limit: int | None) -> None:
    if lay.version == 2:
        _write(path / "memory.max", "max" if limit is None else str(limit))
        if (path / "memory.swap.max").exists():
            # No swap beyond the limit, as v1's memsw below: a hog meets the limit, not the disk.
            _write(path / "memory.swap.max", "max" if limit is None else "0")
        return
    value = _UNLIMITED_V1 if limit is None else str(limit)
    memsw = path / "memory.memsw.limit_in_bytes"
    if not memsw.exists():
        _write(path / "memory.limit_in_bytes", value)
        return
    # The kernel keeps memsw >= memory at every step: order the two writes by direction.
    current = int(_read(path / "memory.limit_in_bytes"))
    if limit is None or limit > current:
        _write(memsw, value)
        _write(path / "memory.limit_in_bytes", value)
    else:
        _write(path / "memory.limit_in_bytes", value)
        _write(memsw, value)


def _int_or_none(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def usage(tag: str, name: str) -> GroupUsage | None:
    """What the group uses now; None when it does not exist. A counter without its controller is None."""
    lay = layout()
    paths = group_paths(tag, name)
    if not any(p.is_dir() for p in paths):
        return None
    memory = cpu = procs = None
    if "memory" in lay.mounts:
        path = _path(lay, "memory", tag, name)
        memory = _int_or_none(path / ("memory.current" if lay.version == 2 else "memory.usage_in_bytes"))
    if "cpuacct" in lay.mounts and lay.version == 1:
        cpu = _int_or_none(_path(lay, "cpuacct", tag, name) / "cpuacct.usage")
    elif "cpu" in lay.mounts and lay.version == 2:
        try:
            text = (_path(lay, "cpu", tag, name) / "cpu.stat").read_text()
            stat = dict(line.split() for line in text.splitlines())
            cpu = int(stat["usage_usec"]) * 1000
        except (OSError, ValueError, KeyError):
            cpu = None
    if "pids" in lay.mounts:
        procs = _int_or_none(_path(lay, "pids", tag, name) / "pids.current")
    return GroupUsage(memory, cpu, procs)


def remove_group(tag: str, name: str, timeout: float = _REMOVE_TIMEOUT) -> None:
    """Remove the instance's group once its processes are gone (the kernel may still be reaping
    them: EBUSY is retried until TIMEOUT). Missing is fine; the daemon's parent goes when empty."""
    lay = layout()
    deadline = time.monotonic() + timeout
    for path in (p for top in group_paths(tag, name) for p in _depth_first(top)):
        while True:
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    procs = _read(path / "cgroup.procs").split() if (path / "cgroup.procs").exists() else []
                    raise HostError(
                        f"cgroup: remove {path}: {e.strerror} "
                        f"(processes still in it: {' '.join(procs) or 'none'})"
                    ) from e
                time.sleep(0.02)
    _remove_parents(lay, tag)


def _depth_first(top: Path) -> list[Path]:
    """TOP's sub-groups, deepest first, then TOP: what a container's own init (systemd) made in the
    groups given to it must go before them."""
    found: list[Path] = []
    try:
        for entry in os.scandir(top):
            if entry.is_dir(follow_symlinks=False):
                found.extend(_depth_first(Path(entry.path)))
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HostError(f"cgroup: list {top}: {e.strerror}") from e
    return [*found, top]


def _remove_parents(lay: Layout, tag: str) -> None:
    for point in _hierarchies(lay):
        # Another instance's group is in it (ENOTEMPTY/EBUSY), or it is gone already.
        with contextlib.suppress(OSError):
            _parent(lay, point, tag).rmdir()


def list_groups(tag: str) -> list[str]:
    """The instance groups of this daemon in any hierarchy (for leftovers after a crash)."""
    lay = layout()
    names: set[str] = set()
    for point in _hierarchies(lay):
        parent = _parent(lay, point, tag)
        try:
            names.update(e.name for e in os.scandir(parent) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            continue
        except OSError as e:
            raise HostError(f"cgroup: list {parent}: {e.strerror}") from e
    return sorted(names)


def _delegated_files(lay: Layout, tag: str, name: str) -> Iterator[Path]:
    v2_point = next(iter(lay.mounts.values()), None) if lay.version == 2 else lay.mounts.get(_UNIFIED)
    if v2_point is not None:
        path = _parent(lay, v2_point, tag) / name
        yield path
        for f in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            yield path / f
    point = lay.mounts.get(_SYSTEMD) if lay.version == 1 else None
    if point is not None:
        path = _parent(lay, point, tag) / name
        yield path
        for f in ("cgroup.procs", "tasks"):
            yield path / f


def delegate(tag: str, name: str, uid: int, gid: int) -> None:
    """Give the container's root (host UID/GID) a subtree of its own to manage, as systemd wants:
    in the cgroup2 tree (v2, or v1's unified) the group dir and its cgroup.procs, subtree_control and
    threads; on v1 also the name=systemd group. Its limit files stay the host's: sub-groups can
    only narrow them."""
    if uid < 0 or gid < 0:
        raise InvalidError(f"Invalid owner {uid}:{gid} for a cgroup")
    for path in _delegated_files(layout(), tag, name):
        try:
            os.chown(path, uid, gid)
        except OSError as e:
            raise HostError(f"cgroup: give {path} to {uid}:{gid}: {e.strerror}") from e


def online_cpus() -> frozenset[int]:
    """The host's online CPUs (/sys/devices/system/cpu/online)."""
    try:
        text = Path("/sys/devices/system/cpu/online").read_text().strip()
        cpus: set[int] = set()
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except (OSError, ValueError) as e:
        raise HostError(f"read online CPUs: {e}") from e
    return frozenset(cpus)


def host_memory_bytes() -> int:
    """MemTotal of /proc/meminfo."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError) as e:
        raise HostError(f"read host memory: {e}") from e
    raise HostError("read host memory: no MemTotal in /proc/meminfo")
