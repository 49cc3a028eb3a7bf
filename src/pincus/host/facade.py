"""The one door from the drivers to the host.

Drivers, the server and the API never call a host module themselves: they hand the function and
its arguments to `state.host(fn, *args)`. Without hooks that is a plain call; a test adds hooks
that see every call by name ("links.create_veth") and may record it, delay it, fail it or kill
the daemon at it, which is how fault injection and crash tests reach every step of a start or a
hot-plug without patching module names. A test checks that no driver goes around the door.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Hook(Protocol):
    """Wraps one host call: run CALL (or not), return what it returns (or raise).

    The innermost hook's CALL is a functools.partial of the host function, so a hook that answers
    calls itself (a unit test's fake host) finds the arguments in its .args and .keywords.
    """

    def __call__(self, name: str, call: Callable[[], Any]) -> Any: ...


def call_name(fn: Callable[..., Any]) -> str:
    """ "links.create_veth" for pincus.host.links.create_veth."""
    module = getattr(fn, "__module__", "") or ""
    return f"{module.rsplit('.', 1)[-1]}.{getattr(fn, '__qualname__', repr(fn))}"


class Host:
    def __init__(self) -> None:
        self._hooks: tuple[Hook, ...] = ()
        self._lock = threading.Lock()

    def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        hooks = self._hooks  # one snapshot: a hook removed mid-call still sees its call through
        if not hooks:
            return fn(*args, **kwargs)
        call: Callable[[], Any] = functools.partial(fn, *args, **kwargs)
        name = call_name(fn)
        for hook in reversed(hooks):
            call = functools.partial(hook, name, call)
        result: T = call()
        return result

    def add_hook(self, hook: Hook) -> None:
        with self._lock:
            self._hooks = (*self._hooks, hook)

    def remove_hook(self, hook: Hook) -> None:
        with self._lock:
            hooks = list(self._hooks)
            hooks.remove(hook)
            self._hooks = tuple(hooks)

    @contextmanager
    def hooked(self, hook: Hook) -> Iterator[None]:
        """HOOK sees every host call while the block runs (the first added is the outermost)."""
        self.add_hook(hook)
        try:
            yield
        finally:
            self.remove_hook(hook)
