"""The dnsmasq process of one managed bridge: start, stop, reload, and finding it again.

dnsmasq is run in its ordinary daemon mode. Its launcher exits only once the daemon has bound its
sockets and written its pid file (or has failed, with the reason on stderr and in the exit
status), which gives ``start`` an exact "up or failed" signal without polling. The daemon runs in
its own session, reparented away from pincusd, so it outlives a daemon restart; the new pincusd
finds it with ``find_running(dir)``: the pid file, checked against the process's command line,
which names that pid file. A recycled pid therefore never matches.

dnsmasq drops root to ``DnsmasqConfig.user`` ("nobody") after start-up and reads hosts files as
that user, so every directory above ``dnsmasq.hosts`` must be searchable by it; ``start`` checks
this and names the directory that is not (a ``mkdtemp`` directory, mode 0700, is not).
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import pwd
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

from pincus.errors import HostError
from pincus.host import process
from pincus.host.dnsmasq_args import DnsmasqConfig, digest, fail, ipv6_interface, paths, render_args
from pincus.host.dnsmasq_hosts import make_dir

_START_TIMEOUT = 10.0
# DAD takes one probe interval (1 s) plus a random delay of up to 1 s; allow a margin.
_DAD_TIMEOUT = 5.0
_KILL_GRACE = 2.0
_STDERR_TAIL = 2000

_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
_NETNS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")


def running_config_digest(dir: Path) -> str | None:
    """config_digest of the dnsmasq running for dir (from its command line), None if none runs.

    Lets a restarted daemon decide whether the running dnsmasq matches the config without having
    stored anything itself.
    """
    found = _find(dir)
    return None if found is None else digest(found[1])


def _is_ours(pid: int, pid_file: Path) -> list[str] | None:
    """The argv of pid if it is the dnsmasq that writes pid_file; a zombie has no argv."""
    argv = process.cmdline(pid)
    if argv and os.path.basename(argv[0]) == "dnsmasq" and f"--pid-file={pid_file}" in argv[1:]:
        return argv
    return None


def _find(dir: Path) -> tuple[int, list[str]] | None:
    pid_file = paths(dir)[0]
    pid = process.read_pid_file(pid_file)
    if pid is None:
        return None
    argv = _is_ours(pid, pid_file)
    return None if argv is None else (pid, argv)


def find_running(dir: Path) -> int | None:
    """The pid of the dnsmasq serving dir, or None (no pid file, or its process is not ours)."""
    found = _find(dir)
    return None if found is None else found[0]


def _netns_path(netns: str | Path) -> str:
    text = str(netns)
    if "/" not in text:
        if not _NETNS_NAME.fullmatch(text):
            raise fail("network namespace name", text)
        text = f"/run/netns/{text}"
    if not os.path.exists(text):
        raise HostError(f"enter network namespace {text}: no such file")
    return text


def _in_netns(netns: str | Path | None, argv: list[str]) -> list[str]:
    return argv if netns is None else ["nsenter", f"--net={_netns_path(netns)}", "--", *argv]


def _unreachable_dir(path: Path, user: str) -> Path | None:
    """The first directory from / down to path (inclusive) that user cannot search, if any."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise HostError(f"start dnsmasq: user {user!r} does not exist") from None
    if pw.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user, pw.pw_gid))
    for part in [*reversed(path.parents), path]:
        st = os.stat(part)
        if st.st_uid == pw.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return part
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _tentative_ipv6(netns: str | Path | None, bridge: str, address: ipaddress.IPv6Address) -> str | None:
    """Why address on bridge is not usable yet ("tentative", "dadfailed"), or None if it is."""
    if netns is None:
        try:
            text = Path("/proc/net/if_inet6").read_text()
        except FileNotFoundError:
            return None  # IPv6 disabled: dnsmasq will say what it thinks of the address
    else:
        r = subprocess.run(
            _in_netns(netns, ["cat", "/proc/net/if_inet6"]), capture_output=True, text=True, check=False
        )
        text = r.stdout
    want = address.exploded.replace(":", "")
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[0] == want and fields[5] == bridge:
            flags = int(fields[4], 16)
            if flags & _IFA_F_DADFAILED:
                return "dadfailed"
            return "tentative" if flags & _IFA_F_TENTATIVE else None
    return None


def _wait_for_dad(cfg: DnsmasqConfig, netns: str | Path | None) -> None:
    """With --bind-interfaces dnsmasq silently skips an address still in duplicate address
    detection, and never binds it later; DNS on the bridge's IPv6 address needs it settled.
    (Adding the address with nodad avoids the wait.)"""
    if cfg.dns_mode == "none" or cfg.ipv6_address is None:
        return
    address = ipv6_interface(cfg.ipv6_address).ip
    deadline = time.monotonic() + _DAD_TIMEOUT
    while (state := _tentative_ipv6(netns, cfg.bridge, address)) is not None:
        if state == "dadfailed" or time.monotonic() > deadline:
            raise HostError(f"start dnsmasq on {cfg.bridge}: IPv6 address {address} is {state}")
        time.sleep(0.05)


