"""dnsmasq, one per managed bridge: its argv, its process, static allocations and leases.

Files live in a per-network directory the caller chooses (``dir``):

- ``dnsmasq.pid``: written by dnsmasq; with ``/proc/<pid>/cmdline`` it identifies the process.
- ``dnsmasq.leases``: dnsmasq's lease database (``read_leases``).
- ``dnsmasq.hosts/``: ``--dhcp-hostsdir``, one file per NIC named after its ``nic_id``, so adding
  or removing one NIC touches one small file whatever the number of NICs.

Process model: dnsmasq is run in its ordinary daemon mode. Its launcher exits only once the
daemon has bound its sockets and written its pid file (or has failed, with the reason on stderr
and in the exit status), which gives ``start`` an exact "up or failed" signal without polling. The
daemon runs in its own session, reparented away from pincusd, so it outlives a daemon restart;
the new pincusd finds it with ``find_running(dir)``: the pid file, checked against the process's
command line, which names that pid file. A recycled pid therefore never matches.

dnsmasq drops root to ``DnsmasqConfig.user`` ("nobody") after start-up and reads hosts files as
that user, so every directory above ``dnsmasq.hosts`` must be searchable by it; ``start`` checks
this and names the directory that is not (a ``mkdtemp`` directory, mode 0700, is not).

Static allocations and dnsmasq (2.90, verified by tests/host/test_dnsmasq.py):

- A *new* file in ``dnsmasq.hosts`` is read by dnsmasq on its own (inotify, within milliseconds).
  Files are written as a dotfile and renamed into place; dnsmasq ignores dotfiles, so it never sees
  a half-written entry.
- A *removed* file stays in force until SIGHUP (``reload``).
- A *changed* file is read again, but the old entry also stays in force until SIGHUP, and a new
  entry whose IPv4 address an old one still holds is rejected as a duplicate ("duplicate dhcp-host
  IP address" in dnsmasq's log): a changed host name with the same address, or a move back to an
  earlier address, does not take effect. So after replacing an existing entry with different
  content the caller must ``reload``; ``write_static_allocation`` says when (it returns True).

Defence in depth: every value that reaches an argv or a hosts file is validated here again
(``InvalidError``), whatever the config layer already checked.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import ipaddress
import logging
import os
import pwd
import re
import secrets
import signal
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pincus.errors import HostError, InvalidError
from pincus.host import checks

log = logging.getLogger(__name__)

DNSMASQ_BINARY = "/usr/sbin/dnsmasq"
PID_FILE = "dnsmasq.pid"
LEASE_FILE = "dnsmasq.leases"
HOSTS_DIR = "dnsmasq.hosts"

DNS_MODES = ("none", "managed", "dynamic")

_START_TIMEOUT = 10.0
# DAD takes one probe interval (1 s) plus a random delay of up to 1 s; allow a margin.
_DAD_TIMEOUT = 5.0
_KILL_GRACE = 2.0
_POLL = 0.01
_STDERR_TAIL = 2000

_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40


@dataclass(frozen=True)
class DnsmasqConfig:
    bridge: str
    dir: Path
    ipv4_address: str | None = None  # the bridge's address, "10.250.1.1/24"; None = no IPv4
    ipv4_dhcp: bool = True
    ipv4_ranges: Sequence[tuple[str, str]] = ()  # empty = the whole subnet minus the bridge address
    ipv4_gateway: str | None = None  # DHCP option router; None = the bridge address
    ipv4_expiry: str = "1h"
    ipv6_address: str | None = None  # "fd42:250:1::1/64"; None = no IPv6
    ipv6_dhcp: bool = True
    ipv6_stateful: bool = False
    ipv6_ranges: Sequence[tuple[str, str]] = ()  # stateful only; empty = the whole subnet minus the bridge
    ipv6_ra: bool = True
    ipv6_expiry: str = "1h"
    dns_domain: str | None = None
    dns_mode: str = "none"  # "none": no DNS server at all; "managed"/"dynamic": DNS on the bridge
    user: str = "nobody"  # dnsmasq drops root to this user after start-up
    log_file: Path | None = None  # None = syslog (dnsmasq's default)


@dataclass(frozen=True)
class StaticAllocation:
    nic_id: str
    mac: str
    ipv4: str | None
    ipv6: str | None
    hostname: str | None


@dataclass(frozen=True)
class Lease:
    expiry: int  # unix time; 0 = infinite
    mac: str  # "" for an IPv6 lease whose client DUID does not carry a MAC
    address: str
    hostname: str  # "" when the client sent none
    client_id: str  # DHCPv4 client id or DHCPv6 client DUID, colon hex; "" when absent
    iaid: int | None = None  # IPv6 leases only


# --- validation ---------------------------------------------------------------------------

_NIC_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# dnsmasq reads a bare "<digits>[smhdw]" in a dhcp-host line as a lease time, not a host name.
_LEASE_TIME_LIKE = re.compile(r"[0-9]+[smhdw]?", re.IGNORECASE)
_DHCP_HOST_KEYWORDS = frozenset({"infinite", "ignore"})
_EXPIRY = re.compile(r"[0-9]{1,10}[smhdw]?|infinite")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_NETNS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")


def _fail(what: str, value: object) -> InvalidError:
    return InvalidError(f"Invalid {what} for dnsmasq: {value!r}")


def _check_path(path: Path, what: str = "directory") -> str:
    text = str(path)
    if not path.is_absolute() or any(ch in ", " or not ch.isprintable() for ch in text):
        # dnsmasq chdirs to / once it is a daemon, and splits some option values at commas.
        raise _fail(f"{what} (must be absolute, without commas, spaces or control characters)", text)
    return os.path.normpath(text)


def _check_nic_id(nic_id: str) -> str:
    # A leading dot would make dnsmasq ignore the file; the charset keeps it one path component.
    if not _NIC_ID.fullmatch(nic_id):
        raise _fail("NIC id (expected [A-Za-z0-9._-]+, not starting with a dot)", nic_id)
    return nic_id


def _check_hostname(name: str) -> str:
    if not _LABEL.fullmatch(name) or _LEASE_TIME_LIKE.fullmatch(name) or name.lower() in _DHCP_HOST_KEYWORDS:
        raise _fail("host name (one RFC 1123 label, not a number or lease time)", name)
    return name


def _check_domain(domain: str) -> str:
    labels = domain.split(".")
    if len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise _fail("DNS domain", domain)
    return domain


def _check_expiry(expiry: str) -> str:
    if not _EXPIRY.fullmatch(expiry):
        raise _fail("lease time", expiry)
    return expiry


def _ipv4(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError):
        raise _fail(what, value) from None


def _ipv6(value: str, what: str) -> ipaddress.IPv6Address:
    try:
        addr = ipaddress.IPv6Address(value)
    except (ipaddress.AddressValueError, ValueError):
        raise _fail(what, value) from None
    if "%" in value:
        raise _fail(what, value)
    return addr


def _ipv4_interface(value: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(value)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError):
        raise _fail("IPv4 bridge address", value) from None
    if "/" not in value:
        raise _fail("IPv4 bridge address (CIDR expected)", value)
    return iface


def _ipv6_interface(value: str) -> ipaddress.IPv6Interface:
    try:
        iface = ipaddress.IPv6Interface(value)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError):
        raise _fail("IPv6 bridge address", value) from None
    if "/" not in value or "%" in value:
        raise _fail("IPv6 bridge address (CIDR expected)", value)
    return iface


_Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
_Iface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _ranges(given: Sequence[tuple[str, str]], iface: _Iface, family: str) -> list[tuple[_Addr, _Addr]]:
    """The caller's ranges, checked to lie inside the subnet; or the whole subnet minus the
    network address, the IPv4 broadcast address and the bridge's own address."""
    parse = _ipv4 if family == "IPv4" else _ipv6
    net = iface.network
    if given:
        out: list[tuple[_Addr, _Addr]] = []
        for start_s, end_s in given:
            start, end = parse(start_s, f"{family} range start"), parse(end_s, f"{family} range end")
            if int(start) > int(end) or start not in net or end not in net:
                raise _fail(f"{family} range (must lie in {net}, start <= end)", f"{start_s}-{end_s}")
            out.append((start, end))
        return out
    # Integers: the bridge address may sit at either end of the address space.
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if family == "IPv4" else 0)
    own = int(iface.ip)
    whole = [(first, min(own - 1, last)), (max(own + 1, first), last)]
    make = type(iface.ip)
    out = [(make(a), make(b)) for a, b in whole if a <= b]
    if not out:
        raise _fail(f"{family} subnet (no address left to hand out)", str(iface))
    return out


