"""The pre-init that makes a pincus container on its own root, and the container's pid 1 until it
execs the image's init: see ``preinit()`` below. Started by
``pincus.host.container.spawn_container`` as
``python -I -S container_init.py --preinit 1 --name N --state-dir D --ready-fd R --sync-fd S``.

Stdlib only and no pincus imports: it runs with ``-I -S`` (no site, no script directory on
sys.path) so that it starts in ~15 ms.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import socket
import struct
import sys
from contextlib import suppress
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWCGROUP = 0x02000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_SLAVE = 0x80000
MS_RDONLY = 0x1
MS_BIND = 0x1000
MNT_DETACH = 0x2

# x86_64 syscall numbers and flags of the new mount API.
SYS_PIVOT_ROOT = 155
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 0x1
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x100000
AT_FDCWD = -100
# Where the pre-init's detached root tree is attached before pivot_root: the first that exists
# of these host directories (any does: the mount lives only in the container's mount namespace).
STAGES = ("/mnt", "/tmp", "/run", "/var")
OLD_ROOT = ".pincus-old-root"
# Host device nodes a container gets (bind mounts: a user namespace cannot mknod).
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
# Out of every container's bounding set: sys_module, sys_rawio, sys_time, mac_override, mac_admin.
# Incus drops them from privileged containers; in a user namespace they reach nothing of the host,
# and without them systemd skips the units it cannot run there (debugfs needs CAP_SYS_RAWIO).
DROPPED_CAPS = (16, 17, 25, 32, 33)

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.syscall.restype = ctypes.c_long


class MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class SetupError(Exception):
    pass


def check(rc: int, what: str) -> None:
    if rc != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(
        libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {fstype or source} on {target}",
    )


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


def syscall(number: int, *args: object, what: str) -> int:
    rc = libc.syscall(number, *args)
    if rc < 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")
    return int(rc)


def clone_tree(path: str, readonly: bool) -> int:
    """A detached copy of the mount tree at PATH (taken while we still see the host's tree)."""
    fd = syscall(
        SYS_OPEN_TREE,
        AT_FDCWD,
        path.encode(),
        OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC,
        what=f"clone mount tree {path}",
    )
    if readonly:
        attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
        syscall(
            SYS_MOUNT_SETATTR,
            fd,
            b"",
            AT_EMPTY_PATH | AT_RECURSIVE,
            ctypes.byref(attr),
            ctypes.sizeof(attr),
            what=f"make {path} read-only",
        )
    return fd


def attach(tree: int, target: str, what: str) -> None:
    syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH, what=what)


def send(sock: socket.socket, text: str) -> None:
    sock.sendall(text.encode() + b"\n")


def receive(sock: socket.socket) -> str:
    """One line from the daemon; an empty string when it closed the socket (start abandoned)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return ""
        data += chunk
    return data.decode().rstrip("\n")


def ensure_dir_inside(path: str) -> None:
    """mkdir -p below the container's root (we are already pivoted: symlinks stay inside)."""
    with suppress(FileExistsError):
        os.makedirs(path, 0o755, exist_ok=True)


def ensure_file_inside(path: str) -> None:
    ensure_dir_inside(os.path.dirname(path) or "/")
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644))


def build_dev(nodes: dict[str, int]) -> tuple[int, int]:
    """A private /dev: tmpfs with the host's harmless nodes bound in, devpts of our own, shm; the
    console's two ends (master, slave)."""
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
    for name, tree in nodes.items():
        ensure_file_inside(f"/dev/{name}")
        attach(tree, f"/dev/{name}", f"bind /dev/{name}")
        os.close(tree)
    ensure_dir_inside("/dev/pts")
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", "/dev/ptmx")
    # The console is a terminal of the container's own devpts. Its other end goes to the daemon,
    # which logs what is written there, and init inherits it too (a daemon restart leaves it
    # held): a getty or shell on /dev/console waits there for input instead of reading
    # end-of-file and being respawned forever, as it would on /dev/null.
    master, slave = os.openpty()
    ensure_file_inside("/dev/console")
    check(libc.mount(os.ttyname(slave).encode(), b"/dev/console", None, MS_BIND, None), "bind /dev/console")
    os.set_inheritable(master, True)
    ensure_dir_inside("/dev/shm")
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"/dev/{name}")
    return master, slave


