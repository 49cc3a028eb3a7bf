"""Stand-in until the images branch merges: its `Images` replaces this at the merge.

An "image" here is a directory $PINCUS_DIR/images/<fingerprint>/ already unpacked
(metadata.yaml, rootfs/, templates/) beside <fingerprint>.json ({"type", "architecture",
"aliases"}); tests write them (tests/storagelib.py). Just enough to drive instance creation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pincus.errors import InvalidError, NotFoundError
from pincus.host import tree
from pincus.state import State


@dataclass(frozen=True)
class StandInImage:
    fingerprint: str
    type: str
    architecture: str
    aliases: list[str] = field(default_factory=list)


class StandInImages:
    def __init__(self, state: State) -> None:
        self.state = state

    @property
    def dir(self) -> Path:
        return self.state.dir / "images"

    def _all(self) -> list[StandInImage]:
        if not self.dir.is_dir():
            return []
        out = []
        for meta in sorted(self.dir.glob("*.json")):
            doc = json.loads(meta.read_text())
            kind, arch = doc.get("type", "container"), doc.get("architecture", "x86_64")
            out.append(StandInImage(meta.stem, kind, arch, list(doc.get("aliases", []))))
        return out

    def resolve(self, source: dict[str, Any]) -> StandInImage:
        alias, fp = source.get("alias"), source.get("fingerprint")
        wanted = alias or fp
        for image in self._all():
            # Either name matches either way: this branch has no alias route for the client to ask.
            if isinstance(wanted, str) and (wanted in image.aliases or image.fingerprint.startswith(wanted)):
                return image
        if not alias and not fp:
            raise InvalidError('An image source needs an "alias" or a "fingerprint"')
        raise NotFoundError(f'Image "{alias or fp}" not found')

    def unpack(self, fingerprint: str, target: Path, skip_devices: bool) -> None:
        source = self.dir / fingerprint
        for entry in sorted(os.listdir(source)):
            self.state.host(tree.copy, source / entry, target / entry)