# --- argv -----------------------------------------------------------------------------------


def _paths(dir: Path) -> tuple[Path, Path, Path]:
    base = Path(_check_path(dir))
    return base / PID_FILE, base / LEASE_FILE, base / HOSTS_DIR


def render_args(cfg: DnsmasqConfig) -> list[str]:
    """The full dnsmasq argv for cfg; raises InvalidError for any unsafe or inconsistent value."""
    bridge = checks.interface_name(cfg.bridge)
    pid_file, lease_file, hosts_dir = _paths(cfg.dir)
    if not _USER.fullmatch(cfg.user):
        raise _fail("user", cfg.user)
    if cfg.dns_mode not in DNS_MODES:
        raise _fail("DNS mode", cfg.dns_mode)
    args = [
        DNSMASQ_BINARY,
        "--conf-file=/dev/null",  # never read /etc/dnsmasq.conf or /etc/dnsmasq.d
        "--no-hosts",  # the host's /etc/hosts is not this network's business
        "--bind-interfaces",  # bind this bridge's addresses only: instances run side by side
        f"--interface={bridge}",
        "--except-interface=lo",
        "--no-ping",  # a pool lease otherwise waits 3 s for a ping to time out
        "--dhcp-authoritative",  # answer clients holding leases from before a restart at once
        "--dhcp-no-override",
        f"--pid-file={pid_file}",
        f"--dhcp-leasefile={lease_file}",
        f"--dhcp-hostsdir={hosts_dir}",
        f"--user={cfg.user}",
    ]
    if cfg.log_file is not None:
        args.append(f"--log-facility={_check_path(cfg.log_file, 'log file')}")
    domain = None if cfg.dns_domain is None else _check_domain(cfg.dns_domain)
    if cfg.dns_mode == "none":
        args.append("--port=0")
    else:
        if cfg.dns_mode == "managed":
            args.append("--dhcp-ignore-names")  # names come from static allocations only
        if domain is not None:
            # Names in the domain are answered from DHCP data only, never forwarded upstream.
            args += [f"--domain={domain}", f"--local=/{domain}/"]
    args += _ipv4_args(cfg)
    args += _ipv6_args(cfg)
    return args


