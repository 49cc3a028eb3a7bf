"""Incus's `?filter=` on collections: `FIELD eq|ne VALUE` terms joined by `and`/`or`, each may be
preceded by `not`; `and` binds tighter than `or`. FIELD is a JSON field of the object, or
`config.KEY` (also `expanded_config.KEY`, `devices.NAME...`) for a key inside a map.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from pincus.errors import InvalidError

Predicate = Callable[[dict[str, Any]], bool]


def _lookup(obj: Any, field: str) -> Any:
    head, _, rest = field.partition(".")
    if not isinstance(obj, dict) or head not in obj:
        return None
    value = obj[head]
    if not rest:
        return value
    if isinstance(value, dict) and rest in value:  # keys like "user.foo" carry dots themselves
        return value[rest]
    return _lookup(value, rest)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _term(words: list[str]) -> Predicate:
    negate = False
    while words and words[0].lower() == "not":
        negate = not negate
        words = words[1:]
    if len(words) != 3 or words[1].lower() not in ("eq", "ne"):
        raise InvalidError(f'Invalid filter term "{" ".join(words)}": expected FIELD eq|ne VALUE')
    field, op, want = words[0], words[1].lower(), words[2]

    def matches(obj: dict[str, Any]) -> bool:
        # Case-insensitive, as Incus's filter.Match (strings.EqualFold): `lxc list status=running`.
        equal = _text(_lookup(obj, field)).casefold() == want.casefold()
        return (equal if op == "eq" else not equal) != negate

    return matches


def parse(text: str) -> Predicate:
    """The predicate of a filter expression; an empty one matches everything."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise InvalidError(f"Invalid filter: {e}") from None
    if not words:
        return lambda obj: True
    alternatives: list[list[Predicate]] = [[]]
    term: list[str] = []
    for word in [*words, "or"]:
        low = word.lower()
        if low in ("and", "or") and term:
            alternatives[-1].append(_term(term))
            term = []
            if low == "or":
                alternatives.append([])
        elif low in ("and", "or"):
            raise InvalidError(f'Invalid filter "{text}": "{word}" without a term before it')
        else:
            term.append(word)
    groups = [g for g in alternatives if g]
    return lambda obj: any(all(p(obj) for p in group) for group in groups)
