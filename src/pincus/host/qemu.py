"""QEMU processes and their QMP monitor: start, watch, hot-plug TAP NICs, stop.

One function per QEMU or QMP operation; which NICs a VM has, and when to start or stop it, is
decided above this layer. A QEMU process is identified by pid *and* start time so a recycled pid
is never mistaken for (or signalled as) the VM.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pincus.errors import HostError
from pincus.host import process
from pincus.host.console_log import LOG_NAME
from pincus.host.qmp import QMP, QMP_TIMEOUT

CONSOLE_LOG = LOG_NAME  # the serial console: the file a container's console goes to

QEMU_BINARY = "qemu-system-x86_64"
QMP_SOCKET = "qmp.sock"
QEMU_LOG = "qemu.log"
PID_FILE = "qemu.pid"

_LOG_TAIL_BYTES = 2000
# After `quit` (or SIGKILL) QEMU only has to tear down; this bounds how long that may take.
_EXIT_GRACE = 5.0


@dataclass(frozen=True)
class TapNic:
    id: str  # QEMU netdev id; the guest device is named device_id(id)
    ifname: str  # an existing TAP on the host, already enslaved and up
    mac: str
    bootindex: int | None = None


@dataclass(frozen=True)
class QemuProcess:
    pid: int
    start_time: int  # field 22 of /proc/<pid>/stat, clock ticks since boot
    qmp_path: Path


@functools.cache
def version() -> str:
    """QEMU's version ("7.2.15"), read once; "" when QEMU is missing or says nothing we know."""
    binary = shutil.which(QEMU_BINARY)
    if binary is None:
        return ""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    words = out.split()
    return words[words.index("version") + 1] if "version" in words[:-1] else ""


def device_id(nic_id: str) -> str:
    """QEMU device id of the virtio-net device that carries netdev `nic_id`."""
    return f"dev-{nic_id}"


# --- accelerator --------------------------------------------------------------------------


def choose_accelerator() -> str:
    """Return "kvm" only where hardware KVM really works, else "tcg".

    A PVM /dev/kvm (software KVM for specially built guests) opens fine but hangs a stock
    kernel, so the device alone is not enough: the CPU must advertise vmx/svm and the kvm_pvm
    module must be absent.
    """
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return "tcg"
    os.close(fd)
    if Path("/sys/module/kvm_pvm").exists():
        return "tcg"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "tcg"
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = line.partition(":")[2].split()
            if "vmx" in flags or "svm" in flags:
                return "kvm"
    return "tcg"


# --- process identity -------------------------------------------------------------------------


def is_alive(proc: QemuProcess) -> bool:
    return process.is_alive(proc.pid, proc.start_time)


# --- start ------------------------------------------------------------------------------------


def _opt(value: str | Path) -> str:
    """A value inside a QEMU option string: a comma is written twice, or it starts a new key."""
    return str(value).replace(",", ",,")


def _nic_args(nic: TapNic) -> list[str]:
    device = f"virtio-net-pci,netdev={_opt(nic.id)},id={_opt(device_id(nic.id))},mac={_opt(nic.mac)},romfile="
    if nic.bootindex is not None:
        device += f",bootindex={nic.bootindex}"
    return [
        "-netdev", f"tap,id={_opt(nic.id)},ifname={_opt(nic.ifname)},script=no,downscript=no",
        "-device", device,
    ]  # fmt: skip


