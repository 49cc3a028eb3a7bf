"""Background operations, as Incus's /1.0/operations: a request starts one and returns at once.

Each operation runs its work on a thread of its own; its progress is an `operation` event
on every change, and `wait` blocks on it. Finished operations stay readable for KEEP seconds
so a client that polls late still learns how it ended, then they are dropped.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pincus.errors import InvalidError, NotFoundError, PincusError
from pincus.events import EventHub

log = logging.getLogger(__name__)

KEEP = 300.0  # seconds a finished operation stays listed

# Incus's status codes (shared/api/status_code.go): name and number travel together.
RUNNING = ("Running", 103)
SUCCESS = ("Success", 200)
FAILURE = ("Failure", 400)
CANCELLED = ("Cancelled", 401)

TASK, WEBSOCKET = "task", "websocket"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Operation:
    description: str
    resources: dict[str, list[str]]
    class_: str = TASK
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=_now)
    updated_at: str = ""
    status: tuple[str, int] = RUNNING
    metadata: dict[str, Any] = field(default_factory=dict)
    err: str = ""
    # A websocket operation's channel secrets: metadata shows them to the client that made it.
    secrets: dict[str, str] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    finished_at: float = 0.0

    @property
    def url(self) -> str:
        return f"/1.0/operations/{self.id}"

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "class": self.class_,
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at or self.created_at,
            "status": self.status[0],
            "status_code": self.status[1],
            "resources": self.resources,
            "metadata": self.metadata or None,
            "may_cancel": False,
            "err": self.err,
            "location": "none",
        }

    def new_secret(self, channel: str) -> str:
        self.secrets[channel] = secrets.token_hex(32)
        return self.secrets[channel]


Work = Callable[[Operation], dict[str, Any] | None]


class Operations:
    def __init__(self, events: EventHub, keep: float = KEEP) -> None:
        self._events = events
        self._keep = keep
        self._ops: dict[str, Operation] = {}
        self._lock = threading.Lock()

    def start(
        self,
        description: str,
        resources: dict[str, list[str]],
        work: Work,
        class_: str = TASK,
        prepare: Callable[[Operation], None] | None = None,
    ) -> Operation:
        """Run WORK on its own thread; PREPARE (e.g. making websocket secrets) runs before it is listed."""
        op = Operation(description, resources, class_)
        if prepare is not None:
            prepare(op)
        with self._lock:
            self._prune()
            self._ops[op.id] = op
        self._emit(op)
        threading.Thread(target=self._run, args=(op, work), name=f"op-{op.id[:8]}", daemon=True).start()
        return op

    def _run(self, op: Operation, work: Work) -> None:
        try:
            result = work(op)
        except PincusError as e:
            self._finish(op, FAILURE, str(e))
        except Exception as e:
            log.exception("Operation %s (%s) failed", op.id, op.description)
            self._finish(op, FAILURE, f"Internal error: {e}")
        else:
            if result:
                op.metadata.update(result)
            self._finish(op, SUCCESS, "")

    def _finish(self, op: Operation, status: tuple[str, int], err: str) -> None:
        op.status, op.err, op.updated_at = status, err, _now()
        op.finished_at = time.monotonic()
        op.done.set()
        self._emit(op)

    def update_metadata(self, op: Operation, metadata: dict[str, Any]) -> None:
        op.metadata.update(metadata)
        op.updated_at = _now()
        self._emit(op)

    def _emit(self, op: Operation) -> None:
        self._events.emit("operation", op.to_api())

    def _prune(self) -> None:
        cutoff = time.monotonic() - self._keep
        for op_id in [i for i, op in self._ops.items() if op.done.is_set() and op.finished_at < cutoff]:
            del self._ops[op_id]

    def get(self, op_id: str) -> Operation:
        with self._lock:
            self._prune()
            op = self._ops.get(op_id)
        if op is None:
            raise NotFoundError(f'Operation "{op_id}" not found')
        return op

    def list_all(self) -> list[Operation]:
        with self._lock:
            self._prune()
            return list(self._ops.values())

    def wait(self, op_id: str, timeout: float) -> Operation:
        """The operation once it has finished, or as it is when TIMEOUT (negative: none) runs out."""
        op = self.get(op_id)
        op.done.wait(None if timeout < 0 else timeout)
        return op

    def cancel(self, op_id: str) -> None:
        op = self.get(op_id)
        if op.done.is_set():
            raise InvalidError("Only running operations can be cancelled")
        raise InvalidError("This operation can't be cancelled")

    def wait_all(self, timeout: float) -> None:
        """At daemon shutdown: let running work finish (it holds instance locks and host state)."""
        deadline = time.monotonic() + timeout
        for op in self.list_all():
            op.done.wait(max(0.0, deadline - time.monotonic()))
