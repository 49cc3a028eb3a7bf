"""Moving a stopped instance to another cluster member (`pincus move NAME --target MEMBER`).

The member the instance lives on runs the move: it asks the target to pull the root volume (the
target GETs it as a tar stream over the member API and makes it on its own part of the pool), sets
its own copy aside, then records the new location; only then is its copy destroyed. A failure
before the record changed removes the target's copy and puts the source's back. The instance's
record (config, devices, volatile keys such as MACs and the idmap of its shifted volume) is the
cluster's and does not change but for its location."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import quote

from pincus.db import instances as db_instances
from pincus.db.instances import InstanceRecord
from pincus.errors import ConflictError, InvalidError, NotFoundError
from pincus.host import files
from pincus.reverter import Reverter
from pincus.server.cluster import Cluster
from pincus.server.instances import Instances
from pincus.server.storage import Storage
from pincus.state import State

log = logging.getLogger(__name__)

STOPPED_ONLY = "Instance must be stopped to be moved"


def volume_path(name: str) -> str:
    """The internal route of instance NAME's volume on a member."""
    return f"/internal/instances/{quote(name, safe='')}/volume"


class Moves:
    def __init__(self, state: State, cluster: Cluster, instances: Instances, storage: Storage) -> None:
        self.state = state
        self.cluster = cluster
        self.instances = instances
        self.storage = storage

    def _member(self, name: str) -> str:
        if not self.cluster.clustered:
            raise InvalidError(
                f'Cannot move instance "{name}": this server is not clustered (--target needs one)'
            )
        return self.cluster.name

    def _record(self, name: str) -> InstanceRecord:
        rec = db_instances.get(self.state.store, name)
        if rec is None:
            raise NotFoundError(f'Instance "{name}" not found')
        return rec

    def check_target(self, name: str, target: str) -> None:
        """What a move refuses before it starts: a target that is not another Online member."""
        self._member(name)
        statuses = self.cluster.statuses()
        if target not in statuses:
            raise NotFoundError(f'Cluster member "{target}" not found')
        if target == self._record(name).location:
            raise ConflictError(f'Instance "{name}" is already on member "{target}"')
        if statuses[target] != "Online":
            raise ConflictError(
                f'Cluster member "{target}" is {statuses[target]}: instances move only to an Online member'
            )

    # --- on the member the instance lives on -----------------------------------------------------

    def move(self, name: str, target: str) -> None:
        here = self.cluster.name
        self.check_target(name, target)
        t0 = time.monotonic()
        with self.instances.locked(name):
            inst = self.instances.load(name)
            if inst.rec.location != here:
                raise ConflictError(f'Instance "{name}" lives on member "{inst.rec.location}", not here')
            if inst.is_alive() or inst.has_runtime():
                raise ConflictError(STOPPED_ONLY)
            with Reverter() as undo:
                self.cluster.call(target, "POST", volume_path(name), {"source": here}, timeout=3600.0)
                undo.add(self.cluster.call, target, "DELETE", volume_path(name))
                destroy = self.storage.set_instance_volume_aside(name, undo)
                db_instances.move(self.state.store, name, here, target)
                undo.success()
            # The instance is the target's now: what is left here holds no name in use (a volume set
            # aside goes at the pool's next sweep if this fails).
            try:
                if destroy is not None:
                    destroy()
                self.state.host(files.remove_tree, inst.dir)
            except Exception:
                log.exception("Leftovers of moved instance %s stay on this member", name)
        log.info(
            "Moved instance %s to member %s in %.2f s",
            name,
            target,
            time.monotonic() - t0,
            extra={"ctx": {"instance": name, "target": target}},
        )
        self.state.events.lifecycle("instance-migrated", f"/1.0/instances/{name}", location=target)

    def volume_to_send(self, name: str) -> Path:
        """Instance NAME's volume on this member, for the member it is moving to. The move holds the
        instance's lock meanwhile (in another thread), so this takes none: it only reads."""
        here = self._member(name)
        rec = self._record(name)
        if rec.location != here:
            raise ConflictError(f'Instance "{name}" does not live on member "{here}"')
        if self.instances.load(name).is_alive():
            raise ConflictError(STOPPED_ONLY)
        path = self.storage.instance_volume_path(name)
        if path is None:
            raise NotFoundError(f'Instance "{name}" has no volume on member "{here}"')
        return path

    # --- on the target -------------------------------------------------------------------------

    def receive(self, name: str, source: object) -> None:
        """Pull instance NAME's volume from member SOURCE, where it lives, onto this member."""
        if not isinstance(source, str) or not source:
            raise InvalidError(f'Receiving the volume of instance "{name}" needs its "source" member')
        here = self._member(name)
        with self.instances.locked(name):
            rec = self._record(name)
            if rec.location != source or source == here:
                raise ConflictError(f'Instance "{name}" does not live on member "{source}"')
            if self.storage.instance_volume_path(name) is not None:
                # The instance lives elsewhere, so a copy here is stale: a move whose source was
                # killed between this member's copy and the new location.
                log.warning("Removing a stale copy of the volume of %s left by an interrupted move", name)
                self.storage.drop_instance_volume_here(name)
            t0 = time.monotonic()
            with Reverter() as undo:
                self.storage.receive_instance_volume(
                    name, lambda dest: self._pull(source, name, dest, t0), undo
                )
                undo.success()

    def _pull(self, source: str, name: str, dest: Path, t0: float) -> None:
        size = self.cluster.pull_volume(source, name, dest)
        log.info("Received the volume of %s from %s: %d bytes in %.2f s", name, source, size,
                 time.monotonic() - t0)  # fmt: skip

    def drop(self, name: str) -> None:
        """A move undone: this member's copy of instance NAME's volume goes. Never the volume of an
        instance that lives here."""
        here = self._member(name)
        with self.instances.locked(name):
            rec = self._record(name)
            if rec.location == here:
                raise ConflictError(f'Instance "{name}" lives on this member: its volume stays')
            self.storage.drop_instance_volume_here(name)
