"""Exec the Incus way: the command's stdio and a control channel over websockets.

POST /1.0/instances/NAME/exec with `wait-for-websocket` starts a websocket operation whose
metadata lists one secret per channel: "0" (a terminal, both ways) and "control" when
`interactive`, else "0" (stdin), "1" (stdout), "2" (stderr) and "control". The client opens
`/1.0/operations/ID/websocket?secret=S` for each; once all are there the command runs, and
its exit status ends the operation as `metadata.return`. Each websocket's own HTTP thread
reads what the client sends on it; the operation's thread runs the command and pumps its
output.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pincus.api.websocket import TEXT, WebSocket, WebSocketClosed
from pincus.errors import ConflictError, ForbiddenError, InvalidError
from pincus.host import stdio
from pincus.server.operations import Operation

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0  # seconds for the client to open every channel
DRAIN_TIMEOUT = 5.0  # after the command exits, for output a background child may hold open
CHUNK = 64 * 1024

Runner = Callable[[tuple[int, int, int], bool, Callable[[int], None]], int]
Signaller = Callable[[int, int], None]
TerminalOpener = Callable[[int, int], tuple[int, int]]


@dataclass
class ExecRequest:
    interactive: bool
    width: int
    height: int


class ExecSession:
    def __init__(
        self,
        request: ExecRequest,
        run: Runner,
        send_signal: Signaller,
        open_terminal: TerminalOpener = stdio.open_pty,
    ) -> None:
        self.request = request
        self._open_terminal = open_terminal
        self._run = run
        self._send_signal = send_signal
        self.channels = ["0", "control"] if request.interactive else ["0", "1", "2", "control"]
        # Older clients (pylxd) never open "control" without a terminal: the command starts without it.
        self.required = self.channels if request.interactive else ["0", "1", "2"]
        self._sockets: dict[str, WebSocket] = {}
        self._cond = threading.Condition()
        self.finished = threading.Event()
        self._input: int | None = None  # where channel 0's messages go
        self._input_lock = threading.Lock()
        self._master: int | None = None
        self._child_fds: tuple[int, ...] = ()
        self._outputs: dict[str, int] = {}  # channel -> the fd its output is read from
        self._pid = 0

    # --- the client's side: channels connecting ---------------------------------------------------

    def channel_for(self, op: Operation, secret: str) -> str:
        for channel, s in op.secrets.items():
            if secret and secrets_equal(s, secret):
                with self._cond:
                    if channel in self._sockets:
                        raise ConflictError(f'Websocket "{channel}" of this operation is already connected')
                return channel
        raise ForbiddenError("Invalid websocket secret")

    def serve(self, channel: str, ws: WebSocket) -> None:
        """On the websocket's HTTP thread: register it, read from it until it closes, then stay
        until the session ends (the HTTP server closes the connection when this returns)."""
        with self._cond:
            if self.finished.is_set():  # too late: the command has ended
                ws.shutdown()
                return
            self._sockets[channel] = ws
            self._cond.notify_all()
        try:
            if channel == "0":
                self._read_input(ws)
            elif channel == "control":
                self._read_control(ws)
            else:
                self._drain(ws)
        except WebSocketClosed:
            pass
        finally:
            if channel == "0" and not self.request.interactive:
                self._close_input()
        self.finished.wait()

    def _read_input(self, ws: WebSocket) -> None:
        while True:
            kind, data = ws.receive()
            if kind == TEXT and not data:  # the Go client's end-of-stream marker
                if not self.request.interactive:
                    self._close_input()
                continue
            with self._input_lock:
                fd = self._input
                if fd is None:
                    continue
                with contextlib.suppress(OSError):
                    os.write(fd, data)

    def _read_control(self, ws: WebSocket) -> None:
        while True:
            _, data = ws.receive()
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            self._control(msg)

    def _control(self, msg: dict[str, object]) -> None:
        command = msg.get("command")
        if command == "window-resize" and self._master is not None:
            args = msg.get("args")
            if isinstance(args, dict):
                try:
                    width, height = int(args.get("width", 0)), int(args.get("height", 0))
                except (TypeError, ValueError):
                    return
                with contextlib.suppress(Exception):
                    stdio.set_window_size(self._master, width, height)
        elif command == "signal":
            sig = msg.get("signal")
            if isinstance(sig, int) and 0 < sig < signal.NSIG and self._pid:
                self._send_signal(self._pid, sig)

    @staticmethod
    def _drain(ws: WebSocket) -> None:
        """An output channel: the client sends nothing but its close."""
        while True:
            ws.receive()

    def _close_input(self) -> None:
        with self._input_lock:
            if self._input is not None and self._input != self._master:
                with contextlib.suppress(OSError):
                    os.close(self._input)
                self._input = None

    # --- the operation's side: running the command ------------------------------------------------

    def run(self, op: Operation) -> dict[str, object]:
        try:
            self._wait_connected()
            return {"return": self._run_command()}
        finally:
            self._close_child_fds()
            for fd in self._outputs.values():
                if fd != self._master:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._close_all()

    def _wait_connected(self) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: set(self.required) <= set(self._sockets), CONNECT_TIMEOUT)
        if not ok:
            missing = sorted(set(self.required) - set(self._sockets))
            raise InvalidError(f"exec: the client did not connect websockets {', '.join(missing)} in time")

    def open_stdio(self) -> None:
        """The command's terminal or pipes, made before any channel connects: what the client
        sends (or a resize) before the command starts waits in them."""
        if self.request.interactive:
            # The instance's own kind of terminal (a container's devpts), where the command runs.
            master, slave = self._open_terminal(self.request.width, self.request.height)
            self._master = master
            self._input = master
            self._child_fds = (slave, slave, slave)
            self._outputs = {"0": master}
        else:
            in_r, in_w = stdio.open_pipe()
            out_r, out_w = stdio.open_pipe()
            err_r, err_w = stdio.open_pipe()
            self._input = in_w
            self._child_fds = (in_r, out_w, err_w)
            self._outputs = {"1": out_r, "2": err_r}

    def _close_child_fds(self) -> None:
        for fd in set(self._child_fds):
            os.close(fd)
        self._child_fds = ()

    def _run_command(self) -> int:
        pumps = [self._pump(fd, self._sockets[channel]) for channel, fd in self._outputs.items()]
        fds = self._child_fds
        assert len(fds) == 3

        def started(pid: int) -> None:
            self._pid = pid
            # Only the child holds its ends now, so its exit is our end-of-file.
            self._close_child_fds()

        try:
            return self._run((fds[0], fds[1], fds[2]), self.request.interactive, started)
        finally:
            self._close_child_fds()
            for pump in pumps:
                pump.join(DRAIN_TIMEOUT)

    def _pump(self, fd: int, ws: WebSocket) -> threading.Thread:
        def pump() -> None:
            try:
                while True:
                    try:
                        data = os.read(fd, CHUNK)
                    except OSError:  # EIO: the terminal's last user is gone
                        break
                    if not data:
                        break
                    ws.send_binary(data)
                if not self.request.interactive:
                    ws.send_text("")  # end of this stream, for clients that wait for it
            except WebSocketClosed:
                pass

        t = threading.Thread(target=pump, name="exec-pump", daemon=True)
        t.start()
        return t

    def _close_all(self) -> None:
        self._close_input()
        with self._cond:
            self.finished.set()  # under the lock: a channel connecting now sees it and leaves
            sockets = list(self._sockets.values())
        for ws in sockets:
            ws.shutdown()
        if self._master is not None:
            with self._input_lock:
                os.close(self._master)
                self._input = self._master = None


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class ExecSessions:
    """The sessions of running websocket operations, by operation id."""

    def __init__(self) -> None:
        self._sessions: dict[str, ExecSession] = {}
        self._lock = threading.Lock()

    def add(self, op_id: str, session: ExecSession) -> None:
        with self._lock:
            self._sessions[op_id] = session

    def get(self, op_id: str) -> ExecSession | None:
        with self._lock:
            return self._sessions.get(op_id)

    def drop(self, op_id: str) -> None:
        with self._lock:
            self._sessions.pop(op_id, None)
