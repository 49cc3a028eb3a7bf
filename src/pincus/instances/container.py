"""Containers: namespaces around a supervised init, NICs wired into their netns."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pincus import idmaps, netstate
from pincus.config.keys import CONTAINER
from pincus.db import instances as db_instances
from pincus.db import storage as db_storage
from pincus.devices.base import NicRun
from pincus.errors import ConflictError, HostError
from pincus.host import cgroups, console_log, files, links, linkview, netns, procstat
from pincus.host import container as host_container
from pincus.host import idmap as idmap_host
from pincus.instances import idmap, limits, templates
from pincus.instances.base import Instance
from pincus.reverter import Reverter
from pincus.storage import paths

log = logging.getLogger(__name__)


def _recorded_block(name: str, volatile: Mapping[str, str]) -> idmap.Block | None:
    """The id block another instance holds alone, as its volatile keys record it."""
    base = volatile.get("volatile.idmap.base")
    if not base:
        return None
    current = idmaps.from_json(volatile.get("volatile.idmap.current") or "[]")
    return idmap.Block(name, int(base), current[0].size if current else idmap.DEFAULT_SIZE)


class Container(Instance):
    type: ClassVar[str] = CONTAINER
    # root's ranges are read from here (tests hand their own files to host/idmap.py directly).
    subid_files: ClassVar[tuple[Path, Path]] = (idmap_host.SUBUID, idmap_host.SUBGID)

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

    # --- the root volume -------------------------------------------------------------------------

    def root_device(self) -> dict[str, str] | None:
        """The expanded root disk device (type=disk, path=/), if any."""
        for _, cfg in sorted(self.rec.devices.items()):
            if cfg.get("type") == "disk" and cfg.get("path") == "/":
                return cfg
        return None

    @property
    def volume(self) -> Path | None:
        """The instance volume (metadata.yaml, rootfs/, templates/): on the pool its record names
        (the root disk's, or the default pool's when no root disk was given); none for an instance
        made before pools existed."""
        pool = db_storage.instance_pool(self.state.store, self.name)
        if pool is None:
            root = self.root_device()
            if root is None or not root.get("pool"):
                return None
            pool = root["pool"]
        return paths.instance_volume(self.state.dir, pool, self.name)

    def _idmap(self) -> idmaps.IdMap:
        """Allocate this start's id map (volatile.idmap.*), checked against every other instance."""
        config = self.rec.config
        if idmap.is_true(config.get("security.privileged")):
            return ()
        uids, gids = self.host(idmap_host.root_ranges, *self.subid_files)
        others = [
            block
            for rec in db_instances.list_all(self.state.store)
            if rec.name != self.name and (block := _recorded_block(rec.name, rec.volatile)) is not None
        ]
        return idmap.allocate(self.name, config, self.rec.volatile, uids, gids, others)

    def _shift_volume(self, volume: Path, new: idmaps.IdMap) -> None:
        """Own the rootfs by the ids NEW maps to, once: volatile.last_state.idmap says what the
        files are shifted to now (absent: as the image has them), so a restart does not shift twice
        and a new map shifts back first."""
        recorded = self.volatile("volatile.last_state.idmap")
        last = idmaps.from_json(recorded or "[]")
        if last != new:
            self.host(idmap_host.shift_tree, volume / "rootfs", last, new)
        if last != new or recorded is None:
            # Recorded on every first start too (as Incus does): "[]" says the files are unshifted.
            self.set_volatile({"volatile.last_state.idmap": idmaps.to_json(new)})

    def _templates(self, volume: Path) -> tuple[tuple[str, str, int], ...]:
        """Rendered templates due at this start (the pending volatile.apply_template trigger, and
        every start's)."""
        metadata = self.host(host_container.read_volume_file, volume, "metadata.yaml")
        if metadata is None:
            return ()
        out = []
        for tpl in templates.due(
            templates.parse_metadata(metadata), self.volatile("volatile.apply_template")
        ):
            text = self.host(host_container.read_volume_file, volume, f"templates/{tpl.template}")
            rendered = None if text is None else templates.render(text, self.name)
            if rendered is None:
                log.warning(
                    "Instance %s: template %s for %s skipped (missing or unsupported)",
                    self.name,
                    tpl.template,
                    tpl.path,
                )
                continue
            out.append((tpl.path, rendered, 0o644))
        return tuple(out)

    def _mounts(self) -> tuple[host_container.BindMount, ...]:
        """Every other disk device: its host source bound at its path."""
        return tuple(
            host_container.BindMount(Path(cfg["source"]), cfg["path"], idmap.is_true(cfg.get("readonly")))
            for _, cfg in sorted(self.rec.devices.items())
            if cfg.get("type") == "disk" and cfg.get("path") != "/" and cfg.get("source")
        )

    def _spawn(self, nics: list[NicRun]) -> None:
        with Reverter() as undo:
            # The group, with its limits, before init exists: nothing of the container runs unlimited.
            self._cgroup_create()
            undo.add(self._cgroup_remove)
            volume = self.volume
            if volume is None:
                raise ConflictError(
                    f'Instance "{self.name}" has no root volume (made before storage pools): '
                    "delete it and create it again from an image"
                )
            proc = self._spawn_on_root(volume)
            undo.add(self.host, host_container.stop_container, proc, 0.0, True, self.dir)
            db_instances.set_runtime(
                self.state.store, self.name, db_instances.Runtime(proc.pid, proc.start_time)
            )
            undo.success()

    def _spawn_on_root(self, volume: Path) -> host_container.ContainerProcess:
        new = self._idmap()
        base = new[0].hostid if new else None
        isolated = bool(new) and (
            idmap.is_true(self.rec.config.get("security.idmap.isolated"))
            or bool(self.rec.config.get("security.idmap.base"))
        )
        self.set_volatile({
            "volatile.idmap.base": str(base) if isolated else None,
            "volatile.idmap.current": idmaps.to_json(new),
        })  # fmt: skip
        # An idmapped mount where the kernel and filesystem take one: the files stay as the image
        # has them; else a one-time chown shift.
        idmapped = bool(new) and self.host(idmap_host.supports_idmapped_mounts, volume / "rootfs")
        spec = host_container.RootSpec(
            volume / "rootfs", new, self._mounts(), self._templates(volume), idmapped=idmapped,
            cgroup2=self.host(cgroups.has_cgroup2),
        )  # fmt: skip
        self.host(host_container.check_root, self.name, spec)  # before the volume is changed
        self._shift_volume(volume, () if idmapped else new)
        proc = self.host(
            host_container.spawn_container, self.name, self.name, self.dir, self.dir / console_log.LOG_NAME,
            spec, self._prepare,
        )  # fmt: skip
        if self.volatile("volatile.apply_template") is not None:
            self.set_volatile({"volatile.apply_template": None})
        return proc

    def finish_interrupted_start(self) -> None:
        self.host(host_container.kill_recorded_init, self.dir)
        super().finish_interrupted_start()

    def restore_volatile(self, snapshot: dict[str, str]) -> None:
        """As every instance, except volatile.last_state.idmap: it records the files on disk,
        which a failed start does not shift back."""
        on_disk = self.rec.volatile.get("volatile.last_state.idmap")
        before = snapshot.get("volatile.last_state.idmap")
        # Absent and "[]" both say unshifted: the snapshot's stands then (nothing of it changed).
        if on_disk is not None and idmaps.from_json(on_disk) != idmaps.from_json(before or "[]"):
            snapshot = {**snapshot, "volatile.last_state.idmap": on_disk}
        super().restore_volatile(snapshot)

    def _prepare(self, pid: int) -> None:
        """Called by spawn_container with the host pid of the container's first process, after its
        user namespace is mapped and before its other namespaces exist: the instance's cgroup is
        attached here, so the cgroup namespace is rooted at it and init runs inside its limits."""
        self._cgroup_attach(pid)

    def _kill(self, timeout: float, force: bool) -> None:
        proc = self._proc()
        if proc is not None:
            volume = self.volume
            sig = (
                signal.SIGTERM if volume is None else self.host(host_container.halt_signal, volume / "rootfs")
            )
            # The netns handle outlives init so devices can still be taken back from the netns.
            self.host(host_container.stop_container, proc, timeout, force, halt_signal=sig)

    def _release(self) -> None:
        self.host(netns.release_netns, self.netns_handle)
        self.host(host_container.forget_recorded_init, self.dir)
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
        root = idmaps.root_owner(idmaps.from_json(self.volatile("volatile.idmap.current") or "[]"))
        if root is not None:
            # Its own sub-groups for the container's root to manage (systemd needs them).
            self.host(cgroups.delegate, self.state.tag, self.name, *root)

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

    def open_terminal(self, width: int, height: int) -> tuple[int, int]:
        # One of the container's own devpts: a host terminal has no /dev/pts entry in there.
        proc = self._proc()
        if proc is None or not self.host(host_container.is_alive, proc):
            raise ConflictError(f'Instance "{self.name}" is not running')
        return self.host(host_container.open_terminal, proc, width, height)

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
            cgroup_procs=self.host(cgroups.init_procs_files, self.state.tag, self.name, proc.pid),
        )

    def pid_namespace_init(self) -> int:
        return self.pid()

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
