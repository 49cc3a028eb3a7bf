"""Containers: namespaces around a supervised init, NICs wired into their netns."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pincus import netstate
from pincus.config.keys import CONTAINER
from pincus.db import instances as db_instances
from pincus.devices.base import NicRun
from pincus.errors import ConflictError, HostError
from pincus.host import addresses, cgroups, files, links, netns, procstat
from pincus.host import container as host_container
from pincus.instances import limits
from pincus.instances.base import Instance
from pincus.reverter import Reverter

log = logging.getLogger(__name__)


class Container(Instance):
    type: ClassVar[str] = CONTAINER

    def _proc(self) -> host_container.ContainerProcess | None:
        rt = db_instances.get_runtime(self.state.store, self.name)
        return None if rt is None else host_container.ContainerProcess(rt.pid, rt.start_time)

    @property
    def netns_handle(self) -> Path:
        return self.host(host_container.netns_handle, self.dir)

    @property
    def netns(self) -> Path | None:
        return self.netns_handle if self.host(netns.netns_is_bound, self.netns_handle) else None

    def is_alive(self) -> bool:
        proc = self._proc()
        return proc is not None and self.host(host_container.is_alive, proc)

    def _spawn(self, nics: list[NicRun]) -> None:
        with Reverter() as undo:
            self._cgroup_create()
            undo.add(self._cgroup_remove)
            proc = self.host(
                host_container.spawn_container, self.name, self.name, self.dir, self.dir / "console.log"
            )
            undo.add(self.host, host_container.stop_container, proc, 0.0, True, self.dir)
            # Moves into spawn_container's prepare(pid) callback once that lands (rootfs branch),
            # so init is in its group before it runs anything of the container's.
            self._cgroup_attach(proc.pid)
            db_instances.set_runtime(
                self.state.store, self.name, db_instances.Runtime(proc.pid, proc.start_time)
            )
            undo.success()

    def _kill(self, timeout: float, force: bool) -> None:
        proc = self._proc()
        if proc is not None:
            # The netns handle outlives init so devices can still be taken back from the netns.
            self.host(host_container.stop_container, proc, timeout, force)

    def _release(self) -> None:
        self.host(netns.release_netns, self.netns_handle)
        self._cgroup_remove()

    # --- the instance's cgroup (limits.*) ----------------------------------------------------------

    def _cgroup_limits(self, config: Mapping[str, str]) -> cgroups.Limits:
        """CONFIG's limits, checked against this host (online CPUs, memory, controllers)."""
        if not any(k in config for k in limits.CGROUP_KEYS):
            return cgroups.Limits()
        wanted = limits.cgroup_limits(
            config, self.host(cgroups.online_cpus), self.host(cgroups.host_memory_bytes)
        )
        limits.check_controllers(wanted, self.host(cgroups.available))
        return wanted

    def _cgroup_create(self) -> None:
        """The group, with the limits in it, before init exists: nothing runs unlimited."""
        wanted = self._cgroup_limits(self.rec.config)
        with Reverter() as undo:
            self.host(cgroups.create_group, self.state.tag, self.name)
            undo.add(self._cgroup_remove)
            self.host(cgroups.apply_limits, self.state.tag, self.name, wanted)
            undo.success()

    def _cgroup_attach(self, pid: int) -> None:
        self.host(cgroups.attach, self.state.tag, self.name, pid)

    def _cgroup_remove(self) -> None:
        """After every process is gone. A group the kernel will not let go (a process it has not
        reaped yet) stays for the daemon's next reconcile, which removes leftovers."""
        try:
            self.host(cgroups.remove_group, self.state.tag, self.name)
        except HostError as e:
            log.warning("Instance %s: its cgroup stays for now: %s", self.name, e)

    def update_config(self, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        """limits.* apply live to the running container's group."""
        if limits.changed(old, new) and self.is_alive():
            self.host(cgroups.apply_limits, self.state.tag, self.name, self._cgroup_limits(new))

    def _attach(self, nic: NicRun) -> None:
        handle = str(self.netns_handle)
        if nic.move_link:
            self.host(links.move_link_to_netns, nic.move_link, handle, new_name=nic.name)
            if nic.hwaddr:
                self.host(links.set_mac, nic.name, nic.hwaddr, netns=handle)
            if nic.mtu:
                self.host(links.set_mtu, nic.name, nic.mtu, netns=handle)
        self.host(links.set_up, nic.name, netns=handle)

    def adopt(self) -> None:
        """A daemon that lost its mount namespace re-binds the netns from the running init."""
        proc = self._proc()
        if proc is not None and not self.host(netns.netns_is_bound, self.netns_handle):
            self.host(files.ensure_dir, self.dir)
            self.host(netns.bind_netns, proc.pid, self.netns_handle)

    def nic_state(self) -> dict[str, dict[str, Any]]:
        handle = self.netns
        if handle is None:
            return {}
        out = {"lo": self._link_state("lo", str(handle), "loopback")}
        for dev in self.devices():
            run_name = dev.config.get("name") or self.volatile(dev.vkey("name")) or dev.name
            if self.host(links.get_link, run_name, netns=str(handle)) is None:
                continue
            out[run_name] = {
                **self._link_state(run_name, str(handle), "broadcast"),
                "device": dev.name,
                "path": dev.describe(),
                "owns": [str(o) for o in dev.owned()],
                "host_name": self.volatile(dev.vkey("host_name")) or "",
            }
        return out

    def _link_state(self, name: str, handle: str, kind: str) -> dict[str, Any]:
        """One interface inside the container as Incus's instance state shows it."""
        link = self.host(links.get_link, name, netns=handle)
        return {
            "hwaddr": link.mac if link else "",
            "host_name": "",
            "mtu": link.mtu if link else 0,
            "state": "up" if link and link.up else "down",
            "type": kind,
            "addresses": netstate.info_objects(self.host(addresses.link_address_info, name, netns=handle)),
            "counters": netstate.counters(self.host(links.link_stats, name, netns=handle)),
        }

    def exec(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        fds: tuple[int, int, int],
        tty: bool = False,
        started: Callable[[int], None] | None = None,
    ) -> int:
        proc = self._proc()
        if proc is None or not self.host(host_container.is_alive, proc):
            raise ConflictError(f'Instance "{self.name}" is not running')
        return self.host(
            host_container.exec_in_container,
            proc,
            argv,
            env,
            cwd,
            *fds,
            tty=tty,
            started=started,
            cgroup_procs=self.host(cgroups.procs_files, self.state.tag, self.name),
        )

    def usage(self) -> procstat.Usage:
        counted = self.host(procstat.pid_namespace_usage, self.pid())
        group = self.host(cgroups.usage, self.state.tag, self.name)
        if group is None:
            return counted
        # The group counts what /proc cannot see: page cache, and processes that have exited.
        return procstat.Usage(
            counted.processes,
            counted.memory_bytes if group.memory_bytes is None else group.memory_bytes,
            counted.cpu_ns if group.cpu_ns is None else group.cpu_ns,
        )

    def signal_exec(self, pid: int, sig: int) -> None:
        self.host(host_container.signal_exec, pid, sig)
