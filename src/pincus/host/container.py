"""Containers: an init in new net, uts, ipc, mount and pid namespaces, and exec into them.

The container's init (``container_init.py``) is a direct child of the calling process, so
the caller can reap it: one waiter thread per container does that as soon as it exits. It
runs in its own session, so it outlives the caller; a later process finds it again by pid
and start time (``ContainerProcess``), which is safe against pid reuse.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import signal
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
from pincus.host import cgroups, netns, process
from pincus.reverter import Reverter

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# As Incus sets them for exec (root inside the container).
DEFAULT_ENV = {"PATH": DEFAULT_PATH, "HOME": "/root", "USER": "root", "LANG": "C.UTF-8"}

_CLONE_NEWPID = 0x20000000
_INIT_SCRIPT = Path(__file__).with_name("container_init.py")
_READY_TIMEOUT = 10.0
# After SIGKILL the kernel still has to kill every process of the pid namespace.
_KILL_TIMEOUT = 10.0
_HOSTNAME_MAX = 64
# Namespace files under /proc/<pid>/ns and the nsenter option for each; nsenter enters
# them in its own fixed order (mount last).
_NAMESPACES = (("net", "net"), ("uts", "uts"), ("ipc", "ipc"), ("mnt", "mount"), ("pid", "pid"))

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


@dataclass(frozen=True)
class ContainerProcess:
    pid: int
    start_time: int  # field 22 of /proc/<pid>/stat, in clock ticks since boot


# Waiter threads of the inits this process started, so stop can wait for the reaping.
_waiters: dict[ContainerProcess, threading.Thread] = {}
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


def _popen_in_new_pid_ns(argv: list[str], log: int, ready_fd: int) -> subprocess.Popen[bytes]:
    """Start argv as pid 1 of a new pid namespace, as a direct child of this process.

    unshare(CLONE_NEWPID) changes only where this thread's next children go, so it is safe
    in a threaded daemon; the thread is put back into its own namespace right after.
    """
    own = os.open("/proc/thread-self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.unshare(_CLONE_NEWPID) != 0:
            raise HostError(f"unshare pid namespace: {os.strerror(ctypes.get_errno())}")
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(ready_fd,),
                cwd="/",
                env=dict(DEFAULT_ENV),
                start_new_session=True,
            )
        except OSError as e:
            raise HostError(f"start {argv[0]}: {e.strerror}") from e
        finally:
            if _libc.setns(own, _CLONE_NEWPID) != 0:
                raise HostError(f"return to own pid namespace: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(own)


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


def _start_waiter(proc: ContainerProcess, popen: subprocess.Popen[bytes]) -> None:
    def wait() -> None:
        popen.wait()
        with _waiters_lock:
            _waiters.pop(proc, None)

    thread = threading.Thread(target=wait, name=f"reap-init-{proc.pid}", daemon=True)
    with _waiters_lock:
        _waiters[proc] = thread
    thread.start()


def spawn_container(name: str, hostname: str, state_dir: Path, log_path: Path) -> ContainerProcess:
    """Start a container's init, wait until it is ready and bind its netns at netns_handle().

    Ready means: in its own namespaces, fresh /proc and /sys mounted, hostname set, lo up.
    On failure nothing is left behind.
    """
    _check_names(name, hostname)
    handle = netns_handle(state_dir)
    if not state_dir.is_dir():
        raise HostError(f"start container {name}: state directory {state_dir} does not exist")
    if netns.netns_is_bound(handle):
        raise HostError(f"start container {name}: {handle} is still bound to a netns")
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    with Reverter() as undo:
        try:
            try:
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            except OSError as e:
                raise HostError(f"start container {name}: open log {log_path}: {e.strerror}") from e
            try:
                argv = [
                    sys.executable,
                    "-I",
                    "-S",
                    str(_INIT_SCRIPT),
                    "--name",
                    name,
                    "--hostname",
                    hostname,
                    # Ties the process to its daemon's state: recognisably whose it is.
                    "--state-dir",
                    str(state_dir),
                    "--ready-fd",
                    str(write_fd),
                ]
                popen = _popen_in_new_pid_ns(argv, log, write_fd)
            finally:
                os.close(log)
            undo.add(_kill_child, popen)
            os.close(write_fd)
            write_fd = -1
            report = _read_ready(read_fd, _READY_TIMEOUT)
        finally:
            if write_fd >= 0:
                os.close(write_fd)
            os.close(read_fd)
        if report is None:
            raise HostError(
                f"start container {name}: init not ready after {_READY_TIMEOUT:g}s (log: {log_path})"
            )
        if report != "ready":
            reason = report.removeprefix("error: ") or "init exited during setup"
            raise HostError(f"start container {name}: {reason} (log: {log_path})")
        # Our unreaped child: its pid cannot be reused before we read its start time.
        started = process.start_time(popen.pid)
        if started is None:
            raise HostError(f"start container {name}: init exited right after setup")
        proc = ContainerProcess(popen.pid, started)
        netns.bind_netns(proc.pid, handle)
        undo.success()
    _start_waiter(proc, popen)
    return proc


def stop_container(
    proc: ContainerProcess, timeout: float = 10.0, force: bool = False, state_dir: Path | None = None
) -> None:
    """SIGTERM init (SIGKILL after timeout; at once with force) and wait until it is gone.

    Init's exit means every process of the container is gone. With state_dir, the netns
    handle is released afterwards; without, it stays so NICs can be recovered from the
    netns (release it with netns.release_netns(netns_handle(state_dir))).
    """
    pidfd = process.open_pidfd(proc.pid, proc.start_time)
    if pidfd is not None:
        try:
            steps = [(signal.SIGKILL, _KILL_TIMEOUT)]
            if not force:
                steps.insert(0, (signal.SIGTERM, timeout))
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


@contextmanager
def _namespace_fds(proc: ContainerProcess) -> Iterator[list[tuple[str, int]]]:
    """Open proc's namespaces, checked to belong to proc (not to a process reusing its pid)."""
    fds: list[tuple[str, int]] = []
    try:
        for ns, option in _NAMESPACES:
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
    cmd = ["nsenter", *(f"--{option}=/proc/{me}/fd/{fd}" for option, fd in fds), "--"]
    # Resolved inside the container's root, unlike nsenter --wd; "/" by default, since the
    # caller's own directory need not exist in there.
    return [*cmd, "env", f"--chdir={cwd or '/'}", "--", *argv]


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
