"""A QMP client: one session on QEMU's monitor socket, bounded in time, that runs commands and
collects the events that arrive meanwhile."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pincus.errors import HostError

QMP_TIMEOUT = 5.0  # bound on one QMP connection + command; QEMU answers in milliseconds


class QMP:
    """A QMP session: connects, negotiates capabilities, runs commands, collects events.

    Every socket operation is bounded by `timeout`, so a wedged QEMU cannot hang the caller.
    """

    def __init__(self, path: Path | str, timeout: float = QMP_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._buf = b""
        self._events: list[dict[str, Any]] = []
        self._next_id = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(self.path))
            greeting = self._read_message(time.monotonic() + timeout)
            if "QMP" not in greeting:
                raise HostError(f"connect QMP {self.path}: unexpected greeting {greeting}")
            self.execute("qmp_capabilities")
        except (OSError, ValueError) as e:
            self._sock.close()
            raise HostError(f"connect QMP {self.path}: {e}") from e
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> QMP:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer")
            self._sock.settimeout(left)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("QEMU closed the QMP connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise HostError(f"read QMP {self.path}: not a JSON object: {line!r}")
        return msg

    def execute(self, cmd: str, **args: Any) -> Any:
        """Run one command and return its "return" value; a QMP error raises HostError."""
        self._next_id += 1
        ident = f"pincus-{self._next_id}"
        request: dict[str, Any] = {"execute": cmd, "id": ident}
        if args:
            request["arguments"] = args
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
            while True:
                msg = self._read_message(deadline)
                if "event" in msg:
                    self._events.append(msg)
                    continue
                if msg.get("id") != ident:
                    continue  # an answer to a command of an earlier, abandoned call
                if "error" in msg:
                    err = msg["error"]
                    raise HostError(f"QMP {cmd}: {err.get('desc', err)}")
                return msg.get("return")
        except (OSError, ValueError) as e:
            raise HostError(f"QMP {cmd} on {self.path}: {e}") from e

    def wait_event(self, name: str, timeout: float, match: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the first event `name` whose data contains `match`, including events that
        arrived while earlier commands ran; HostError after `timeout` seconds."""

        def fits(ev: dict[str, Any]) -> bool:
            data = ev.get("data", {})
            return ev.get("event") == name and all(data.get(k) == v for k, v in (match or {}).items())

        for i, ev in enumerate(self._events):
            if fits(ev):
                return self._events.pop(i)
        deadline = time.monotonic() + timeout
        try:
            while True:
                msg = self._read_message(deadline)
                if "event" not in msg:
                    continue
                if fits(msg):
                    return msg
                self._events.append(msg)
        except (OSError, ValueError) as e:
            raise HostError(f"wait for QMP event {name} on {self.path}: {e}") from e