def start(cfg: DnsmasqConfig, netns: str | Path | None = None, timeout: float = _START_TIMEOUT) -> int:
    """Start dnsmasq for cfg (inside netns, a name under /run/netns or a path) and return its pid.

    Returns once dnsmasq has bound its sockets and written its pid file. On failure raises
    HostError with dnsmasq's own message and leaves no process and no file it created behind.
    """
    argv = render_args(cfg)
    pid_file, lease_file, hosts_dir = paths(cfg.dir)
    running = find_running(cfg.dir)
    if running is not None:
        raise HostError(f"start dnsmasq on {cfg.bridge}: already running as pid {running}")
    created: list[Path] = []
    try:
        if not pid_file.parent.is_dir():
            make_dir(pid_file.parent)
            created.append(pid_file.parent)
        if make_dir(hosts_dir):
            created.append(hosts_dir)
        if not lease_file.exists():
            created.append(lease_file)
        blocked = _unreachable_dir(hosts_dir, cfg.user)
        if blocked is not None:
            st = os.stat(blocked)
            raise HostError(
                f"start dnsmasq on {cfg.bridge}: directory {blocked} (mode {stat.S_IMODE(st.st_mode):o}, "
                f"group {_group_name(st.st_gid)}) is not searchable by user {cfg.user}, "
                f"so dnsmasq could not read {hosts_dir}"
            )
        pid_file.unlink(missing_ok=True)  # stale: its process is gone or not ours
        _wait_for_dad(cfg, netns)
        _launch(_in_netns(netns, argv), cfg.bridge, pid_file, timeout)
        pid = find_running(cfg.dir)
        if pid is None:
            raise HostError(f"start dnsmasq on {cfg.bridge}: it exited right after starting")
        created.clear()
        return pid
    except BaseException:
        _kill_from_pid_file(pid_file)
        for path in reversed(created):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()  # only if still empty
                elif path.stat().st_size == 0:
                    path.unlink()
        raise


def _launch(argv: list[str], bridge: str, pid_file: Path, timeout: float) -> None:
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as e:
        raise HostError(f"start dnsmasq on {bridge}: {e.strerror}") from e
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise HostError(f"start dnsmasq on {bridge}: not up after {timeout:g} s") from None
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip()[-_STDERR_TAIL:] or f"exit status {proc.returncode}"
        raise HostError(f"start dnsmasq on {bridge}: {reason}")


def _open_if_ours(pid: int, pid_file: Path) -> int | None:
    return process.open_pidfd_if(pid, lambda p: _is_ours(p, pid_file) is not None)


def _stop_pid(pid: int, pid_file: Path, steps: list[tuple[int, float]]) -> bool:
    """Signal the dnsmasq of pid_file through a pidfd until it has exited; False if it outlived STEPS."""
    fd = _open_if_ours(pid, pid_file)
    if fd is None:
        return True
    try:
        gone = process.stop_and_wait(fd, steps)
    finally:
        os.close(fd)
    # dnsmasq is normally init's child; reap it in case pincusd is its (sub)reaper.
    process.reap(pid)
    return gone


def _kill_from_pid_file(pid_file: Path) -> None:
    pid = process.read_pid_file(pid_file)
    if pid is not None:
        _stop_pid(pid, pid_file, [(signal.SIGKILL, _KILL_GRACE)])
    pid_file.unlink(missing_ok=True)


def stop(dir: Path, timeout: float = 5) -> None:
    """SIGTERM the dnsmasq of dir, SIGKILL it after timeout; remove the pid file. None running = fine."""
    pid_file = paths(dir)[0]
    pid = find_running(dir)
    if pid is not None and not _stop_pid(
        pid, pid_file, [(signal.SIGTERM, timeout), (signal.SIGKILL, _KILL_GRACE)]
    ):
        raise HostError(f"stop dnsmasq {pid} of {dir}: still running after SIGKILL")
    # dnsmasq, no longer root, cannot remove its pid file itself.
    try:
        pid_file.unlink(missing_ok=True)
    except OSError as e:
        raise HostError(f"stop dnsmasq of {dir}: remove {pid_file}: {e.strerror}") from e


def reload(dir: Path) -> None:
    """SIGHUP: dnsmasq rereads the hosts dir, forgetting removed and replaced entries.

    Returns once the signal is sent; dnsmasq handles it within milliseconds.
    """
    pid_file = paths(dir)[0]
    pid = process.read_pid_file(pid_file)
    fd = None if pid is None else _open_if_ours(pid, pid_file)
    if fd is None:
        raise HostError(f"reload dnsmasq of {dir}: not running")
    try:
        signal.pidfd_send_signal(fd, signal.SIGHUP)
    except ProcessLookupError:
        raise HostError(f"reload dnsmasq of {dir}: pid {pid} exited") from None
    finally:
        os.close(fd)