def _ipv4_args(cfg: DnsmasqConfig) -> list[str]:
    _check_expiry(cfg.ipv4_expiry)
    if cfg.ipv4_address is None:
        if cfg.ipv4_ranges or cfg.ipv4_gateway:
            raise InvalidError("Invalid dnsmasq config: IPv4 ranges or gateway without an IPv4 address")
        return []
    iface = _ipv4_interface(cfg.ipv4_address)
    gateway = iface.ip if cfg.ipv4_gateway is None else _ipv4(cfg.ipv4_gateway, "IPv4 gateway")
    if not cfg.ipv4_dhcp:
        return []
    args = [f"--dhcp-range={a},{b},{cfg.ipv4_expiry}" for a, b in _ranges(cfg.ipv4_ranges, iface, "IPv4")]
    args.append(f"--dhcp-option=option:router,{gateway}")
    return args


def _ipv6_args(cfg: DnsmasqConfig) -> list[str]:
    _check_expiry(cfg.ipv6_expiry)
    if cfg.ipv6_address is None:
        if cfg.ipv6_ranges:
            raise InvalidError("Invalid dnsmasq config: IPv6 ranges without an IPv6 address")
        return []
    iface = _ipv6_interface(cfg.ipv6_address)
    net, plen = iface.network.network_address, iface.network.prefixlen
    args: list[str] = []
    if cfg.ipv6_dhcp and cfg.ipv6_stateful:
        ranges = _ranges(cfg.ipv6_ranges, iface, "IPv6")
        args += [f"--dhcp-range={a},{b},{plen},{cfg.ipv6_expiry}" for a, b in ranges]
    elif cfg.ipv6_ranges:
        raise InvalidError("Invalid dnsmasq config: IPv6 ranges need stateful DHCPv6")
    elif cfg.ipv6_dhcp:
        # dnsmasq only offers stateless DHCPv6 together with RAs carrying the O flag.
        if not cfg.ipv6_ra:
            raise InvalidError(
                "Invalid dnsmasq config: stateless DHCPv6 needs router advertisements (ipv6_ra)"
            )
        args.append(f"--dhcp-range={net},ra-stateless,{plen},{cfg.ipv6_expiry}")
    elif cfg.ipv6_ra:
        args.append(f"--dhcp-range={net},ra-only,{plen},{cfg.ipv6_expiry}")
    if cfg.ipv6_ra:
        args.append("--enable-ra")
    return args


