"""The Open vSwitch and OVN daemons of one pincusd: start, stop, find again, restart the dead.

Two groups, each under its own directory of $PINCUS_DIR/ovn: the embedded central (the NB and SB
ovsdb-servers and ovn-northd) and the local chassis (an ovsdb-server for the switch database,
ovs-vswitchd and ovn-controller). Every daemon gets its own pid file, log file and control socket
in that directory (OVS_RUNDIR/OVN_RUNDIR point there too, since ovn-controller 23.03 refuses
`--unixctl`), so daemons of two pincusds never meet. They run in OVS's ordinary `--detach` mode:
the launcher exits once the daemon is up (or with the reason it is not), and the daemon, in its
own session, outlives a pincusd restart; a restarted pincusd finds it by its pid file, checked
against the command line that names that pid file, as dnsmasq is found.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pincus.errors import HostError
from pincus.host import process
from pincus.host.ovs_layout import DaemonSpec

_START_TIMEOUT = 15.0
_STOP_GRACE = 3.0
_STDERR_TAIL = 1500
_DATAPATH_TYPES = ("system", "netdev")
_EXTERNAL_ID_VALUE = re.compile(r"[A-Za-z0-9_.:,/=\-]{0,200}")


# --- finding a daemon again ------------------------------------------------------------------------


def _is_ours(pid: int, spec: DaemonSpec) -> bool:
    argv = process.cmdline(pid)
    return bool(argv) and f"--pidfile={spec.pid_file}" in argv[1:] and not process.exited(pid)


def find_running(spec: DaemonSpec) -> int | None:
    """The pid of SPEC's daemon if it runs (its pid file names a process started with that file)."""
    pid = process.read_pid_file(spec.pid_file)
    return pid if pid is not None and _is_ours(pid, spec) else None


def running(specs: Sequence[DaemonSpec]) -> dict[str, int | None]:
    return {spec.name: find_running(spec) for spec in specs}


# --- start and stop --------------------------------------------------------------------------------


def _run(
    argv: list[str], what: str, env: dict[str, str] | None = None, timeout: float = _START_TIMEOUT
) -> str:
    try:
        r = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HostError(f"{what}: no answer after {timeout:g} s") from None
    except OSError as e:
        raise HostError(f"{what}: {e.strerror} (is Open vSwitch/OVN installed? scripts/setup.sh)") from e
    if r.returncode != 0:
        reason = (r.stderr.strip() or r.stdout.strip())[-_STDERR_TAIL:] or f"exit status {r.returncode}"
        raise HostError(f"{what}: {reason}")
    return r.stdout


def start(spec: DaemonSpec) -> int:
    """Start SPEC's daemon (creating its database the first time); its pid. Already running: its pid.

    Returns once the daemon has detached, which OVS daemons do only when they are up.
    """
    pid = find_running(spec)
    if pid is not None:
        return pid
    spec.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    if spec.db is not None and spec.schema is not None and not spec.db.exists():
        _run(["ovsdb-tool", "create", str(spec.db), str(spec.schema)], f"create OVS database {spec.db}")
    spec.pid_file.unlink(missing_ok=True)  # stale: its process is gone or not ours
    _run(spec.argv(), f"start {spec.program} ({spec.name}) in {spec.dir}", spec.env)
    pid = find_running(spec)
    if pid is None:
        raise HostError(
            f"start {spec.program} ({spec.name}): it exited right after starting; see {spec.log_file}"
        )
    return pid


def start_all(specs: Sequence[DaemonSpec]) -> None:
    """Start every daemon of SPECS in order; on failure stop those this call started."""
    started: list[DaemonSpec] = []
    try:
        for spec in specs:
            if find_running(spec) is None:
                start(spec)
                started.append(spec)
    except BaseException:
        for spec in reversed(started):
            stop(spec)
        raise


def stop(spec: DaemonSpec, timeout: float = _STOP_GRACE) -> None:
    """SIGTERM SPEC's daemon (SIGKILL after TIMEOUT) and remove its pid file. None running = fine."""
    pid = process.read_pid_file(spec.pid_file)
    if pid is not None:
        fd = process.open_pidfd_if(pid, lambda p: _is_ours(p, spec))
        if fd is not None:
            steps: list[tuple[int, float]] = [(signal.SIGTERM, timeout), (signal.SIGKILL, _STOP_GRACE)]
            if _ask_to_exit(spec, pid):
                steps.insert(0, (0, timeout))  # signal 0: only wait for the exit it was asked for
            try:
                gone = process.stop_and_wait(fd, steps)
            finally:
                os.close(fd)
            process.reap(pid)
            if not gone:
                raise HostError(f"stop {spec.program} ({spec.name}) pid {pid}: still running after SIGKILL")
    spec.pid_file.unlink(missing_ok=True)
    spec.ctl.unlink(missing_ok=True)


def _ask_to_exit(spec: DaemonSpec, pid: int) -> bool:
    """Ask ovn-controller and ovs-vswitchd to exit for good, which a plain SIGTERM (a restart, to
    them) does not: ovn-controller then removes its chassis from the southbound database, and
    ovs-vswitchd its datapath with its interfaces (the userspace datapath's `ovs-netdev` tap)."""
    if spec.program == "ovn-controller":
        argv = ["ovn-appctl", "-t", str(spec.dir / f"ovn-controller.{pid}.ctl"), "exit"]
    elif spec.program == "ovs-vswitchd":
        argv = ["ovs-appctl", "-t", str(spec.ctl), "exit", "--cleanup"]
    else:
        return False
    if not Path(argv[2]).exists():
        return False
    try:
        r = subprocess.run(argv, capture_output=True, timeout=_STOP_GRACE + 2, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def stop_all(specs: Sequence[DaemonSpec]) -> None:
    for spec in reversed(specs):
        stop(spec)


def restart_dead(specs: Sequence[DaemonSpec]) -> list[str]:
    """Supervision: start again each daemon of SPECS that is not running; the names restarted."""
    restarted = []
    for spec in specs:
        if find_running(spec) is None:
            start(spec)
            restarted.append(spec.name)
    return restarted


# --- the chassis's identity ------------------------------------------------------------------------


def openvswitch_module_present() -> bool:
    """Whether the kernel datapath can be used: the openvswitch module is loaded or loadable."""
    if Path("/sys/module/openvswitch").exists():
        return True
    modules = Path("/lib/modules") / os.uname().release
    try:
        with open(modules / "modules.dep") as f:
            return any("/openvswitch.ko" in line.split(":", 1)[0] for line in f)
    except OSError:
        return False


def datapath_type(override: str | None) -> str:
    """OVERRIDE when given ("system" or "netdev"), else "system" with the kernel module, "netdev"
    (OVS's userspace datapath) without it."""
    if override:
        if override not in _DATAPATH_TYPES:
            raise HostError(
                f'Invalid OVS datapath type "{override}" (use one of: {", ".join(_DATAPATH_TYPES)})'
            )
        return override
    return "system" if openvswitch_module_present() else "netdev"


def check_external_id(value: str) -> str:
    if not _EXTERNAL_ID_VALUE.fullmatch(value):
        raise HostError(f"refusing OVS external id value {value!r}")
    return value
