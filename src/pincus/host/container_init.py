"""pid 1 of a pincus container.

Started by ``pincus.host.container.spawn_container`` as
``python -I -S container_init.py --name N --hostname H --ready-fd FD`` in a fresh pid
namespace (so this process is pid 1). It unshares net, uts, ipc and mount namespaces, makes
the mount tree a slave of the host's, mounts a fresh /proc and /sys, sets the hostname,
brings lo up, writes ``ready`` to FD and closes it; then it reaps children until SIGTERM or
SIGINT, on which it sends SIGTERM to every process in the container and exits once they
are gone. A failed setup writes ``error: <reason>`` to FD and exits 1.

Stdlib only and no pincus imports: it runs with ``-I -S`` (no site, no script directory on
sys.path) so that it starts in ~15 ms.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import sys
import time
from contextlib import suppress

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_SLAVE = 0x80000
MNT_DETACH = 0x2

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
PR_SET_NAME = 15

# A process still exiting after SIGTERM is looked for this often (it need not be our child,
# so no SIGCHLD tells us about it).
SHUTDOWN_POLL = 0.02
HANDLED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class SetupError(Exception):
    pass


def check(rc: int, what: str) -> None:
    if rc != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    check(
        libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None),
        f"mount {fstype or source} on {target}",
    )


def detach_namespace_handles() -> None:
    # The new mount namespace starts as a copy of the host's, including every netns handle
    # bound there (other containers', `ip netns` ones). A private copy would pin those
    # namespaces, and the NICs in them, for as long as this container lives.
    with open("/proc/self/mountinfo", "rb") as f:
        lines = f.read().splitlines()
    for line in reversed(lines):  # children before parents
        fields = line.split(b" - ", 1)
        if len(fields) == 2 and fields[1].startswith(b"nsfs "):
            libc.umount2(unescape(fields[0].split(b" ")[4]), MNT_DETACH)  # gone already: fine


def unescape(path: bytes) -> bytes:
    """Undo mountinfo's octal escapes (the kernel escapes only space, tab, newline, backslash)."""
    for code, char in ((b"\\040", b" "), (b"\\011", b"\t"), (b"\\012", b"\n"), (b"\\134", b"\\")):
        path = path.replace(code, char)
    return path


def set_comm(name: bytes) -> None:
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def bring_lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req + b"\0" * 22)[:18])[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP) + b"\0" * 22)


def _mountinfo_path(field: str) -> bytes:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return field.encode().decode("unicode_escape").encode("latin-1")


def make_mounts_slave() -> None:
    """Make this mount namespace a slave of the one it was copied from.

    Where / is not a mount point (pincus, or its tests, inside a chroot) the kernel refuses to
    change / itself: then every mount visible from here is made a slave one by one. Mounts
    made later are stacked on those, never on /, so nothing propagates out either way.
    """
    if libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        check(-1, "make / rslave")
    with open("/proc/self/mountinfo") as f:
        mountpoints = [_mountinfo_path(line.split()[4]) for line in f]
    for mountpoint in mountpoints:
        # A mount hidden under a later one, or behind a symlink, cannot be reached by its path
        # (EINVAL, ENOENT): nothing is mounted there from here, so nothing can propagate.
        failed = libc.mount(None, mountpoint, None, MS_REC | MS_SLAVE, None) != 0
        if failed and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
            check(-1, f"make {mountpoint.decode(errors='replace')} rslave")


def setup(hostname: str) -> None:
    if os.getpid() != 1:
        raise SetupError("not started in a new pid namespace")
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET), "unshare namespaces")
    # Slave, not private: host mounts made later still show up inside; nothing made inside
    # propagates out. Must precede every mount below.
    make_mounts_slave()
    detach_namespace_handles()
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # sysfs is bound to the netns of whoever mounts it: /sys/class/net shows only ours.
    mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    socket.sethostname(hostname)
    bring_lo_up()


def reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def others_running() -> bool:
    """Whether any process besides this one and zombies is left in the container."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == "1":
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            return True
    return False


def supervise() -> int:
    stopping = False
    while True:
        # While stopping, also wake up to look for non-children that have exited.
        info = signal.sigtimedwait(HANDLED, SHUTDOWN_POLL) if stopping else signal.sigwaitinfo(HANDLED)
        signo = info.si_signo if info is not None else 0
        if signo == signal.SIGCHLD:
            reap_children()
        elif signo in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            print(f"init: signal {signo}, stopping", flush=True)
            with suppress(ProcessLookupError):  # from pid 1, -1 is every process of our pid ns
                os.kill(-1, signal.SIGTERM)
        if stopping:
            reap_children()
            if not others_running():
                return 0


def parse_args(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    it = iter(argv)
    for key in it:
        if not key.startswith("--"):
            raise SystemExit(f"container_init: unexpected argument {key!r}")
        args[key[2:]] = next(it, "")
    for required in ("hostname", "ready-fd"):
        if not args.get(required):
            raise SystemExit(f"container_init: --{required} is required")
    return args


def main() -> int:
    args = parse_args(sys.argv[1:])
    ready_fd = int(args["ready-fd"])
    # Blocked signals stay pending even for a namespace init without handlers, and
    # sigwaitinfo takes them without the races of a handler.
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    set_comm(b"pincus-init")
    try:
        setup(args["hostname"])
    except (SetupError, OSError) as e:
        os.write(ready_fd, f"error: {e}\n".encode())
        return 1
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    print(f"init: container {args.get('name', '')} ready at {time.time():.3f}", flush=True)
    return supervise()


if __name__ == "__main__":
    sys.exit(main())
