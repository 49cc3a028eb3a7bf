"""Copy bytes both ways between two connected sockets until either side closes, on one thread
(a TLS socket must not be read and written from two threads at once)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl

_CHUNK = 65536


def splice(a: socket.socket, b: socket.socket) -> None:
    """Until one side ends; then both are closed."""
    try:
        for s in (a, b):
            s.setblocking(True)
            s.settimeout(None)
        with selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while True:
                ready = [key for key, _ in sel.select()]
                # Bytes OpenSSL decrypted already do not make the socket readable: drain them too.
                ready += [sel.get_key(s) for s in (a, b) if isinstance(s, ssl.SSLSocket) and s.pending()]
                for key in ready:
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(_CHUNK)
                    if not data:
                        return
                    key.data.sendall(data)
    except OSError:
        return
    finally:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()
