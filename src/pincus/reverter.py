"""Undo as a value: each host change registers its inverse, a failure unwinds in reverse."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec

P = ParamSpec("P")

log = logging.getLogger(__name__)


class Reverter:
    def __init__(self) -> None:
        self._undo: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._armed = True

    def add(self, fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> None:
        self._undo.append((fn, args, kwargs))

    def success(self) -> None:
        self._armed = False

    def take(self) -> Reverter:
        """Hand the pending undo steps to a new reverter (for the caller to keep) and disarm."""
        other = Reverter()
        other._undo = self._undo
        self._undo = []
        self._armed = False
        return other

    def revert(self) -> None:
        while self._undo:
            fn, args, kwargs = self._undo.pop()
            try:
                fn(*args, **kwargs)
            except Exception:  # one failed undo must not stop the others
                log.exception("undo step %s failed", getattr(fn, "__name__", fn))

    def __enter__(self) -> Reverter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._armed:
            self.revert()