def _digest(args: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(args).encode()).hexdigest()


def config_digest(cfg: DnsmasqConfig) -> str:
    """A digest of the argv; equal digests mean a restart would change nothing."""
    return _digest(render_args(cfg))


def running_config_digest(dir: Path) -> str | None:
    """config_digest of the dnsmasq running for dir (from its command line), None if none runs.

    Lets a restarted daemon decide whether the running dnsmasq matches the config without having
    stored anything itself.
    """
    found = _find(dir)
    return None if found is None else _digest(found[1])


# --- process ----------------------------------------------------------------------------------


def _read_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []  # gone
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _is_ours(pid: int, pid_file: Path) -> list[str] | None:
    """The argv of pid if it is the dnsmasq that writes pid_file; a zombie has no argv."""
    argv = _read_cmdline(pid)
    if argv and os.path.basename(argv[0]) == "dnsmasq" and f"--pid-file={pid_file}" in argv[1:]:
        return argv
    return None


def _read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"read dnsmasq pid file {pid_file}: {e.strerror}") from e
    return int(text) if text.isdigit() and int(text) > 0 else None


def _find(dir: Path) -> tuple[int, list[str]] | None:
    pid_file = _paths(dir)[0]
    pid = _read_pid(pid_file)
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
            raise _fail("network namespace name", text)
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
    address = _ipv6_interface(cfg.ipv6_address).ip
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
    pid_file, lease_file, hosts_dir = _paths(cfg.dir)
    running = find_running(cfg.dir)
    if running is not None:
        raise HostError(f"start dnsmasq on {cfg.bridge}: already running as pid {running}")
    created: list[Path] = []
    try:
        if not pid_file.parent.is_dir():
            _make_dir(pid_file.parent)
            created.append(pid_file.parent)
        if _make_dir(hosts_dir):
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


def _make_dir(path: Path) -> bool:
    """Make path (and its parents) searchable by dnsmasq's user whatever the umask; True if new."""
    try:
        path.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    except OSError as e:
        raise HostError(f"create directory {path}: {e.strerror}") from e
    try:
        if created or path.name == HOSTS_DIR:  # the caller's own directories keep their mode
            os.chmod(path, 0o755)
    except OSError as e:
        raise HostError(f"set mode of {path}: {e.strerror}") from e
    return created


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


def _kill_from_pid_file(pid_file: Path) -> None:
    pid = _read_pid(pid_file)
    if pid is not None and _is_ours(pid, pid_file):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, pid_file, _KILL_GRACE)
    pid_file.unlink(missing_ok=True)


