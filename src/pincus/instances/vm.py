"""Virtual machines: QEMU with TAP NICs, controlled over QMP."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from typing import Any, ClassVar

from pincus import netstate
from pincus.config.keys import VM
from pincus.db import instances as db_instances
from pincus.devices.base import NicRun
from pincus.errors import InvalidError
from pincus.host import cgroups, links, procstat, qemu
from pincus.instances import limits
from pincus.instances.base import Instance

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 256
# A live guest acknowledges an unplug in ~0.3 s; a paused or OS-less one never does.
UNPLUG_TIMEOUT = 3.0


def _unique_pairs(args: list[str]) -> list[str]:
    """`-device X` pairs once each: two USB NICs share one USB controller."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if (flag, value) not in seen:
            seen.add((flag, value))
            out += [flag, value]
    return out


# Slots per boot.priority value: QEMU refuses a bootindex twice, and NICs may share a priority.
_BOOT_SLOTS = 64


def boot_index(priority: int | None, used: set[int]) -> int | None:
    """QEMU's bootindex (lowest boots first) for a NIC of this boot.priority (highest first).

    A function of the priority, not of a position among the NICs, so a hot-plugged NIC takes its
    place among running ones without renumbering them; `used` holds the indexes already taken.
    """
    if not priority:
        return None
    base = (65535 - priority) * _BOOT_SLOTS
    for index in range(base, base + _BOOT_SLOTS):
        if index not in used:
            used.add(index)
            return index
    raise InvalidError(f"At most {_BOOT_SLOTS} NICs may share boot.priority {priority}")


def tap_nic(nic: NicRun, used: set[int]) -> qemu.TapNic:
    return qemu.TapNic(
        id=nic.device, ifname=nic.host_name, mac=nic.hwaddr, bootindex=boot_index(nic.boot_priority, used)
    )


class VirtualMachine(Instance):
    type: ClassVar[str] = VM

    def _proc(self) -> qemu.QemuProcess | None:
        rt = db_instances.get_runtime(self.state.store, self.name)
        if rt is None:
            return None
        return qemu.QemuProcess(rt.pid, rt.start_time, self.dir / "qmp.sock")

    def is_alive(self) -> bool:
        proc = self._proc()
        return proc is not None and self.host(qemu.is_alive, proc)

    def nics_first(self) -> bool:
        return True

    def _memory_mb(self) -> int:
        raw = self.rec.config.get("limits.memory")
        if raw is None:
            return DEFAULT_MEMORY_MB
        return limits.vm_memory_mb(raw, self.host(cgroups.host_memory_bytes))

    def validate_config(self) -> None:
        if "limits.cpu" in self.rec.config:
            limits.vm_vcpus(self.rec.config["limits.cpu"])

    def _spawn(self, nics: list[NicRun]) -> None:
        try:
            raw = shlex.split(self.rec.config.get("raw.qemu", ""))
        except ValueError as e:
            raise InvalidError(f'Invalid value for key "raw.qemu": {e}') from None
        used: set[int] = set()
        taps = [tap_nic(n, used) for n in nics if n.tap]
        passthrough = _unique_pairs([arg for n in nics for arg in n.qemu_args])
        raw_cpus = self.rec.config.get("limits.cpu")
        cpus = [] if raw_cpus is None else ["-smp", str(limits.vm_vcpus(raw_cpus))]
        proc = self.host(
            qemu.start_qemu, self.name, self.dir, taps, cpus + passthrough + raw, memory_mb=self._memory_mb()
        )
        db_instances.set_runtime(self.state.store, self.name, db_instances.Runtime(proc.pid, proc.start_time))

    def _kill(self, timeout: float, force: bool) -> None:
        proc = self._proc()
        if proc is not None:
            self.host(qemu.stop_qemu, proc, timeout, force)

    def _attach(self, nic: NicRun) -> None:
        if nic.passthrough or nic.qemu_args:
            raise InvalidError(
                f'Device "{nic.device}": a passed-through NIC cannot be hot-plugged; stop "{self.name}" first'
            )
        proc = self._proc()
        assert proc is not None
        used = set(self.host(qemu.nic_bootindexes, proc.qmp_path).values())
        self.host(qemu.add_tap_nic, proc.qmp_path, tap_nic(nic, used))

    def _detach(self, nic: NicRun) -> None:
        if nic.passthrough:
            raise InvalidError(
                f'Device "{nic.device}": a passed-through NIC cannot be hot-unplugged; '
                f'stop "{self.name}" first'
            )
        proc = self._proc()
        if proc is None or not self.host(qemu.is_alive, proc):
            return
        if not self.host(qemu.remove_nic, proc.qmp_path, nic.device, timeout=UNPLUG_TIMEOUT):
            log.warning("Guest of %s did not acknowledge the unplug of %s", self.name, nic.device)

    def nic_state(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for dev in self.devices():
            host_name = self.volatile(dev.vkey("host_name"))
            link = self.host(links.get_link, host_name) if host_name else None
            if link is None or host_name is None:
                continue
            out[dev.name] = {
                "device": dev.name,
                "path": dev.describe(),
                "owns": [str(o) for o in dev.owned()],
                "host_name": host_name,
                "hwaddr": self.volatile(dev.vkey("hwaddr")) or "",
                "mtu": link.mtu,
                "state": "up" if link.carrier else "down",
                "type": "broadcast",
                "addresses": netstate.cidr_objects(dev.leased_addresses()),
                "counters": netstate.counters(self.host(links.link_stats, host_name), peer_view=True),
            }
        return out

    def process_count(self, usage: procstat.Usage) -> int:
        return -1  # the guest's own processes are not visible without an agent

    def check_exec(self) -> None:
        raise InvalidError(
            f'Instance "{self.name}" is a virtual machine: exec needs a guest agent, '
            "which pincus VMs do not have"
        )

    def exec(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        fds: tuple[int, int, int],
        tty: bool = False,
        started: Callable[[int], None] | None = None,
    ) -> int:
        self.check_exec()
        raise AssertionError("check_exec always refuses")
