"""Event hub: lifecycle and logging events, fanned out to every `GET /1.0/events` listener."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from datetime import UTC, datetime
from typing import Any

Event = dict[str, Any]

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Subscription:
    def __init__(self, hub: EventHub, types: set[str], min_level: int) -> None:
        self.hub = hub
        self.types = types
        self.min_level = min_level
        self.queue: queue.Queue[Event | None] = queue.Queue(maxsize=10000)

    def wants(self, event: Event) -> bool:
        if event["type"] not in self.types:
            return False
        if event["type"] == "logging":
            return LEVELS.get(event["metadata"]["level"], 20) >= self.min_level
        return True

    def close(self) -> None:
        self.hub.unsubscribe(self)


class EventHub:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, types: set[str], min_level: int = 20) -> Subscription:
        sub = Subscription(self, types, min_level)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def close_all(self) -> None:
        with self._lock:
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.queue.put(None)

    def emit(self, type_: str, metadata: dict[str, Any]) -> None:
        event: Event = {
            "type": type_,
            "timestamp": datetime.now(UTC).isoformat(),
            "metadata": metadata,
            "location": "none",
            "project": "default",
        }
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.wants(event):
                # A stuck listener must not stall the daemon: it loses events instead.
                with contextlib.suppress(queue.Full):
                    sub.queue.put_nowait(event)

    def lifecycle(self, action: str, source: str, **context: Any) -> None:
        self.emit("lifecycle", {"action": action, "source": source, "context": context})


class EventLogHandler(logging.Handler):
    """Turns log records into logging events; `extra={"ctx": {...}}` becomes the event context."""

    def __init__(self, hub: EventHub) -> None:
        super().__init__(logging.DEBUG)
        self.hub = hub

    def emit(self, record: logging.LogRecord) -> None:
        ctx = getattr(record, "ctx", None)
        self.hub.emit(
            "logging",
            {
                "message": record.getMessage(),
                "level": record.levelname.lower(),
                "context": dict(ctx) if isinstance(ctx, dict) else {},
            },
        )