def write_files(files: list[dict[str, object]]) -> None:
    """Rendered templates, written as root of the container (inside its root, after pivot)."""
    for entry in files:
        path = str(entry["path"])
        ensure_dir_inside(os.path.dirname(path) or "/")
        if os.path.islink(path):
            os.unlink(path)  # a template replaces a link rather than writing through it
        fd = os.open(
            path,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
            int(str(entry.get("mode", "420"))),
        )
        try:
            os.write(fd, str(entry["content"]).encode())
        finally:
            os.close(fd)


def userns_refused(err: int) -> str:
    """Why the kernel refused a user namespace, in words a user can act on."""
    text = f"unshare user namespace: {os.strerror(err)}"
    if err == errno.EPERM:
        return (
            f"{text}: the kernel refuses user namespaces to this process (it does to any process in a "
            "chroot, and some sandboxes forbid them); run pincusd outside the chroot, or set "
            "security.privileged=true on the instance to run it without one"
        )
    if err == errno.ENOSPC:
        return f"{text}: user.max_user_namespaces is reached (or 0); raise it with sysctl"
    return text


def drop_capabilities() -> None:
    for cap in DROPPED_CAPS:
        # EINVAL: a kernel that does not know that capability, so nobody can have it.
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            check(-1, f"drop capability {cap}")


def setup_root(
    cfg: dict[str, Any], tree: int, mounts: list[tuple[int, str]]
) -> tuple[list[str], tuple[int, int]]:
    """pid 1's setup on the container's root; the init command line to exec and the console's
    two ends."""
    if os.getpid() != 1:
        raise SetupError("not started in a new pid namespace")
    make_mounts_slave()
    # The host's device nodes, taken from our copy of the host tree before it goes away.
    nodes = {name: clone_tree(f"/dev/{name}", False) for name in DEV_NODES if os.path.exists(f"/dev/{name}")}
    stage = next((d for d in STAGES if os.path.isdir(d) and not os.path.islink(d)), None)
    if stage is None:
        raise SetupError(f"no directory to attach the root file system on (tried {', '.join(STAGES)})")
    attach(tree, stage, "attach the root file system")
    os.close(tree)
    os.chdir(stage)
    st = os.lstat(OLD_ROOT) if os.path.lexists(OLD_ROOT) else None
    if st is None:
        os.mkdir(OLD_ROOT, 0o700)
    elif not os.path.isdir(OLD_ROOT) or os.path.islink(OLD_ROOT):
        raise SetupError(f"/{OLD_ROOT} in the root file system is not a directory")
    syscall(SYS_PIVOT_ROOT, b".", OLD_ROOT.encode(), what="pivot_root")
    os.chdir("/")
    # From here on paths resolve inside the container's root; the host's tree stays reachable at
    # /OLD_ROOT only until it is detached below (proc and sysfs need it visible to be mounted).
    for path in ("/proc", "/sys", "/dev", "/run", "/tmp"):
        ensure_dir_inside(path)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if cfg.get("cgroup2"):
        # Our cgroup namespace roots it at the container's group, delegated to its root: systemd
        # manages its own sub-groups there (the limits above it stay the host's).
        mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    console = build_dev(nodes)
    mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=65536k")
    for fd, path in mounts:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            ensure_dir_inside(path)
        else:
            ensure_file_inside(path)
        attach(fd, path, f"bind mount on {path}")
        os.close(fd)
    check(libc.umount2(f"/{OLD_ROOT}".encode(), MNT_DETACH), "detach the host's root")
    os.rmdir(f"/{OLD_ROOT}")
    socket.sethostname(str(cfg["hostname"]))
    bring_lo_up()
    write_files(list(cfg.get("files", [])))
    drop_capabilities()
    init = [str(a) for a in cfg.get("init", ["/sbin/init"])]
    if not os.path.lexists(init[0]) or not os.access(init[0], os.X_OK):
        raise SetupError(f"the root file system has no executable {init[0]}")
    return init, console