def qemu_command(
    name: str,
    state_dir: Path,
    nics: list[TapNic],
    raw_args: list[str],
    memory_mb: int,
    accel: str,
) -> list[str]:
    """The full command line start_qemu runs (exposed so callers can log or show it)."""
    argv = [
        QEMU_BINARY,
        "-name", _opt(name),
        "-accel", _opt(accel),
        "-m", str(memory_mb),
        # No implicit devices: above all no default user-mode NIC, which would give the guest
        # a network pincus does not manage. Serial and monitor are set explicitly below.
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-monitor", "none",
        # Full -chardev syntax rather than "file:"/"unix:" shorthands, whose paths are parsed
        # differently from one another: here every value is escaped the same way.
        "-chardev", f"file,id=pincus-console,path={_opt(state_dir / CONSOLE_LOG)}",
        "-serial", "chardev:pincus-console",
        "-chardev", f"socket,id=pincus-qmp,path={_opt(state_dir / QMP_SOCKET)},server=on,wait=off",
        "-mon", "chardev=pincus-qmp,mode=control",
        # A guest reboot ends the process like a poweroff does; restarting is the caller's call.
        "-no-reboot",
        "-pidfile", str(state_dir / PID_FILE),
    ]  # fmt: skip
    for nic in nics:
        argv += _nic_args(nic)
    return argv + raw_args


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def start_qemu(
    name: str,
    state_dir: Path,
    nics: list[TapNic],
    raw_args: list[str],
    memory_mb: int = 256,
    accel: str | None = None,
    ready_timeout: float = 15.0,
) -> QemuProcess:
    """Start QEMU in its own session (it outlives the daemon) and wait until QMP answers.

    The serial console goes to <state_dir>/console.log, QEMU's own output to qemu.log and QMP
    listens on qmp.sock. TAPs in `nics` must exist already. If QMP does not answer within
    `ready_timeout` seconds, or QEMU exits first, QEMU is killed, its files are removed and
    HostError carries the end of QEMU's output.
    """
    binary = shutil.which(QEMU_BINARY)
    if binary is None:
        raise HostError(f"start VM {name}: {QEMU_BINARY} not found")
    accel = accel or choose_accelerator()
    state_dir = Path(state_dir)
    made_dir = not state_dir.exists()
    state_dir.mkdir(parents=True, exist_ok=True)
    qmp_path = state_dir / QMP_SOCKET
    created = [qmp_path, state_dir / CONSOLE_LOG, state_dir / QEMU_LOG, state_dir / PID_FILE]
    if _listening(qmp_path):
        raise HostError(f"start VM {name}: {qmp_path} belongs to a running QEMU")
    qmp_path.unlink(missing_ok=True)  # a stale socket from a VM that died

    argv = qemu_command(name, state_dir, nics, raw_args, memory_mb, accel)
    log_fd = os.open(state_dir / QEMU_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        # posix_spawn rather than Popen: no Popen object whose finaliser would complain about a
        # child that is meant to outlive it; setsid keeps QEMU out of the daemon's session.
        pid = os.posix_spawn(
            binary,
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    except OSError as e:
        raise HostError(f"start VM {name}: {e}") from e
    finally:
        os.close(log_fd)

    stat = process.read_stat(pid)  # our unreaped child: the pid cannot have been reused yet
    proc = QemuProcess(pid=pid, start_time=stat.start_time if stat else 0, qmp_path=qmp_path)
    error = _wait_ready(proc, ready_timeout)
    if error is None:
        return proc

    process.kill(proc.pid, proc.start_time)
    process.wait_gone(proc.pid, proc.start_time, _EXIT_GRACE)
    tail = _tail(state_dir / QEMU_LOG) or _tail(state_dir / CONSOLE_LOG)
    for path in created:
        path.unlink(missing_ok=True)
    if made_dir:
        with contextlib.suppress(OSError):
            state_dir.rmdir()
    raise HostError(f"start VM {name}: {error}" + (f": {tail}" if tail else ""))


def _listening(path: Path) -> bool:
    """Whether something accepts connections on this unix socket (no QMP traffic is sent)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _wait_ready(proc: QemuProcess, timeout: float) -> str | None:
    """None once QMP negotiated capabilities, else why not."""
    deadline = time.monotonic() + timeout
    last = "QMP socket not created"
    while True:
        if not is_alive(proc):
            return "QEMU exited during start-up"
        left = deadline - time.monotonic()
        if left <= 0:
            return f"QMP did not answer within {timeout:g}s ({last})"
        if proc.qmp_path.exists():
            try:
                with QMP(proc.qmp_path, timeout=min(left, 2.0)):
                    return None
            except HostError as e:
                last = str(e)
        time.sleep(min(0.02, max(0.0, left)))


# --- hot-plug -------------------------------------------------------------------------------


def add_tap_nic(qmp_path: Path, nic: TapNic, timeout: float = QMP_TIMEOUT) -> None:
    """Hot-plug a virtio-net device on an existing TAP; the netdev is removed if the device
    cannot be added."""
    with QMP(qmp_path, timeout) as qmp:
        qmp.execute(
            "netdev_add", type="tap", id=nic.id, ifname=nic.ifname,
            script="no", downscript="no",
        )  # fmt: skip
        props: dict[str, Any] = {
            "driver": "virtio-net-pci",
            "netdev": nic.id,
            "id": device_id(nic.id),
            "mac": nic.mac,
            "romfile": "",
        }
        if nic.bootindex is not None:
            props["bootindex"] = nic.bootindex
        try:
            qmp.execute("device_add", **props)
        except HostError:
            with contextlib.suppress(HostError):
                qmp.execute("netdev_del", id=nic.id)
            raise


def remove_nic(qmp_path: Path, nic_id: str, timeout: float = 10.0) -> bool:
    """Unplug a NIC added by start_qemu or add_tap_nic and release its TAP.

    On the `pc` machine an unplug completes only when the guest OS acknowledges it (ACPI
    eject). A guest that does not answer within `timeout` (paused, still booting, no ACPI
    hotplug driver) keeps the device, but the netdev is deleted regardless so the TAP is
    released and the NIC carries no traffic. Returns True when the device is gone, False when
    the guest has not let go of it yet (it is then removed whenever the guest acknowledges;
    until then its device id stays taken).
    """
    dev = device_id(nic_id)
    with QMP(qmp_path) as qmp:
        released = True
        pending = True
        try:
            qmp.execute("device_del", id=dev)
        except HostError as e:
            # A retry: the device is gone already, or an earlier unplug is still waiting for
            # the guest (QMP reports both only as GenericError, hence the text match).
            if "not found" in str(e):
                pending = False
            elif "process of unplug" not in str(e):
                raise
        if pending:
            try:
                qmp.wait_event("DEVICE_DELETED", timeout, {"device": dev})
            except HostError:
                released = False
        try:
            qmp.execute("netdev_del", id=nic_id)
        except HostError as e:
            if "not found" not in str(e):
                raise
        return released


def nic_bootindexes(qmp_path: Path, timeout: float = QMP_TIMEOUT) -> dict[str, int]:
    """QEMU device id -> bootindex of every virtio-net device (-1: not in the boot order)."""
    out: dict[str, int] = {}
    with QMP(qmp_path, timeout) as qmp:
        for child in qmp.execute("qom-list", path="/machine/peripheral"):
            if child.get("type") == "child<virtio-net-pci>":
                path = f"/machine/peripheral/{child['name']}"
                out[child["name"]] = int(qmp.execute("qom-get", path=path, property="bootindex"))
    return out


# --- stop -----------------------------------------------------------------------------------


def powerdown(qmp_path: Path, timeout: float = QMP_TIMEOUT) -> None:
    """Ask the guest to power off (ACPI power button); it may ignore the request."""
    with QMP(qmp_path, timeout) as qmp:
        qmp.execute("system_powerdown")


def _status(qmp_path: Path, timeout: float = QMP_TIMEOUT) -> str:
    with QMP(qmp_path, timeout) as qmp:
        return str(qmp.execute("query-status").get("status", ""))


def quit(qmp_path: Path, timeout: float = QMP_TIMEOUT) -> None:
    """Tell QEMU to exit now. QEMU may drop the connection before answering: that is success."""
    with QMP(qmp_path, timeout) as qmp:
        try:
            qmp.execute("quit")
        except HostError as e:
            if not isinstance(e.__cause__, ConnectionError):
                raise


def stop_qemu(proc: QemuProcess, timeout: float, force: bool = False) -> None:
    """Stop QEMU and return once the process is gone (reaped when it is our child).

    Graceful: ACPI power-down and up to `timeout` seconds for the guest to power off (skipped
    when the guest is paused), then `quit`, then SIGKILL. Forced: `quit`, then SIGKILL.
    A QMP error only moves on to the next step.
    """
    if not is_alive(proc):
        # It may be exiting still: wait for the last thread.
        process.wait_gone(proc.pid, proc.start_time, _EXIT_GRACE)
        return
    if not force:
        with contextlib.suppress(HostError):
            # A paused guest (-S, or stopped via QMP) cannot see the power button: no point
            # waiting for it.
            if _status(proc.qmp_path) == "running":
                powerdown(proc.qmp_path)
                if process.wait_gone(proc.pid, proc.start_time, timeout):
                    return
    with contextlib.suppress(HostError):
        quit(proc.qmp_path)
        if process.wait_gone(proc.pid, proc.start_time, _EXIT_GRACE):
            return
    process.kill(proc.pid, proc.start_time)
    if not process.wait_gone(proc.pid, proc.start_time, _EXIT_GRACE):
        raise HostError(f"stop QEMU pid {proc.pid}: still running after SIGKILL")
