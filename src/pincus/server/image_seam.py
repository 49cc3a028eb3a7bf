"""What instance creation needs of the image store (the images branch provides `server.images`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class ImageLike(Protocol):
    @property
    def fingerprint(self) -> str: ...
    @property
    def type(self) -> str: ...  # "container" | "virtual-machine"
    @property
    def architecture(self) -> str: ...


class ImagesLike(Protocol):
    def resolve(self, source: dict[str, Any]) -> ImageLike: ...
    def unpack(self, fingerprint: str, target: Path, skip_devices: bool) -> None: ...
