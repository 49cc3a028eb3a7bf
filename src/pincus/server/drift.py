"""`pincus admin check`: compare what each network and each running instance's devices own with
the kernel, and on request put pincus's own objects back.

Networks first, under the networks lock (a bridge re-made before its ports are enslaved to it
again); then each instance under its own lock, as a start or a hot-plug takes it. Each repair is
a `drift-repaired` lifecycle event; the answer says what was found, what was repaired and what
is left (what is not pincus's to make, or could not be made).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from pincus.db import instances as db_instances
from pincus.devices import nic_bridged_drift
from pincus.errors import NotFoundError
from pincus.ownership import Difference
from pincus.server.instances import Instances
from pincus.server.networks import Networks
from pincus.state import State

log = logging.getLogger(__name__)

# Outside /1.0, where Incus's API lives: no Incus release can ever give this path a meaning.
CHECK_PATH = "/internal/pincus/check"


class Drift:
    def __init__(self, state: State, networks: Networks, instances: Instances) -> None:
        self.state = state
        self.networks = networks
        self.instances = instances

    def check(self) -> list[Difference]:
        """Every difference, networks first; reads only."""
        with self.networks.lock:
            found = [d for rec in self.networks.here() for d in self.networks.driver(rec).check()]
        found += self._shared()
        for name in db_instances.names_on(self.state.store, self.instances.location):
            found += self._instance(name, repair=False)
        return found

    def _shared(self) -> list[Difference]:
        return nic_bridged_drift.check_shared(self.state)

    def repair(self) -> dict[str, Any]:
        """Repair what can be, then check again: {"found", "repaired", "remaining"}."""
        found: list[Difference] = []
        with self.networks.lock:
            for rec in self.networks.here():
                drv = self.networks.driver(rec)
                mine = drv.check()
                found += mine
                if any(d.repairable for d in mine):
                    self._repairing(mine, functools.partial(drv.repair, mine))
        # No lock of its own: re-making the shared table's chains is one atomic, idempotent batch,
        # and at worst leaves an empty table after the last instance stopped (which filters nothing).
        shared = self._shared()
        found += shared
        if shared:
            self._repairing(shared, functools.partial(nic_bridged_drift.repair_shared, self.state, shared))
        for name in db_instances.names_on(self.state.store, self.instances.location):
            found += self._instance(name, repair=True)
        remaining = self.check()
        left = set(remaining)
        repaired = [d for d in found if d.repairable and d not in left]
        for d in repaired:
            log.warning("Repaired drift: %s", d)
            self.state.events.lifecycle("drift-repaired", CHECK_PATH, **d.to_api())
        return {
            "found": [d.to_api() for d in found],
            "repaired": [d.to_api() for d in repaired],
            "remaining": [d.to_api() for d in remaining],
        }

    def _instance(self, name: str, repair: bool) -> list[Difference]:
        with self.instances.locked(name):
            try:
                inst = self.instances.load(name)
            except NotFoundError:
                return []  # deleted meanwhile
            found = inst.drift_check()
            if repair and any(d.repairable for d in found):
                self._repairing(found, lambda: inst.drift_repair(found))
            return found

    def _repairing(self, found: list[Difference], repair: Callable[[], object]) -> None:
        """Run REPAIR; a failure is logged and left to the second check, which reports what is left."""
        try:
            repair()
        except Exception as e:
            log.error("Repair of %s failed: %s", found[0].owner, e)