def _exited(pid: int) -> bool:
    """Gone or a zombie: only then has the kernel closed its sockets (its cmdline empties earlier)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def _wait_gone(pid: int, pid_file: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        # dnsmasq is normally init's child; reap it in case pincusd is its (sub)reaper.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if _is_ours(pid, pid_file) is None and _exited(pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)


def stop(dir: Path, timeout: float = 5) -> None:
    """SIGTERM the dnsmasq of dir, SIGKILL it after timeout; remove the pid file. None running = fine."""
    pid_file = _paths(dir)[0]
    pid = find_running(dir)
    if pid is not None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, _KILL_GRACE)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if _wait_gone(pid, pid_file, wait):
                break
        else:
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
    pid = find_running(dir)
    if pid is None:
        raise HostError(f"reload dnsmasq of {dir}: not running")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise HostError(f"reload dnsmasq of {dir}: pid {pid} exited") from None


# --- static allocations ------------------------------------------------------------------


def allocation_line(mac: str, ipv4: str | None, ipv6: str | None, hostname: str | None) -> str:
    """One dnsmasq dhcp-host line: "mac[,ipv4][,[ipv6]][,hostname]" (dnsmasq(8) --dhcp-host)."""
    fields = [checks.mac(mac)]
    if ipv4 is not None:
        fields.append(str(_ipv4(ipv4, "IPv4 address")))
    if ipv6 is not None:
        fields.append(f"[{_ipv6(ipv6, 'IPv6 address')}]")
    if hostname is not None:
        fields.append(_check_hostname(hostname))
    return ",".join(fields) + "\n"


def _allocation_file(dir: Path, nic_id: str) -> Path:
    return _paths(dir)[2] / _check_nic_id(nic_id)


def write_static_allocation(
    dir: Path, nic_id: str, mac: str, ipv4: str | None, ipv6: str | None, hostname: str | None
) -> bool:
    """Write the hosts file of one NIC atomically.

    Returns True when it replaced an existing, different entry: dnsmasq then still holds the
    old one, and the caller must reload(). A new file is picked up by dnsmasq on its own, and
    rewriting identical content does nothing.
    """
    path = _allocation_file(dir, nic_id)
    line = allocation_line(mac, ipv4, ipv6, hostname)
    try:
        old: str | None = path.read_text()
    except FileNotFoundError:
        old = None
    except OSError as e:
        raise HostError(f"read static allocation {path}: {e.strerror}") from e
    if old == line:
        return False
    # Dotfiles are invisible to dnsmasq; the unique suffix lets writers of one NIC race safely.
    tmp = path.with_name(f".{nic_id}.{secrets.token_hex(4)}.tmp")
    _make_dir(path.parent)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.fchmod(fd, 0o644)  # the daemon's umask must not hide the file from dnsmasq
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise HostError(f"write static allocation {path}: {e.strerror}") from e
    return old is not None


def remove_static_allocation(dir: Path, nic_id: str) -> bool:
    """Remove the hosts file of one NIC; True if there was one (then the caller must reload())."""
    path = _allocation_file(dir, nic_id)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise HostError(f"remove static allocation {path}: {e.strerror}") from e
    return True


def _parse_allocation(nic_id: str, text: str) -> StaticAllocation:
    lines = text.splitlines()
    if len(lines) != 1:
        raise ValueError("expected one line")
    mac, *rest = lines[0].split(",")
    ipv4 = ipv6 = hostname = None
    for field in rest:
        if field.startswith("[") and field.endswith("]"):
            ipv6 = str(ipaddress.IPv6Address(field[1:-1]))
        elif "." in field:
            ipv4 = str(ipaddress.IPv4Address(field))
        else:
            hostname = _check_hostname(field)
    return StaticAllocation(nic_id, checks.mac(mac), ipv4, ipv6, hostname)


def static_allocations(dir: Path) -> list[StaticAllocation]:
    """Every NIC's entry in the hosts dir, sorted by nic_id; files that do not parse are
    skipped with a warning (dnsmasq would reject them too)."""
    hosts_dir = _paths(dir)[2]
    try:
        names = sorted(os.listdir(hosts_dir))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HostError(f"list static allocations in {hosts_dir}: {e.strerror}") from e
    out: list[StaticAllocation] = []
    for name in names:
        if name.startswith("."):
            continue  # in-flight temporary files
        try:
            out.append(_parse_allocation(name, (hosts_dir / name).read_text()))
        except FileNotFoundError:
            continue  # removed meanwhile
        except (OSError, ValueError, UnicodeDecodeError, InvalidError) as e:
            log.warning("skipping unreadable static allocation %s: %s", hosts_dir / name, e)
    return out


# --- leases -----------------------------------------------------------------------------------


def _mac_from_duid(duid: str) -> str:
    """The MAC inside a DUID-LLT (type 1) or DUID-LL (type 3) of an Ethernet client, else ""."""
    parts = duid.split(":")
    if len(parts) == 14 and parts[:4] == ["00", "01", "00", "01"]:
        return ":".join(parts[8:])
    if len(parts) == 10 and parts[:4] == ["00", "03", "00", "01"]:
        return ":".join(parts[4:])
    return ""


def _parse_lease(line: str) -> Lease | None:
    fields = line.split()
    if len(fields) != 5 or not fields[0].isdigit():
        return None
    expiry, second, address, hostname, client = fields
    hostname = "" if hostname == "*" else hostname
    client = "" if client == "*" else client.lower()
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return None
    if addr.version == 4:
        return Lease(int(expiry), second.lower(), str(addr), hostname, client)
    # IPv6 lines carry the IAID (prefixed "T" for a temporary address) where IPv4 has the MAC.
    iaid = second.removeprefix("T")
    if not iaid.isdigit():
        return None
    return Lease(int(expiry), _mac_from_duid(client), str(addr), hostname, client, int(iaid))


def read_leases(dir: Path) -> list[Lease]:
    """dnsmasq's leases for dir, IPv4 and IPv6 (the "duid" line is the server's own DUID)."""
    path = _paths(dir)[1]
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HostError(f"read dnsmasq leases {path}: {e.strerror}") from e
    leases = []
    for line in text.splitlines():
        if line.startswith("duid "):
            continue
        lease = _parse_lease(line)
        if lease is not None:
            leases.append(lease)
    return leases


# --- giving a lease back --------------------------------------------------------------------

_DHCP_SERVER_PORT = 67


def release_ipv4_lease(bridge: str, server: str, mac: str, address: str) -> None:
    """Ask the dnsmasq serving `bridge` at `server` to drop the lease of `mac` on `address`.

    A DHCPRELEASE as the client would send it (RFC 2131 4.4.6), sent from a socket bound to the
    bridge: the kernel then reports the bridge as the arrival interface, which dnsmasq requires
    (dnsmasq's own dhcp_release does the same). dnsmasq answers nothing; it rewrites its leases
    file. An unknown lease is ignored by dnsmasq.
    """
    hw = bytes.fromhex(checks.mac(mac).replace(":", ""))
    ciaddr = _ipv4(address, "lease address").packed
    server_id = _ipv4(server, "server address").packed
    bootp = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, secrets.randbits(32), 0, 0,  # BOOTREQUEST, Ethernet, 6-byte address
        ciaddr, bytes(4), bytes(4), bytes(4), hw, b"", b"",
    )  # fmt: skip
    options = b"\x63\x82\x53\x63" + bytes([53, 1, 7, 54, 4]) + server_id + b"\xff"  # RELEASE
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, checks.interface_name(bridge).encode())
            s.sendto(bootp + options, (str(ipaddress.IPv4Address(server_id)), _DHCP_SERVER_PORT))
    except OSError as e:
        raise HostError(f"release DHCP lease {address} of {mac} on {bridge}: {e.strerror}") from e


_DHCP6_SERVER_PORT = 547
_ALL_DHCP6_SERVERS = "ff02::1:2"


def _dhcp6_option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def _duid(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        raise _fail(what, text) from None
    if not 2 < len(raw) <= 130:  # RFC 8415 11.1: at most 128 octets after the type
        raise _fail(what, text)
    return raw


def server_duid(dir: Path) -> str | None:
    """dnsmasq's own DHCPv6 DUID (colon hex) from its leases file; None before it wrote one."""
    path = _paths(dir)[1]
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"read dnsmasq leases {path}: {e.strerror}") from e
    fields = [line.split() for line in lines if line.startswith("duid ")]
    return next((f[1] for f in fields if len(f) == 2), None)


