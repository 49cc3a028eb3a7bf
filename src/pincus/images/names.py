"""Fingerprints and alias names: what may reach a path in the image store."""

from __future__ import annotations

import re

from pincus.errors import InvalidError

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^[0-9a-f]{1,64}$")
MAX_ALIAS = 255


def check_fingerprint(fp: str) -> str:
    """A full sha256 in lower-case hex: the only names the store gives its files."""
    if not _FINGERPRINT.match(fp):
        raise InvalidError(f'Invalid image fingerprint "{fp}": 64 lower-case hex digits expected')
    return fp


def is_prefix(text: str) -> bool:
    return bool(_PREFIX.match(text))


def check_alias(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidError("Alias name missing")
    if len(name) > MAX_ALIAS:
        raise InvalidError(f"Invalid alias name: longer than {MAX_ALIAS} characters")
    if "/" in name or any(c.isspace() or ord(c) < 32 for c in name) or name in (".", ".."):
        raise InvalidError(f'Invalid alias name "{name}": no slashes, whitespace or control characters')
    return name
