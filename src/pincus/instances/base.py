"""What every instance type shares: devices started and stopped in order, with rollback."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pincus.db import instances as db_instances
from pincus.db.instances import InstanceRecord
from pincus.devices import registry
from pincus.devices.base import Device, NicRun
from pincus.errors import ConflictError
from pincus.host import files, links, procstat, stdio, strays
from pincus.host.facade import Host
from pincus.ownership import Difference
from pincus.reverter import Reverter
from pincus.state import State

log = logging.getLogger(__name__)


class Instance:
    type: ClassVar[str]

    def __init__(self, state: State, rec: InstanceRecord, local: InstanceRecord | None = None) -> None:
        self.state = state
        # What the drivers see: config and devices with the profiles expanded in.
        self.rec = rec
        # The instance's own config and devices, as stored; the API shows and replaces these.
        self.local = rec if local is None else local

    @property
    def host(self) -> Host:
        """The door to the host (state.host): every host call goes through it."""
        return self.state.host

    # --- what devices see (devices.base.InstanceView) --------------------------------------------

    @property
    def name(self) -> str:
        return self.rec.name

    @property
    def dir(self) -> Path:
        return self.state.instances_dir / self.rec.name

    @property
    def netns(self) -> Path | None:
        return None

    @property
    def running(self) -> bool:
        return self.is_alive()

    def volatile(self, key: str) -> str | None:
        return self.rec.volatile.get(key)

    def names_inside(self, exclude: str) -> set[str]:
        """The interface names the NICs other than `exclude` take inside, or would once started,
        and, while it runs, the interfaces there now."""
        names = {
            cfg.get("name") or self.volatile(f"volatile.{dev}.name") or dev
            for dev, cfg in self.rec.devices.items()
            if dev != exclude and cfg.get("type") == "nic"
        }
        handle = self.netns
        if handle is not None:
            names |= {link.name for link in self.host(links.list_links, str(handle))}
        return names

    def set_volatile(self, values: dict[str, str | None]) -> None:
        db_instances.set_volatile(self.state.store, self.rec.name, values)
        for k, v in values.items():
            if v is None:
                self.rec.volatile.pop(k, None)
            else:
                self.rec.volatile[k] = v

    # --- process hooks of each instance type -----------------------------------------------------

    def has_runtime(self) -> bool:
        return db_instances.get_runtime(self.state.store, self.name) is not None

    def is_alive(self) -> bool:
        raise NotImplementedError

    def _spawn(self, nics: list[NicRun]) -> None:
        """Start the instance's process (VMs get their boot NICs here)."""
        raise NotImplementedError

    def _kill(self, timeout: float, force: bool) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Drop what outlives the process (e.g. a netns handle) once devices are stopped."""

    def _attach(self, nic: NicRun) -> None:
        """Make one started NIC visible inside the running instance."""
        raise NotImplementedError

    def _detach(self, nic: NicRun) -> None:
        """Take one NIC away from the running instance before its device cleans the host."""

    def validate_config(self) -> None:
        """Refuse what the key tables cannot see: a value this instance type cannot run with."""

    def update_config(self, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        """Apply a change of the expanded config from OLD to NEW to the running instance (limits)."""

    def nics_first(self) -> bool:
        """VMs need their TAPs before QEMU starts; containers need the netns before their NICs."""
        return False

    # --- devices ---------------------------------------------------------------------------------

    def device(self, name: str, config: dict[str, str] | None = None) -> Device:
        cfg = self.rec.devices[name] if config is None else config
        return registry.load(self.state, self, name, cfg)

    def devices(self) -> list[Device]:
        return [self.device(n) for n in sorted(self.rec.devices)]

    def validate_devices(self) -> None:
        for dev in self.devices():
            dev.validate_config()

    def _start_device(self, dev: Device, undo: Reverter, attach: bool) -> list[NicRun]:
        dev.validate_environment()
        run = dev.start()
        undo.add(self._stop_device, dev, False)
        if attach:
            for nic in run.nics:
                self._attach(nic)
        for hook in run.post_hooks:
            hook()
        if attach:
            dev.post_start()
        self.event("device-started", dev)
        return run.nics

    def _stop_device(self, dev: Device, detach: bool) -> None:
        run = dev.stop()
        if detach:
            for nic in run.nics:
                self._detach(nic)
        for hook in run.post_hooks:
            hook()
        dev.post_stop()
        self.event("device-stopped", dev)

    def event(self, action: str, dev: Device) -> None:
        log.info(
            "%s %s of %s",
            action.replace("-", " ").capitalize(),
            dev.name,
            self.name,
            extra={"ctx": {"instance": self.name, "device": dev.name}},
        )

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def _start_marker(self) -> Path:
        """Present from the first host step of a start to its last: a daemon that finds it after a
        crash knows the start never finished (instances/base.py finish_interrupted_start)."""
        return self.dir / "starting"

    def start(self) -> None:
        self.validate_devices()
        self.host(files.ensure_dir, self.dir)
        self.host(files.write_json, self._start_marker, {"pid": os.getpid()})
        with Reverter() as undo:
            undo.add(self.host, files.remove, self._start_marker)
            undo.add(self.restore_volatile, dict(self.rec.volatile))
            if self.nics_first():
                nics: list[NicRun] = []
                for dev in self.devices():
                    nics += self._start_device(dev, undo, attach=False)
                self._spawn(nics)
                undo.add(self._kill_and_forget, 0.0, True)
                for dev in self.devices():
                    dev.post_start()
            else:
                self._spawn([])
                undo.add(self._kill_and_forget, 0.0, True)
                for dev in self.devices():
                    self._start_device(dev, undo, attach=True)
            self.host(files.remove, self._start_marker)  # the last step: failing it undoes the start
            undo.success()

    def start_was_interrupted(self) -> bool:
        return self.host(files.read_json, self._start_marker) is not None

    def finish_interrupted_start(self) -> None:
        """A daemon killed during a start: its instance is not adopted half-started, but stopped
        with nothing left: the process it spawned (recorded or not), every device's host objects
        known so far, the netns handle, the runtime record."""
        killed = self.host(strays.kill_naming, self.dir)
        self.cleanup()
        self.host(files.remove, self._start_marker)
        log.warning(
            "Instance %s: a start was interrupted; stopped it (killed %s)", self.name, killed or "nothing"
        )

    def restore_volatile(self, snapshot: dict[str, str]) -> None:
        """A failed start leaves the volatile keys exactly as it found them."""
        changes: dict[str, str | None] = {k: None for k in self.rec.volatile if k not in snapshot}
        changes.update({k: v for k, v in snapshot.items() if self.rec.volatile.get(k) != v})
        if changes:
            self.set_volatile(changes)

    def _kill_and_forget(self, timeout: float, force: bool) -> None:
        self._kill(timeout, force)
        self._release()
        db_instances.set_runtime(self.state.store, self.name, None)

    def stop(self, timeout: float, force: bool) -> None:
        self._kill(timeout, force)
        self.cleanup()

    def cleanup(self) -> None:
        """After the process is gone (stopped, crashed, died while the daemon was away)."""
        for dev in reversed(self.devices()):
            try:
                self._stop_device(dev, detach=False)
            except Exception:
                log.exception("Failed to stop device %s of %s", dev.name, self.name)
        self._release()
        db_instances.set_runtime(self.state.store, self.name, None)

    def adopt(self) -> None:
        """A new daemon finds this instance still running."""

    # --- hot-plug --------------------------------------------------------------------------------

    def attach_device(self, name: str) -> None:
        dev = self.device(name)
        dev.validate_config()
        with Reverter() as undo:
            undo.add(self.restore_volatile, dict(self.rec.volatile))
            # A device that fails to arrive leaves nothing it keeps while it exists (a static
            # DHCP allocation): it does not exist.
            undo.add(dev.remove)
            self._start_device(dev, undo, attach=True)
            dev.hot_plug()
            undo.success()

    def detach_device(self, name: str, config: dict[str, str]) -> None:
        dev = self.device(name, config)
        dev.hot_unplug()
        self._stop_device(dev, detach=True)

    # --- reporting -------------------------------------------------------------------------------

    def drift_check(self) -> list[Difference]:
        """Every device's differences from the kernel; a stopped instance owns nothing."""
        if not self.is_alive():
            return []
        return [d for dev in self.devices() for d in dev.check()]

    def drift_repair(self, found: list[Difference]) -> None:
        """Each device puts back its own objects among FOUND; a re-made NIC is attached again. One
        device failing does not stop the others; the first failure is raised at the end."""
        errors: list[Exception] = []
        for dev in self.devices():
            mine = [d for d in found if d.owner == dev.owner]
            if not mine:
                continue
            try:
                for nic in dev.repair(mine):
                    self._attach(nic)
            except Exception as e:
                errors.append(e)
                continue
            self.event("device-repaired", dev)
        if errors:
            raise errors[0]

    def pid(self) -> int:
        rt = db_instances.get_runtime(self.state.store, self.name)
        return rt.pid if rt else 0

    def nic_state(self) -> dict[str, dict[str, Any]]:
        return {}

    def pid_namespace_init(self) -> int:
        """The init whose pid namespace holds the instance's processes (0: none, as for a VM)."""
        return 0

    def usage(self) -> procstat.Usage:
        """What the running instance uses: by default its one process (a VM's QEMU)."""
        return self.host(procstat.process_usage, self.pid())

    def process_count(self, usage: procstat.Usage) -> int:
        """Processes inside, as Incus reports them (-1: not known from the host)."""
        return usage.processes

    def check_exec(self) -> None:
        """Raise if exec cannot run in this instance now."""
        if not self.is_alive():
            raise ConflictError(f'Instance "{self.name}" is not running')

    def open_terminal(self, width: int, height: int) -> tuple[int, int]:
        """(master, slave) of a terminal for an interactive exec, as this instance sees terminals."""
        return self.host(stdio.open_pty, width, height)

    def exec(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        fds: tuple[int, int, int],
        tty: bool = False,
        started: Callable[[int], None] | None = None,
    ) -> int:
        raise NotImplementedError

    def signal_exec(self, pid: int, sig: int) -> None:
        """Deliver SIG to a command that exec started (the pid exec handed to STARTED)."""
        raise NotImplementedError
