"""Bind mounts into and out of a running container (disk hot-plug), the way Incus's `forkmount
move-mount` does it: the source is cloned as a detached mount tree in the daemon's view of the
host (open_tree), then a helper joins the container's user and mount namespaces and attaches the
tree at the target inside (move_mount); unplugging detaches it there (umount2 MNT_DETACH).

Into a container with its own user namespace the tree goes through a locking copy first: staged
in a private mount namespace, then copied into a new mount namespace of the container's user
namespace, which makes the kernel lock its flags (MNT_LOCK_READONLY): the container's root can
then not remount a read-only disk read-write.

The namespace work runs in a short-lived helper process (this file run as a script, stdlib only):
a thread of the daemon cannot join a mount namespace (its file system state is shared), and a
fork of the threaded daemon is not safe.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

_TIMEOUT = 30.0


def _run(*args: str, what: str) -> None:
    # Imported here: the helper below runs this file with no pincus on its path.
    from pincus.errors import HostError

    try:
        r = subprocess.run(
            [sys.executable, "-I", "-S", __file__, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HostError(f"{what}: timed out") from None
    if r.returncode != 0:
        raise HostError(f"{what}: {(r.stderr or r.stdout).strip() or f'exit {r.returncode}'}")


class Init(NamedTuple):
    """A container's init: its pid, and its start time (field 22 of /proc/<pid>/stat), which the
    helper checks so that a pid reused since cannot lead it into another process's namespaces."""

    pid: int
    start_time: int


def inject(init: Init, source: Path, path: str, readonly: bool) -> None:
    """Bind host SOURCE (a directory or a file) at PATH inside the container of INIT; PATH's
    missing directories (or the file) are made inside, as at the container's start."""
    _run("inject", str(init.pid), str(init.start_time), str(source), path, "ro" if readonly else "rw",
         what=f"bind {source} at {path} in the container (pid {init.pid})")  # fmt: skip


def eject(init: Init, path: str) -> None:
    """Detach what is mounted at PATH inside the container of INIT (nothing there: fine)."""
    _run("eject", str(init.pid), str(init.start_time), path,
         what=f"unmount {path} in the container (pid {init.pid})")  # fmt: skip


# --- the helper (run as a script: stdlib only, no pincus imports) ----------------------------------


def _helper(argv: list[str]) -> int:
    import ctypes
    import errno
    import select

    # container_init.py, beside this file, holds the syscall wrappers a container's start uses.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if TYPE_CHECKING:
        from pincus.host import container_init as ci
    else:
        import container_init as ci

    CLONE_NEWUSER, CLONE_NEWNS = ci.CLONE_NEWUSER, ci.CLONE_NEWNS

    def start_time(pid: int) -> int:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])

    def open_init(pid: int, started: int) -> tuple[int, int, bool]:
        """A pidfd and a root fd of the container's init, checked to be the init that started at
        STARTED (the pidfd holds it while its pid is read, so a reused pid is noticed); whether it
        has a user namespace of its own."""
        pidfd = os.pidfd_open(pid)
        if start_time(pid) != started:
            raise ci.SetupError(f"pid {pid} is no longer the container's init")
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        own = os.stat("/proc/self/ns/user").st_ino != os.stat(f"/proc/{pid}/ns/user").st_ino
        if select.select([pidfd], [], [], 0)[0]:  # readable: it exited while we looked
            raise ci.SetupError(f"the container's init (pid {pid}) exited")
        return pidfd, root, own

    def enter_userns(pidfd: int) -> None:
        ci.check(ci.libc.setns(pidfd, CLONE_NEWUSER), "enter the container's user namespace")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)

    def enter_mntns(pidfd: int, root: int) -> None:
        """Join the container's mount namespace, rooted at its root: paths (and symlinks in them)
        resolve inside it."""
        ci.check(ci.libc.setns(pidfd, CLONE_NEWNS), "enter the container's mount namespace")
        os.fchdir(root)
        os.chroot(".")
        os.chdir("/")

    def locked_copy(tree: int, is_dir: bool, pidfd: int) -> int:
        """TREE copied into a mount namespace of the container's user namespace (its flags locked);
        we are in that user namespace afterwards."""
        ci.check(ci.libc.unshare(CLONE_NEWNS), "unshare a staging mount namespace")
        ci.make_mounts_slave()  # nothing staged here reaches the daemon's mounts
        stage = next(d for d in ci.STAGES if os.path.isdir(d) and not os.path.islink(d))
        # 711: the container's root, which takes the copy, passes through to the staged tree.
        ci.mount("tmpfs", stage, "tmpfs", ci.MS_NOSUID | ci.MS_NODEV, "mode=711,size=64k")
        staged = f"{stage}/disk"
        if is_dir:
            os.mkdir(staged, 0o700)
        else:
            os.close(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        ci.attach(tree, staged, "stage the disk")
        os.close(tree)
        enter_userns(pidfd)
        ci.check(ci.libc.unshare(CLONE_NEWNS), "unshare a locking mount namespace")
        return ci.clone_tree(staged, False)

    try:
        if argv[:1] == ["inject"] and len(argv) == 6:
            pid, started, source, path, mode = int(argv[1]), int(argv[2]), argv[3], argv[4], argv[5]
            pidfd, root, own = open_init(pid, started)
            # Cloned here, in the daemon's view of the host, before leaving it.
            tree = ci.clone_tree(source, mode == "ro")
            is_dir = os.path.isdir(f"/proc/self/fd/{tree}")
            if own:
                tree = locked_copy(tree, is_dir, pidfd)
            enter_mntns(pidfd, root)
            if is_dir:
                ci.ensure_dir_inside(path)
            else:
                ci.ensure_file_inside(path)
            ci.attach(tree, path, f"bind mount on {path}")
            return 0
        if argv[:1] == ["eject"] and len(argv) == 4:
            pid, started, path = int(argv[1]), int(argv[2]), argv[3]
            pidfd, root, own = open_init(pid, started)
            if own:
                enter_userns(pidfd)
            enter_mntns(pidfd, root)
            if ci.libc.umount2(path.encode(), ci.MNT_DETACH) != 0:
                err = ctypes.get_errno()
                if err not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
                    raise ci.SetupError(f"unmount {path}: {os.strerror(err)}")
            return 0
    except (ci.SetupError, OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    print(
        "usage: mount_inject.py inject PID START_TIME SOURCE PATH ro|rw | eject PID START_TIME PATH",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(_helper(sys.argv[1:]))
