"""A dqlite node run in-process through ctypes (Debian's libdqlite0): it stores its Raft log and the
replicated SQLite databases under a data directory and serves dqlite's wire protocol on a TCP
address. The node runs its own libuv thread inside libdqlite, so Python only starts and stops it.

Node id 1 bootstraps a one-member cluster on first start; the others wait to be added by a client
(``db/dqlite_client.py``: ``add`` then ``assign``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from pincus.errors import HostError, InvalidError, PincusError
from pincus.host.splice import splice

log = logging.getLogger(__name__)

_LIB: ctypes.CDLL | None = None
# int (*f)(void *arg, const char *address, int *fd)
_CONNECT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int))
# Dials a member's node by its address: a connected socket that carries dqlite's protocol.
Dial = Callable[[str, float], socket.socket]


def _lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        name = ctypes.util.find_library("dqlite") or "libdqlite.so.0"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise HostError(f"libdqlite is not installed ({e}): install Debian's libdqlite0") from e
        lib.dqlite_node_create.argtypes = [
            ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p),
        ]  # fmt: skip
        lib.dqlite_node_create.restype = ctypes.c_int
        lib.dqlite_node_set_bind_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.dqlite_node_set_bind_address.restype = ctypes.c_int
        lib.dqlite_node_set_network_latency_ms.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.dqlite_node_set_network_latency_ms.restype = ctypes.c_int
        for fn in ("dqlite_node_start", "dqlite_node_stop"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_int
        lib.dqlite_node_set_connect_func.argtypes = [ctypes.c_void_p, _CONNECT, ctypes.c_void_p]
        lib.dqlite_node_set_connect_func.restype = ctypes.c_int
        lib.dqlite_node_get_bind_address.argtypes = [ctypes.c_void_p]
        lib.dqlite_node_get_bind_address.restype = ctypes.c_char_p
        lib.dqlite_node_destroy.argtypes = [ctypes.c_void_p]
        lib.dqlite_node_destroy.restype = None
        lib.dqlite_node_errmsg.argtypes = [ctypes.c_void_p]
        lib.dqlite_node_errmsg.restype = ctypes.c_char_p
        _LIB = lib
    return _LIB


def check_address(address: object) -> str:
    """``HOST:PORT`` with a literal IPv4 address (IPv6 in brackets) and a port 1-65535."""
    if not isinstance(address, str) or ":" not in address or not address.isascii():
        raise InvalidError(f"Invalid dqlite address {address!r}: expected HOST:PORT")
    host, _, port = address.rpartition(":")
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        number = int(port)
    except ValueError:
        raise InvalidError(f"Invalid dqlite address {address!r}: expected an IP address and a port") from None
    if not 0 < number < 65536 or port != str(number):
        raise InvalidError(f"Invalid dqlite address {address!r}: port must be 1-65535")
    return address


class DqliteNode:
    """One started node; ``stop`` stops and frees it (idempotent). NETWORK_LATENCY_MS sets Raft's
    timeouts (heartbeat 1.5x, election 15x); dqlite's own default is 500 ms and 3 s."""

    def __init__(
        self,
        node_id: int,
        address: str,
        data_dir: Path,
        network_latency_ms: int | None = None,
        dial: Dial | None = None,
    ) -> None:
        """DIAL: the node listens on an abstract unix socket of this process only (``bind_address``)
        and reaches the other members through DIAL (their API over TLS, see server/cluster.py),
        instead of listening on ADDRESS in clear text."""
        if not isinstance(node_id, int) or not 0 < node_id < 2**63:
            raise InvalidError(f"Invalid dqlite node id {node_id!r}")
        if network_latency_ms is not None and not 0 < network_latency_ms <= 3_600_000:
            raise InvalidError(f"Invalid dqlite network latency {network_latency_ms!r} ms: 1-3600000")
        self.node_id = node_id
        self.address = check_address(address)
        self.data_dir = data_dir
        lib = _lib()
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        handle = ctypes.c_void_p()
        rc = lib.dqlite_node_create(node_id, address.encode(), os.fsencode(data_dir), ctypes.byref(handle))
        if rc != 0:
            msg = lib.dqlite_node_errmsg(handle) if handle.value else None
            if handle.value:
                lib.dqlite_node_destroy(handle)
            raise HostError(f"Failed to create dqlite node {node_id} in {data_dir}: {_text(msg, rc)}")
        self._handle: ctypes.c_void_p | None = handle
        self._connect = None if dial is None else _CONNECT(self._connector(dial))  # kept: C holds it
        try:
            if self._connect is None:
                self._call("dqlite_node_set_bind_address", address.encode())
            else:
                self._call("dqlite_node_set_bind_address", b"@")
                self._call("dqlite_node_set_connect_func", self._connect, None)
            if network_latency_ms is not None:
                self._call("dqlite_node_set_network_latency_ms", network_latency_ms)
            self._call("dqlite_node_start")
        except BaseException:
            lib.dqlite_node_destroy(handle)
            self._handle = None
            raise

    @property
    def bind_address(self) -> str:
        """Where the node listens: ADDRESS, or "@NAME" for an abstract unix socket."""
        raw = _lib().dqlite_node_get_bind_address(self._handle)
        return (raw or b"").decode()

    def connect_local(self, timeout: float = 5.0) -> socket.socket:
        """A connection to this node's own listener (abstract unix socket or TCP)."""
        address = self.bind_address
        try:
            if address.startswith("@"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect("\0" + address[1:])
                return sock
            host, _, port = address.rpartition(":")
            return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        except OSError as e:
            raise HostError(f"Cannot reach the local dqlite node at {address}: {e}") from e

    @staticmethod
    def _connector(dial: Dial) -> Callable[[object, bytes, object], int]:
        """The connect function libdqlite calls (on a libuv worker thread) to reach a member: DIAL
        gives a socket (a TLS one), and libdqlite gets one end of a socket pair spliced to it."""

        def connect(arg: object, address: bytes, fd: object) -> int:
            try:
                remote = dial(address.decode(), 5.0)
            except (PincusError, OSError) as e:
                log.debug("dqlite cannot reach %s: %s", address, e)
                return 1
            ours, theirs = socket.socketpair()
            threading.Thread(target=splice, args=(theirs, remote), name="dqlite-splice", daemon=True).start()
            fd[0] = ours.detach()  # type: ignore[index]
            return 0

        return connect

    def _call(self, fn: str, *args: object) -> None:
        rc = getattr(_lib(), fn)(self._handle, *args)
        if rc != 0:
            msg = _lib().dqlite_node_errmsg(self._handle)
            raise HostError(f"dqlite node {self.node_id} at {self.address}: {fn} failed: {_text(msg, rc)}")

    def stop(self) -> None:
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        lib = _lib()
        rc = lib.dqlite_node_stop(handle)
        lib.dqlite_node_destroy(handle)
        if rc != 0:
            raise HostError(f"dqlite node {self.node_id} at {self.address}: stop failed (code {rc})")


def _text(msg: bytes | None, rc: int) -> str:
    return (msg or b"").decode(errors="replace") or f"error code {rc}"