def stage_mounts(mounts: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """Attach each detached disk tree in a new private mount namespace (a tmpfs on a stage dir);
    (where it is staged, its path inside the container) for each."""
    check(libc.unshare(CLONE_NEWNS), "unshare a staging mount namespace")
    make_mounts_slave()  # nothing staged here reaches the host's mounts
    stage = next((d for d in STAGES if os.path.isdir(d) and not os.path.islink(d)), None)
    if stage is None:
        raise SetupError(f"no directory to stage disks on (tried {', '.join(STAGES)})")
    # 711: the container's root, which takes the copies, passes through to the staged trees.
    mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV, "mode=711,size=64k")
    out = []
    for i, (fd, path) in enumerate(mounts):
        where = f"{stage}/disk{i}"
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.mkdir(where, 0o700)
        else:
            os.close(os.open(where, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        attach(fd, where, f"stage the disk for {path}")
        os.close(fd)
        out.append((where, path))
    return out


def preinit(args: dict[str, str]) -> int:
    """Make a container on its own root; the daemon drives each step over the sync socket.

    1. receive the config (JSON line); clone the root and disk sources as detached mount trees
       (we are still host root and see the host's tree);
    2. unshare the user namespace, say "userns", wait for "go" (the daemon has written our id
       maps and attached our cgroup, and may send an idmapped root tree instead);
    3. become root of the user namespace, unshare mount, pid, net, uts, ipc and cgroup
       namespaces (all owned by it) and fork pid 1; report its pid and exit.
    pid 1 mounts its world, pivots into the root, writes "ready" to the ready fd and execs the
    image's init; a failure writes "error: <reason>" instead.
    """
    ready_fd = int(args["ready-fd"])
    os.set_inheritable(ready_fd, False)  # closes when pid 1 execs init: the daemon's "it runs"
    sock = socket.socket(fileno=int(args["sync-fd"]))
    sock.set_inheritable(False)
    try:
        cfg = json.loads(receive(sock) or "null")
        if not isinstance(cfg, dict):
            return 1
        tree = clone_tree(str(cfg["rootfs"]), False)
        mounts = [
            (clone_tree(str(m["source"]), bool(m.get("readonly"))), str(m["path"])) for m in cfg["mounts"]
        ]
        # Staged in a mount namespace of host root's own: the copy the container's namespace takes
        # of it below locks each disk's flags (a read-only disk stays read-only for root inside).
        staged = stage_mounts(mounts) if cfg["userns"] and mounts else []
        if staged:
            mounts = []
        if cfg["userns"] and libc.unshare(CLONE_NEWUSER) != 0:
            raise SetupError(userns_refused(ctypes.get_errno()))
        send(sock, "userns")
        # "go", with the idmapped root tree attached when the daemon made one.
        msg, fds, _, _ = socket.recv_fds(sock, 64, 1)
        if msg != b"go\n":
            return 1
        if fds:
            os.close(tree)
            tree = fds[0]
        elif cfg.get("idmapped"):
            raise SetupError("the daemon sent no idmapped root")
        if cfg["userns"]:
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        check(
            libc.unshare(
                CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP
            ),
            "unshare namespaces",
        )
        mounts += [(clone_tree(where, False), path) for where, path in staged]
    except (SetupError, OSError, KeyError, ValueError) as e:
        os.write(ready_fd, f"error: {e}\n".encode())
        return 1
    # pid 1 hands the console's master to us on this (close-on-exec) pair; we pass it on.
    console_ours, console_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        sock.close()
        console_ours.close()
        try:
            init, console = setup_root(cfg, tree, mounts)
            socket.send_fds(console_theirs, [b"console\n"], list(console))
            console_theirs.close()
            os.close(console[1])
        except (SetupError, OSError) as e:
            os.write(ready_fd, f"error: {e}\n".encode())
            os._exit(1)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.write(ready_fd, b"ready\n")
        # ready_fd is close-on-exec: the daemon sees it close when init runs.
        try:
            os.execve(
                init[0],
                init,
                {
                    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM": "linux",
                    # What LXC (so Incus) gives: the distributions' units key off "lxc".
                    "container": "lxc",
                },
            )
        except OSError as e:
            os.write(ready_fd, f"error: exec {init[0]}: {e.strerror}\n".encode())
        os._exit(1)
    send(sock, f"pid {pid}")
    console_theirs.close()
    # Nothing when pid 1 failed before its /dev existed (its end closes as it exits).
    msg, fds, _, _ = socket.recv_fds(console_ours, 64, 2)
    if msg == b"console\n" and fds:
        socket.send_fds(sock, [msg], fds)
    return 0


def parse_args(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    it = iter(argv)
    for key in it:
        if not key.startswith("--"):
            raise SystemExit(f"container_init: unexpected argument {key!r}")
        args[key[2:]] = next(it, "")
    for required in ("preinit", "ready-fd", "sync-fd"):
        if not args.get(required):
            raise SystemExit(f"container_init: --{required} is required")
    return args


def main() -> int:
    args = parse_args(sys.argv[1:])
    set_comm(b"pincus-preinit")
    return preinit(args)


if __name__ == "__main__":
    sys.exit(main())
