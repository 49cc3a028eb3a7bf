"""/1.0/operations (background work and its websockets) and /1.0/events."""

from __future__ import annotations

import json
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


def _timeout(req: Request) -> float:
    raw = req.query.get("timeout", "-1")
    try:
        return float(raw)
    except ValueError:
        raise InvalidError(f'Invalid "timeout" {raw!r}: a number of seconds (-1 waits for ever)') from None


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
