"""What pincus owns on the host, and how the kernel's view of it differs from the database's.

Drivers list their objects (`owned()`, shown by `pincus info`) and compare them with the kernel
(`check()`, read only); `server/drift.py` gathers the differences and asks the drivers to repair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Owned:
    """One host object a network or a NIC made and answers for."""

    kind: str  # "interface", "ifb", "nft element", "tc qdisc", "hosts file", "route", "process"...
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Difference:
    """One object whose kernel state is not what the database says it should be."""

    owner: str  # 'network "br0"' or 'instance "c1" device "eth0"'
    kind: str
    name: str
    expected: str
    found: str
    # False where putting it back is not pincus's to do (an admin's bridge) or cannot be done
    # live (a running VM's TAP): reported, never touched.
    repairable: bool = True

    def to_api(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "kind": self.kind,
            "name": self.name,
            "expected": self.expected,
            "found": self.found,
            "repairable": self.repairable,
        }

    def __str__(self) -> str:
        return f"{self.owner}: {self.kind} {self.name}: expected {self.expected}, found {self.found}"
