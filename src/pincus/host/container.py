"""Containers: an init in its own namespaces, and exec into them.

On its own root (spawn_container with a RootSpec): a pre-init (container_init.py --preinit)
unshares a user namespace, which the daemon maps; it then unshares mount, pid, net, uts, ipc
and cgroup namespaces owned by it and forks pid 1, which pivots into the root and execs the
image's init. The pre-init exits at once; pid 1 is reparented to the daemon (a subreaper for
that moment), whose one reaper thread (reaper.py) reaps it. A later process finds the init
again by pid and start time (``ContainerProcess``), which is safe against pid reuse.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from pincus.errors import HostError, InvalidError
from pincus.host import cgroups, console_log, files, netns, process, reaper, stdio
from pincus.host import idmap as idmap_host
from pincus.idmaps import IdMap
from pincus.reverter import Reverter

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# As Incus sets them for exec (root inside the container).
DEFAULT_ENV = {"PATH": DEFAULT_PATH, "HOME": "/root", "USER": "root", "LANG": "C.UTF-8"}

_INIT_SCRIPT = Path(__file__).with_name("container_init.py")
_READY_TIMEOUT = 10.0
# After SIGKILL the kernel still has to kill every process of the pid namespace.
_KILL_TIMEOUT = 10.0
_HOSTNAME_MAX = 64
# Namespace files under /proc/<pid>/ns and the nsenter option for each; nsenter enters
# them in its own fixed order (user first, mount last). user and cgroup only where the
# container has its own (entering one's own user namespace is an error).
_NAMESPACES = (
    ("user", "user"),
    ("cgroup", "cgroup"),
    ("net", "net"),
    ("uts", "uts"),
    ("ipc", "ipc"),
    ("mnt", "mount"),
    ("pid", "pid"),
)
_OPTIONAL_NAMESPACES = ("user", "cgroup")

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


@dataclass(frozen=True)
class ContainerProcess:
    pid: int
    start_time: int  # field 22 of /proc/<pid>/stat, in clock ticks since boot


# The inits this process started, watched by the one reaper thread, so stop can wait for the reaping.
_waiters: dict[ContainerProcess, reaper.Watch] = {}
_waiters_lock = threading.Lock()


def netns_handle(state_dir: Path) -> Path:
    """Where spawn_container binds the container's netns."""
    return state_dir / "netns"


def is_alive(proc: ContainerProcess) -> bool:
    """Whether proc's pid runs the process that was started at proc.start_time."""
    return process.is_alive(proc.pid, proc.start_time)


def _check_names(name: str, hostname: str) -> None:
    if not hostname or len(hostname.encode()) > _HOSTNAME_MAX or "\0" in hostname:
        raise InvalidError(f"Invalid hostname {hostname!r}: must be 1-{_HOSTNAME_MAX} bytes")
    if not name or "\0" in name:
        raise InvalidError(f"Invalid container name {name!r}")


def _read_ready(fd: int, timeout: float) -> str | None:
    """What init writes to the ready pipe until it closes it; None after timeout seconds."""
    deadline = time.monotonic() + timeout
    poller = select.poll()  # not select(): a daemon's fds may be numbered above 1024
    poller.register(fd, select.POLLIN)
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if poller.poll(left * 1000):
            chunk = os.read(fd, 4096)
            if not chunk:
                return data.decode(errors="replace").strip()
            data += chunk


def _kill_child(popen: subprocess.Popen[bytes]) -> None:
    popen.kill()
    popen.wait()


def _start_waiter(proc: ContainerProcess, child: subprocess.Popen[bytes] | int) -> None:
    """CHILD: pid 1 of a container (our child through the subreaper while its pre-init lived)."""

    def reaped(status: int | None) -> None:
        console_log.drop(proc.pid)
        with _waiters_lock:
            _waiters.pop(proc, None)

    # Under the lock, so the entry exists before reaped() (reaper thread) can pop it.
    with _waiters_lock:
        _waiters[proc] = reaper.watch(child, reaped)


def spawn_container(
    name: str,
    hostname: str,
    state_dir: Path,
    log_path: Path,
    spec: RootSpec,
    prepare: Callable[[int], None] | None = None,
) -> ContainerProcess:
    """Start a container on SPEC's root (see _spawn_on_root) and bind its netns at
    netns_handle(). PREPARE gets the host pid of the container's first process before it goes on
    past its namespace setup (the cgroup is attached there).
    """
    return _spawn_on_root(name, hostname, state_dir, log_path, spec, prepare)


