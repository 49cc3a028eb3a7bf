"""Key tables: what keys exist, how each is validated, where it applies, whether it updates live.

Validation, help text and the "updatable while running" check all read these tables, so no key is
named in two places.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pincus.config.validators import Validator, is_any
from pincus.errors import InvalidError

CONTAINER = "container"
VM = "virtual-machine"
BOTH = frozenset({CONTAINER, VM})


@dataclass(frozen=True)
class Key:
    validator: Validator
    description: str
    instance_types: frozenset[str] = BOTH
    live: bool = True  # can change on a running instance without a restart
    # Known (an Incus key) but without effect in pincus yet: refused with this reason, never ignored.
    unsupported: str | None = None


KeyTable = Mapping[str, Key]

USER_KEY = Key(is_any, "Free-form user key")


def lookup(table: KeyTable, key: str) -> Key | None:
    if key.startswith("user.") and len(key) > len("user."):
        return USER_KEY
    return table.get(key)


def check_value(table: KeyTable, key: str, value: str, what: str, instance_type: str | None = None) -> None:
    """Raise InvalidError naming `what` and the key if the key is unknown, misplaced or its value is bad."""
    spec = lookup(table, key)
    if spec is None:
        raise InvalidError(f'Invalid key "{key}" for {what}: unknown key')
    if instance_type is not None and instance_type not in spec.instance_types:
        kind = "containers" if instance_type == CONTAINER else "virtual machines"
        raise InvalidError(f'Invalid key "{key}" for {what}: not supported for {kind}')
    if spec.unsupported is not None:
        raise InvalidError(f'Key "{key}" of {what} is not supported yet: {spec.unsupported}')
    try:
        spec.validator(value)
    except ValueError as e:
        raise InvalidError(f'Invalid value for {what} key "{key}": {e}') from None


def check_config(
    table: KeyTable, config: Mapping[str, str], what: str, instance_type: str | None = None
) -> None:
    for key in sorted(config):
        value = config[key]
        if not isinstance(value, str):
            raise InvalidError(f'Invalid value for {what} key "{key}": must be a string')
        check_value(table, key, value, what, instance_type)


def not_live(table: KeyTable, old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Keys whose change needs the instance stopped."""
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    return sorted(k for k in changed if (spec := lookup(table, k)) is not None and not spec.live)
