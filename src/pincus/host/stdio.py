"""Exec's stdio: a pseudo-terminal (with the window size the client reports) or pipes."""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from pincus.errors import HostError


def open_pty(width: int, height: int) -> tuple[int, int]:
    """(master, slave) of a new terminal of WIDTH x HEIGHT (0 leaves the kernel's default)."""
    try:
        master, slave = os.openpty()
    except OSError as e:
        raise HostError(f"open a pseudo-terminal: {e.strerror}") from e
    set_window_size(master, width, height)
    return master, slave


def set_window_size(fd: int, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        return
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    except OSError as e:
        raise HostError(f"set the terminal size to {width}x{height}: {e.strerror}") from e


def open_pipe() -> tuple[int, int]:
    """(read end, write end), both close-on-exec: the child gets only what it is handed."""
    try:
        return os.pipe()
    except OSError as e:
        raise HostError(f"open a pipe: {e.strerror}") from e


def open_null() -> int:
    try:
        return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise HostError(f"open {os.devnull}: {e.strerror}") from e


def close(fd: int) -> None:
    os.close(fd)