@dataclass(frozen=True)
class BindMount:
    source: Path  # on the host
    path: str  # inside the container
    readonly: bool = False


@dataclass(frozen=True)
class RootSpec:
    """What a container on its own root starts with."""

    rootfs: Path
    idmap: IdMap  # () = privileged: no user namespace
    mounts: tuple[BindMount, ...] = ()
    # Rendered templates: (absolute path inside, content, mode), written by the container's root.
    files: tuple[tuple[str, str, int], ...] = ()
    init: tuple[str, ...] = ("/sbin/init",)
    # The root is mounted through the user namespace's map (files on disk stay unshifted);
    # otherwise the caller has chown-shifted it.
    idmapped: bool = False
    # Mount a cgroup2 at /sys/fs/cgroup (rooted at the container's group by its cgroup namespace).
    cgroup2: bool = False


_PR_SET_CHILD_SUBREAPER = 36
_subreaper_users = 0
_subreaper_lock = threading.Lock()


@contextmanager
def _subreaper() -> Iterator[None]:
    """While a pre-init lives: it exits once pid 1 runs, and pid 1 is then reparented to us.

    Only for that window: a permanent subreaper would also inherit every daemonizing helper
    (dnsmasq), which nothing here reaps (the single reaper thread of host/reaper.py will).
    """
    global _subreaper_users
    with _subreaper_lock:
        if _subreaper_users == 0 and _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise HostError(f"become a child subreaper: {os.strerror(ctypes.get_errno())}")
        _subreaper_users += 1
    try:
        yield
    finally:
        with _subreaper_lock:
            _subreaper_users -= 1
            if _subreaper_users == 0:
                _libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def check_root(name: str, spec: RootSpec) -> None:
    """Refuse a root without its init, or a bad mount, before anything changes."""
    if not spec.rootfs.is_dir() or spec.rootfs.is_symlink():
        raise HostError(f"start container {name}: root file system {spec.rootfs} is not a directory")
    init = spec.init[0]
    # Resolved by hand inside the root: an absolute symlink (/sbin/init -> /bin/busybox) points
    # into the container, never at the host.
    target = _resolve_inside(spec.rootfs, init)
    if target is None or not target.is_file() or not os.access(target, os.X_OK):
        raise InvalidError(
            f"start container {name}: the root file system has no executable {init} ({spec.rootfs}{init})"
        )
    for m in spec.mounts:
        if not m.path.startswith("/") or "\0" in m.path or any(p == ".." for p in m.path.split("/")):
            raise InvalidError(f"start container {name}: invalid mount path {m.path!r}")
        if not m.source.exists():
            raise InvalidError(f"start container {name}: mount source {m.source} does not exist")


def _resolve_inside(root: Path, path: str, depth: int = 0) -> Path | None:
    """PATH inside ROOT with symlinks resolved as the container sees them (None: dangling)."""
    if depth > 40:
        return None
    current = root
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            current = current.parent if current != root else root
            continue
        nxt = current / part
        if nxt.is_symlink():
            link = os.readlink(nxt)
            rest = "/".join(parts[i + 1 :])
            base = "" if link.startswith("/") else str(current.relative_to(root))
            return _resolve_inside(root, f"/{base}/{link}/{rest}", depth + 1)
        if not nxt.exists():
            return None
        current = nxt
    return current


