"""Containers: namespaces around a supervised init, NICs wired into their netns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pincus import netstate
from pincus.config.keys import CONTAINER
from pincus.db import instances as db_instances
from pincus.devices.base import NicRun
from pincus.errors import ConflictError
from pincus.host import container as host_container
from pincus.host import files, links, linkview, netns, procstat
from pincus.instances.base import Instance


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
        proc = self.host(
            host_container.spawn_container, self.name, self.name, self.dir, self.dir / "console.log"
        )
        db_instances.set_runtime(self.state.store, self.name, db_instances.Runtime(proc.pid, proc.start_time))

    def _kill(self, timeout: float, force: bool) -> None:
        proc = self._proc()
        if proc is not None:
            # The netns handle outlives init so devices can still be taken back from the netns.
            self.host(host_container.stop_container, proc, timeout, force)

    def _release(self) -> None:
        self.host(netns.release_netns, self.netns_handle)

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
        # The whole namespace in one read: per interface requests made `list` slow with many NICs.
        view = self.host(linkview.namespace_links, str(handle))
        out = {"lo": self._link_state(view, "lo", str(handle), "loopback")}
        for dev in self.devices():
            run_name = dev.config.get("name") or self.volatile(dev.vkey("name")) or dev.name
            if run_name not in view:
                continue
            out[run_name] = {
                **self._link_state(view, run_name, str(handle), "broadcast"),
                "device": dev.name,
                "path": dev.describe(),
                "owns": [str(o) for o in dev.owned()],
                "host_name": self.volatile(dev.vkey("host_name")) or "",
            }
        return out

    def _link_state(
        self, view: dict[str, linkview.LinkView], name: str, handle: str, kind: str
    ) -> dict[str, Any]:
        """One interface inside the container as Incus's instance state shows it."""
        seen = view.get(name)
        link = seen.link if seen else None
        # A link without counters in the dump: asked alone, which says why in its error.
        stats = seen.stats if seen and seen.stats else self.host(links.link_stats, name, netns=handle)
        return {
            "hwaddr": link.mac if link else "",
            "host_name": "",
            "mtu": link.mtu if link else 0,
            "state": "up" if link and link.up else "down",
            "type": kind,
            "addresses": netstate.info_objects(seen.addresses if seen else []),
            "counters": netstate.counters(stats),
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
            host_container.exec_in_container, proc, argv, env, cwd, *fds, tty=tty, started=started
        )

    def pid_namespace_init(self) -> int:
        return self.pid()

    def usage(self) -> procstat.Usage:
        return self.host(procstat.pid_namespace_usage, self.pid())

    def signal_exec(self, pid: int, sig: int) -> None:
        self.host(host_container.signal_exec, pid, sig)