def release_ipv6_lease(bridge: str, server_duid: str, client_duid: str, iaid: int, address: str) -> None:
    """Ask the dnsmasq serving `bridge` to drop a DHCPv6 lease: a Release as the client would
    send it (RFC 8415 18.2.7) to All_DHCP_Relay_Agents_and_Servers on the bridge. The multicast
    copy looped back to this host arrives on the bridge, where dnsmasq listens (dnsmasq's own
    dhcp_release6 does the same)."""
    addr = _ipv6(address, "lease address").packed
    iaaddr = _dhcp6_option(5, addr + struct.pack("!II", 0, 0))
    message = (
        struct.pack("!I", (8 << 24) | secrets.randbits(24))  # RELEASE, transaction id
        + _dhcp6_option(1, _duid(client_duid, "client DUID"))
        + _dhcp6_option(2, _duid(server_duid, "server DUID"))
        + _dhcp6_option(3, struct.pack("!III", iaid, 0, 0) + iaaddr)  # IA_NA
    )
    name = checks.interface_name(bridge)
    try:
        index = socket.if_nametoindex(name)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, name.encode())
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            s.sendto(message, (_ALL_DHCP6_SERVERS, _DHCP6_SERVER_PORT, 0, index))
    except OSError as e:
        raise HostError(f"release DHCPv6 lease {address} on {bridge}: {e.strerror}") from e
