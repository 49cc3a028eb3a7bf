"""What the daemon hands to its drivers: paths, the store, events, kernel features."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pincus.db.store import Store
from pincus.events import EventHub
from pincus.host.facade import Host


@dataclass
class State:
    dir: Path
    store: Store
    events: EventHub
    features: dict[str, bool] = field(default_factory=dict)
    # Short tag unique to this daemon's PINCUS_DIR: prefixes every kernel object it names.
    tag: str = ""
    # Every host call of the drivers goes through here (tests hook it to fail or record calls).
    host: Host = field(default_factory=Host)

    @property
    def networks_dir(self) -> Path:
        return self.dir / "networks"

    @property
    def instances_dir(self) -> Path:
        return self.dir / "instances"