def read_volume_file(volume: Path, name: str) -> str | None:
    """VOLUME/NAME (metadata.yaml, templates/<file>) as text; None if absent. Never follows a
    symlink: the volume's files come from an image."""
    try:
        fd = os.open(volume / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"read {volume / name}: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20).decode(errors="replace")


def halt_signal(rootfs: Path, init: str = "/sbin/init") -> int:
    """The signal that makes the image's init power off: busybox SIGUSR2, systemd SIGRTMIN+3,
    anything else SIGPWR (as LXC)."""
    target = _resolve_inside(rootfs, init)
    name = target.name if target is not None else ""
    if name == "busybox":
        return signal.SIGUSR2
    if name == "systemd":
        return signal.SIGRTMIN + 3
    return signal.SIGPWR


def _spawn_preinit(
    name: str, state_dir: Path, log: int, ready_fd: int, sync_fd: int
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-I", "-S", str(_INIT_SCRIPT), "--preinit", "1", "--name", name,
        # Ties the process to its daemon's state: recognisably whose it is.
        "--state-dir", str(state_dir), "--ready-fd", str(ready_fd), "--sync-fd", str(sync_fd),
    ]  # fmt: skip
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(ready_fd, sync_fd),
            cwd="/", env=dict(DEFAULT_ENV), start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        raise HostError(f"start {argv[0]}: {e.strerror}") from e


def _recv_line(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):  # reset: it died with our config unread
        return ""
    return data.decode(errors="replace").strip()


def _recv_console(sock: socket.socket, timeout: float) -> tuple[int, int] | None:
    """The console's two ends (master, slave) from the pre-init; None when pid 1 failed before
    making them."""
    sock.settimeout(timeout)
    try:
        msg, fds, _, _ = socket.recv_fds(sock, 64, 2)
    except TimeoutError:
        return None
    for fd in fds:
        os.set_inheritable(fd, False)
    if msg != b"console\n" or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return None
    return fds[0], fds[1]


def _kill_pid(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _spawn_on_root(
    name: str,
    hostname: str,
    state_dir: Path,
    log_path: Path,
    spec: RootSpec,
    prepare: Callable[[int], None] | None,
) -> ContainerProcess:
    """Start a container on spec.rootfs: the image's init as pid 1 of new user (unless spec.idmap is
    empty), mount, pid, net, uts, ipc and cgroup namespaces, all owned by that user namespace.

    PREPARE gets the host pid of the process that holds the new user namespace, after its id
    maps are written and before any other namespace exists (attach the cgroup there). Ready
    means pid 1 has its mounts, hostname and lo and is about to exec init. On failure nothing
    is left behind.
    """
    _check_names(name, hostname)
    check_root(name, spec)
    handle = netns_handle(state_dir)
    if not state_dir.is_dir():
        raise HostError(f"start container {name}: state directory {state_dir} does not exist")
    if netns.netns_is_bound(handle):
        raise HostError(f"start container {name}: {handle} is still bound to a netns")
    config = {
        "hostname": hostname,
        "rootfs": str(spec.rootfs),
        "userns": bool(spec.idmap),
        "mounts": [{"source": str(m.source), "path": m.path, "readonly": m.readonly} for m in spec.mounts],
        "files": [{"path": p, "content": c, "mode": str(mode)} for p, c, mode in spec.files],
        "init": list(spec.init),
        "idmapped": bool(spec.idmap) and spec.idmapped,
        "cgroup2": spec.cgroup2,
    }
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    console: tuple[int, int] | None = None
    # Message boundaries kept: the console's master arrives with a message of its own.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with _subreaper(), Reverter() as undo, ours:
        try:
            try:
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            except OSError as e:
                raise HostError(f"start container {name}: open log {log_path}: {e.strerror}") from e
            try:
                pre = _spawn_preinit(name, state_dir, log, write_fd, theirs.fileno())
            finally:
                os.close(log)
                theirs.close()
            undo.add(_kill_child, pre)
            os.close(write_fd)
            write_fd = -1
            ours.sendall(json.dumps(config).encode() + b"\n")
            said = _recv_line(ours, _READY_TIMEOUT)
            if said != "userns":
                failure = (_read_ready(read_fd, 0.5) or said or "pre-init exited during setup").removeprefix(
                    "error: "
                )
                raise HostError(f"start container {name}: {failure} (log: {log_path})")
            if spec.idmap:
                idmap_host.write_proc_maps(pre.pid, spec.idmap)
            if prepare is not None:
                prepare(pre.pid)
            if spec.idmap and spec.idmapped:
                tree = idmap_host.idmapped_tree(spec.rootfs, pre.pid)
                try:
                    socket.send_fds(ours, [b"go\n"], [tree])
                finally:
                    os.close(tree)
            else:
                ours.sendall(b"go\n")
            said = _recv_line(ours, _READY_TIMEOUT)
            pid1 = int(said.removeprefix("pid ")) if said.startswith("pid ") else 0
            if pid1:
                undo.add(_kill_pid, pid1)
                _record_init(state_dir, pid1)
            console = _recv_console(ours, _READY_TIMEOUT) if pid1 else None
            if console is not None:
                undo.add(os.close, console[0])
                undo.add(os.close, console[1])
            # It exits once it passed the console on: pid 1 is now our child.
            try:
                pre.wait(_READY_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise HostError(
                    f"start container {name}: pre-init still running after {_READY_TIMEOUT:g}s"
                ) from None
            report = _read_ready(read_fd, _READY_TIMEOUT)
        finally:
            if write_fd >= 0:
                os.close(write_fd)
            os.close(read_fd)
        lines = (report or "").splitlines()
        if not pid1 or report is None or not lines or lines[-1] != "ready":
            reason = (lines[-1] if lines else "").removeprefix("error: ") or "init exited during setup"
            if report is None:
                reason = f"init not ready after {_READY_TIMEOUT:g}s"
            raise HostError(f"start container {name}: {reason} (log: {log_path})")
        started = process.start_time(pid1)
        if started is None:
            raise HostError(f"start container {name}: init exited right after setup (log: {log_path})")
        proc = ContainerProcess(pid1, started)
        netns.bind_netns(proc.pid, handle)
        undo.success()
    if console is not None:
        console_log.keep(pid1, *console, log_path)
    _start_waiter(proc, pid1)
    return proc


def init_record(state_dir: Path) -> Path:
    """Where a rootfs container's pid 1 is recorded the moment it exists: the image's init does not
    name the state directory on its command line, so a daemon killed mid-start finds it here."""
    return state_dir / "init.json"


def _record_init(state_dir: Path, pid: int) -> None:
    started = process.read_stat(pid)
    if started is not None:
        files.write_json(init_record(state_dir), {"pid": pid, "start_time": started.start_time})


def forget_recorded_init(state_dir: Path) -> None:
    files.remove(init_record(state_dir))


def kill_recorded_init(state_dir: Path) -> bool:
    """SIGKILL the recorded pid 1 if it still runs (an interrupted start); whether it did."""
    rec = files.read_json(init_record(state_dir))
    if not isinstance(rec, dict):
        return False
    proc = ContainerProcess(int(rec["pid"]), int(rec["start_time"]))
    killed = is_alive(proc)
    if killed:
        stop_container(proc, force=True)
    files.remove(init_record(state_dir))
    return killed


def stop_container(
    proc: ContainerProcess,
    timeout: float = 10.0,
    force: bool = False,
    state_dir: Path | None = None,
    halt_signal: int = signal.SIGTERM,
) -> None:
    """HALT_SIGNAL to init (SIGKILL after timeout; at once with force) and wait until it is gone.

    Init's exit means every process of the container is gone. With state_dir, the netns
    handle is released afterwards; without, it stays so NICs can be recovered from the
    netns (release it with netns.release_netns(netns_handle(state_dir))).
    """
    pidfd = process.open_pidfd(proc.pid, proc.start_time)
    if pidfd is not None:
        try:
            steps: list[tuple[int, float]] = [(signal.SIGKILL, _KILL_TIMEOUT)]
            if not force:
                steps.insert(0, (halt_signal, timeout))
            if not process.stop_and_wait(pidfd, steps):
                raise HostError(
                    f"stop container pid {proc.pid}: still running {_KILL_TIMEOUT:g}s after SIGKILL"
                )
        finally:
            os.close(pidfd)
    with _waiters_lock:
        waiter = _waiters.get(proc)
    if waiter is not None:
        waiter.join(_KILL_TIMEOUT)
    else:
        is_alive(proc)  # reaps it if it is our child without a waiter
    if state_dir is not None:
        netns.release_netns(netns_handle(state_dir))


def _same_namespace(pid: int, ns: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/{ns}").st_ino == os.stat(f"/proc/self/ns/{ns}").st_ino
    except OSError:
        return False


@contextmanager
def _namespace_fds(proc: ContainerProcess) -> Iterator[list[tuple[str, int]]]:
    """Open proc's namespaces, checked to belong to proc (not to a process reusing its pid)."""
    fds: list[tuple[str, int]] = []
    try:
        for ns, option in _NAMESPACES:
            if ns in _OPTIONAL_NAMESPACES and _same_namespace(proc.pid, ns):
                continue
            try:
                fds.append((option, os.open(f"/proc/{proc.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as e:
                raise HostError(f"exec in container pid {proc.pid}: open {ns} namespace: {e.strerror}") from e
        # Entering a mount namespace resets the root to that namespace's own "/", which is not
        # the container's root when pincusd itself runs chrooted: enter init's root too.
        try:
            fds.append(("root", os.open(f"/proc/{proc.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)))
        except OSError as e:
            raise HostError(f"exec in container pid {proc.pid}: open its root: {e.strerror}") from e
        if not is_alive(proc):
            raise HostError(f"exec in container pid {proc.pid}: container is not running")
        yield fds
    finally:
        for _, fd in fds:
            os.close(fd)


def _nsenter_argv(fds: list[tuple[str, int]], argv: list[str], cwd: str | None) -> list[str]:
    if not argv:
        raise InvalidError("exec in container: empty command")
    # nsenter opens every namespace file before entering any. Naming our fds through our
    # /proc entry (rather than passing them down) keeps them out of the command's fd table;
    # they must stay open until nsenter is done, so callers hold them until it exits.
    me = os.getpid()
    # --wdns resolves inside the container's root (unlike --wd), with no helper binary there
    # (a busybox image has no GNU env); "/" by default, as the caller's own directory need
    # not exist in there. Entering a user namespace, nsenter becomes its uid and gid 0.
    opts = [f"--{option}=/proc/{me}/fd/{fd}" for option, fd in fds]
    return ["nsenter", *opts, f"--wdns={cwd or '/'}", "--", *argv]


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def exec_in_container(
    proc: ContainerProcess,
    argv: list[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    stdin: int,
    stdout: int,
    stderr: int,
    tty: bool = False,
    started: Callable[[int], None] | None = None,
    cgroup_procs: Sequence[Path] = (),
) -> int:
    """Run a host binary in all of proc's namespaces with the given stdio; its exit status.

    A signal death is reported as 128 + signal number, like a shell. The environment is
    DEFAULT_ENV updated with env; cwd defaults to /. With TTY, stdin is a terminal that
    becomes the command's controlling terminal in a session of its own (job control, `tty`).
    STARTED gets the pid to hand to `signal_exec`. CGROUP_PROCS (cgroups.procs_files) are joined
    before exec, so the command and everything it forks count against the container's limits.
    """
    full_env = {**DEFAULT_ENV, **(env or {})}
    with _namespace_fds(proc) as fds:
        try:
            child = subprocess.Popen(
                _nsenter_argv(fds, argv, cwd),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env=full_env,
                preexec_fn=_preexec(tty, list(cgroup_procs)),
            )
        except OSError as e:
            raise HostError(f"exec {argv[0]} in container pid {proc.pid}: {e.strerror}") from e
        if started is not None:
            started(child.pid)
        return _exit_status(child.wait())


def _preexec(tty: bool, cgroup_procs: list[Path]) -> Callable[[], None] | None:
    if not tty and not cgroup_procs:
        return None

    def run() -> None:
        cgroups.join_self(cgroup_procs)
        if tty:
            _take_terminal()

    return run


def _take_terminal() -> None:
    """In the forked child: a new session whose controlling terminal is stdin."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def signal_exec(pid: int, sig: int) -> None:
    """Deliver SIG to the command an exec started (nsenter forks it into the pid namespace).

    nsenter does not pass signals on; its child does the work, and nsenter reports how the
    child ended, so the signal goes to the child.
    """
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return
    for child in children:
        with suppress(ProcessLookupError):
            os.kill(int(child), sig)


# openat2(2): resolve a path as if the directory fd were "/" (absolute links and ".." stay under
# it) and through no magic link, so a container's own links cannot point the daemon elsewhere.
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_PTMX_DEV = os.makedev(5, 2)
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _open_in_root(root: int, path: str, flags: int) -> int:
    how = _OpenHow(flags, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = int(_libc.syscall(_SYS_OPENAT2, root, path.encode(), ctypes.byref(how), ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def open_terminal(proc: ContainerProcess, width: int, height: int) -> tuple[int, int]:
    """(master, slave) of a new terminal of the container's own devpts, WIDTH x HEIGHT.

    A terminal of the host's devpts is no terminal in there: `tty` says "not a tty", as its
    /dev/pts has no such entry. So the pair comes from the container's /dev/pts/ptmx, opened
    within its root, checked to be a ptmx before it is used.
    """
    where = f"exec in container pid {proc.pid}: open a terminal"
    try:
        root = os.open(f"/proc/{proc.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise HostError(f"{where}: open its root: {e.strerror}") from e
    master = -1
    try:
        if not is_alive(proc):
            raise HostError(f"{where}: container is not running")
        # Non-blocking: a FIFO the container put there must not hang the daemon.
        flags = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
        master = _open_in_root(root, "/dev/pts/ptmx", flags)
        st = os.fstat(master)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != _PTMX_DEV:
            raise HostError(f"{where}: its /dev/pts/ptmx is not a pseudo-terminal multiplexer")
        os.set_blocking(master, True)
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if master >= 0:
            os.close(master)
        raise HostError(f"{where}: {e.strerror}") from e
    except BaseException:
        if master >= 0:
            os.close(master)
        raise
    finally:
        os.close(root)
    try:
        stdio.set_window_size(master, width, height)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave
