"""/1.0/operations (background work and its websockets) and /1.0/events."""

from __future__ import annotations

import json
import math
import queue
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

from pincus.api import websocket
from pincus.api.exec_ws import ExecSessions
from pincus.api.http import Raw, Request, Router, Stream
from pincus.errors import InvalidError
from pincus.events import LEVELS, Event, Subscription
from pincus.server.server import Server

EVENT_TYPES = ("logging", "operation", "lifecycle")


FOREVER = 10.0**9  # seconds: a longer wait is a wait for ever (an Event cannot wait past time_t)
MAX_STOP_WAIT = 86400  # seconds an instance stop may wait for its guest (poll() takes an int of ms)


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return math.nan


def _timeout(req: Request) -> float:
    """A wait's "timeout": seconds, negative (or huge) for no limit."""
    raw = req.query.get("timeout", "-1")
    value = _number(raw)
    if math.isnan(value):
        raise InvalidError(f'Invalid "timeout" {raw!r}: a number of seconds (-1 waits for ever)')
    return -1.0 if value >= FOREVER else value


def stop_wait(value: object, where: str, text: bool = False) -> float:
    """How long an instance stop waits for its guest: -1 to MAX_STOP_WAIT seconds (TEXT: as a query
    gives it; a JSON body gives a number)."""
    number = _number(value) if text and isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, int | float) or not -1 <= number <= MAX_STOP_WAIT:
        raise InvalidError(
            f'Invalid "timeout" {value!r} in {where}: a number of seconds from -1 to {MAX_STOP_WAIT}'
        )
    return float(number)


def add(r: Router, server: Server, sessions: ExecSessions, shutdown: threading.Event) -> None:
    ops = server.operations

    def list_operations(req: Request) -> Any:
        found = ops.list_all()
        by_status: dict[str, list[Any]] = {}
        for op in found:
            item = op.to_api() if req.query.get("recursion", "0") != "0" else op.url
            by_status.setdefault(op.status[0].lower(), []).append(item)
        return by_status

    def wait(req: Request) -> Any:
        return ops.wait(req.params["id"], _timeout(req)).to_api()

    def cancel(req: Request) -> Any:
        ops.cancel(req.params["id"])
        return {}

    def connect_websocket(req: Request) -> Raw:
        op = ops.get(req.params["id"])
        session = sessions.get(op.id)
        if session is None:
            raise InvalidError("This operation has no websockets (or they are closed)")
        channel = session.channel_for(op, req.query.get("secret", ""))
        if not websocket.is_upgrade(req.handler):
            raise InvalidError("This endpoint needs a websocket upgrade")
        session.serve(channel, websocket.upgrade(req.handler))
        return Raw()

    r.add("GET", "/1.0/operations", list_operations)
    r.add("GET", "/1.0/operations/{id}", lambda req: ops.get(req.params["id"]).to_api())
    r.add("DELETE", "/1.0/operations/{id}", cancel)
    r.add("GET", "/1.0/operations/{id}/wait", wait)
    r.add("GET", "/1.0/operations/{id}/websocket", connect_websocket)

    def events(req: Request) -> Any:
        wanted = [t for t in (req.query.get("type") or ",".join(EVENT_TYPES)).split(",") if t]
        unknown = sorted(set(wanted) - set(EVENT_TYPES))
        if unknown:
            raise InvalidError(f'Unknown event type "{unknown[0]}" ({", ".join(EVENT_TYPES)})')
        level = LEVELS.get(req.query.get("level", "info"), 20)
        sub = server.state.events.subscribe(set(wanted), level)
        if websocket.is_upgrade(req.handler):
            _events_websocket(websocket.upgrade(req.handler), sub, shutdown)
            return Raw()
        return Stream(_event_lines(req.connection, sub, shutdown))

    r.add("GET", "/1.0/events", events)


def _events_websocket(ws: websocket.WebSocket, sub: Subscription, shutdown: threading.Event) -> None:
    """Send each event as one text message until the client closes or the daemon stops."""
    gone = threading.Event()

    def read_until_closed() -> None:
        try:
            while True:
                ws.receive()
        except websocket.WebSocketClosed:
            gone.set()

    threading.Thread(target=read_until_closed, name="events-ws", daemon=True).start()
    try:
        while not gone.is_set() and not shutdown.is_set():
            try:
                event = sub.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if event is None:
                break
            ws.send_text(json.dumps(event))
    except websocket.WebSocketClosed:
        pass
    finally:
        sub.close()
        ws.shutdown()


def _peer_closed(conn: socket.socket) -> bool:
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _event_lines(conn: socket.socket, sub: Subscription, shutdown: threading.Event) -> Iterator[Event]:
    """The plain stream, one JSON object per line, for clients that do not upgrade."""
    try:
        while not shutdown.is_set():
            try:
                event = sub.queue.get(timeout=0.5)
            except queue.Empty:
                if _peer_closed(conn):
                    return
                continue
            if event is None:
                return
            yield event
    finally:
        sub.close()
