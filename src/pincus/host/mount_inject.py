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
from typing import TYPE_CHECKING

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


def inject(pid: int, source: Path, path: str, readonly: bool) -> None:
    """Bind host SOURCE (a directory or a file) at PATH inside the container whose init is PID;
    PATH's missing directories (or the file) are made inside, as at the container's start."""
    _run("inject", str(pid), str(source), path, "ro" if readonly else "rw",
         what=f"bind {source} at {path} in the container (pid {pid})")  # fmt: skip


def eject(pid: int, path: str) -> None:
    """Detach what is mounted at PATH inside the container whose init is PID (nothing there: fine)."""
    _run("eject", str(pid), path, what=f"unmount {path} in the container (pid {pid})")


# --- the helper (run as a script: stdlib only, no pincus imports) ----------------------------------


def _helper(argv: list[str]) -> int:
    import ctypes
    import errno

    # container_init.py, beside this file, holds the syscall wrappers a container's start uses.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if TYPE_CHECKING:
        from pincus.host import container_init as ci
    else:
        import container_init as ci

    CLONE_NEWUSER, CLONE_NEWNS = ci.CLONE_NEWUSER, ci.CLONE_NEWNS

    def own_userns(pid: int) -> bool:
        return os.stat("/proc/self/ns/user").st_ino != os.stat(f"/proc/{pid}/ns/user").st_ino

    def enter_userns(pidfd: int) -> None:
        ci.check(ci.libc.setns(pidfd, CLONE_NEWUSER), "enter the container's user namespace")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)

    def enter(pid: int, userns: bool = True) -> None:
        """Join the container's user namespace (when it has its own and USERNS) as its root, then
        its mount namespace, rooted at its root: paths (and symlinks in them) resolve inside it."""
        pidfd = os.pidfd_open(pid)
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        if userns and own_userns(pid):
            enter_userns(pidfd)
        ci.check(ci.libc.setns(pidfd, CLONE_NEWNS), "enter the container's mount namespace")
        os.fchdir(root)
        os.chroot(".")
        os.chdir("/")
        os.close(root)
        os.close(pidfd)

    def locked_copy(tree: int, is_dir: bool, pid: int) -> int:
        """TREE copied into a mount namespace of the container's user namespace (flags locked);
        we stay in that user namespace."""
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
        pidfd = os.pidfd_open(pid)
        enter_userns(pidfd)
        os.close(pidfd)
        ci.check(ci.libc.unshare(CLONE_NEWNS), "unshare a locking mount namespace")
        return ci.clone_tree(staged, False)

    try:
        if argv[:1] == ["inject"] and len(argv) == 5:
            pid, source, path, mode = int(argv[1]), argv[2], argv[3], argv[4]
            # Cloned here, in the daemon's view of the host, before leaving it.
            tree = ci.clone_tree(source, mode == "ro")
            is_dir = os.path.isdir(f"/proc/self/fd/{tree}")
            if own_userns(pid):
                tree = locked_copy(tree, is_dir, pid)
                enter(pid, userns=False)
            else:
                enter(pid)
            if is_dir:
                ci.ensure_dir_inside(path)
            else:
                ci.ensure_file_inside(path)
            ci.attach(tree, path, f"bind mount on {path}")
            return 0
        if argv[:1] == ["eject"] and len(argv) == 3:
            pid, path = int(argv[1]), argv[2]
            enter(pid)
            if ci.libc.umount2(path.encode(), ci.MNT_DETACH) != 0:
                err = ctypes.get_errno()
                if err not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
                    raise ci.SetupError(f"unmount {path}: {os.strerror(err)}")
            return 0
    except (ci.SetupError, OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    print("usage: mount_inject.py inject PID SOURCE PATH ro|rw | eject PID PATH", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_helper(sys.argv[1:]))
