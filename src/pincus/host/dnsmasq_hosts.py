"""A managed bridge's DHCP data on disk: the static allocations dnsmasq reads (one hosts file per
NIC) and the leases it writes.

How dnsmasq (2.90, verified by tests/host/test_dnsmasq.py) treats the hosts directory:

- A *new* file in ``dnsmasq.hosts`` is read by dnsmasq on its own (inotify, within milliseconds).
  Files are written as a dotfile and renamed into place; dnsmasq ignores dotfiles, so it never sees
  a half-written entry.
- A *removed* file stays in force until SIGHUP (``dnsmasq_process.reload``), and a SIGHUP makes
  dnsmasq read every file of the directory again: a reload per removal would cost dnsmasq O(n).
  ``retire_static_allocation`` removes a file and notes its entry in ``dnsmasq.retired`` (beside
  the hosts dir) until the caller reloads, so the caller can reload once for many removals, and at
  once when a new entry collides with a retired one that dnsmasq still holds.
- A *changed* file is read again, but the old entry also stays in force until SIGHUP, and a new
  entry whose IPv4 address an old one still holds is rejected as a duplicate ("duplicate dhcp-host
  IP address" in dnsmasq's log): a changed host name with the same address, or a move back to an
  earlier address, does not take effect. So after replacing an existing entry with different
  content the caller must reload; ``write_static_allocation`` says when (it returns True).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pincus.errors import HostError, InvalidError
from pincus.host import checks
from pincus.host.dnsmasq_args import HOSTS_DIR, check_hostname, check_nic_id, parse_ipv4, parse_ipv6, paths

log = logging.getLogger(__name__)


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


def make_dir(path: Path) -> bool:
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


# --- static allocations ------------------------------------------------------------------


def allocation_line(mac: str, ipv4: str | None, ipv6: str | None, hostname: str | None) -> str:
    """One dnsmasq dhcp-host line: "mac[,ipv4][,[ipv6]][,hostname]" (dnsmasq(8) --dhcp-host)."""
    fields = [checks.mac(mac)]
    if ipv4 is not None:
        fields.append(str(parse_ipv4(ipv4, "IPv4 address")))
    if ipv6 is not None:
        fields.append(f"[{parse_ipv6(ipv6, 'IPv6 address')}]")
    if hostname is not None:
        fields.append(check_hostname(hostname))
    return ",".join(fields) + "\n"


def _allocation_file(dir: Path, nic_id: str) -> Path:
    return paths(dir)[2] / check_nic_id(nic_id)


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
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # the first entry makes the directory
            make_dir(path.parent)
            fd = os.open(tmp, flags, 0o644)
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


RETIRED_FILE = "dnsmasq.retired"


@dataclass(frozen=True)
class Retired:
    """How many entries were removed from the hosts dir since dnsmasq's last reload (it holds them
    until then), and how many the hosts dir had when the first of them was removed."""

    count: int
    live_at_first: int


def _retired_path(dir: Path) -> Path:
    return paths(dir)[2].parent / RETIRED_FILE


def _retired_line(a: StaticAllocation) -> str:
    # Space-separated canonical fields with a space at both ends, so that a collision check is a
    # substring search for " <field> " (no parsing of every line per added NIC).
    return f"{a.nic_id} {a.mac} {a.ipv4 or '-'} {a.ipv6 or '-'} \n"


def retire_static_allocation(dir: Path, nic_id: str) -> Retired | None:
    """Remove the hosts file of one NIC and note its entry as retired (dnsmasq holds it until
    reloaded); None if the NIC had no file (nothing to reload for). A file that does not parse
    is removed and counted as the whole hosts dir, so the caller reloads at once."""
    path = _allocation_file(dir, nic_id)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"read static allocation {path}: {e.strerror}") from e
    try:
        line = _retired_line(_parse_allocation(nic_id, text))
    except (ValueError, UnicodeDecodeError, InvalidError):
        line = ""  # dnsmasq may hold anything for it: see the return below
    retired_path = _retired_path(dir)
    try:
        try:
            fd = os.open(
                retired_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
            # The first retirement since the last reload counts the hosts dir, once per batch.
            line = f"live {len(os.listdir(path.parent))}\n" + line
        except FileExistsError:
            fd = os.open(retired_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)
        data = retired_path.read_bytes()
    except OSError as e:
        raise HostError(f"retire static allocation {path}: {e.strerror}") from e
    head, _, rest = data.partition(b"\n")
    live = int(head.split()[1]) if head.startswith(b"live ") and line.endswith(" \n") else 0
    return Retired(rest.count(b"\n") + (0 if line.endswith(" \n") else 1), live)


def retired_holds(dir: Path, mac: str, ipv4: str | None, ipv6: str | None) -> bool:
    """Whether a retired entry (which dnsmasq still holds) has this MAC or one of these addresses."""
    try:
        text = _retired_path(dir).read_text()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise HostError(f"read {_retired_path(dir)}: {e.strerror}") from e
    wanted = [checks.mac(mac)]
    wanted += [str(parse_ipv4(ipv4, "IPv4 address"))] if ipv4 else []
    wanted += [str(parse_ipv6(ipv6, "IPv6 address"))] if ipv6 else []
    return any(f" {w} " in text for w in wanted)


def retired_allocations(dir: Path) -> list[StaticAllocation]:
    """The entries retired since the last forget_retired, oldest first (see the module doc)."""
    try:
        lines = _retired_path(dir).read_text().splitlines()[1:]
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HostError(f"read {_retired_path(dir)}: {e.strerror}") from e
    out = []
    for line in lines:
        nic_id, mac, v4, v6 = line.split()
        out.append(StaticAllocation(nic_id, mac, None if v4 == "-" else v4, None if v6 == "-" else v6, None))
    return out


def forget_retired(dir: Path) -> None:
    """dnsmasq was reloaded (or restarted): it holds no retired entry any more."""
    try:
        _retired_path(dir).unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HostError(f"remove {_retired_path(dir)}: {e.strerror}") from e


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
            hostname = check_hostname(field)
    return StaticAllocation(nic_id, checks.mac(mac), ipv4, ipv6, hostname)


def static_allocations(dir: Path) -> list[StaticAllocation]:
    """Every NIC's entry in the hosts dir, sorted by nic_id; files that do not parse are
    skipped with a warning (dnsmasq would reject them too)."""
    hosts_dir = paths(dir)[2]
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
    path = paths(dir)[1]
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


def static_allocation_file(dir: Path, nic_id: str) -> Path:
    """Where write_static_allocation keeps the hosts file of one NIC (what it owns there)."""
    return _allocation_file(dir, nic_id)


def server_duid(dir: Path) -> str | None:
    """dnsmasq's own DHCPv6 DUID (colon hex) from its leases file; None before it wrote one."""
    path = paths(dir)[1]
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HostError(f"read dnsmasq leases {path}: {e.strerror}") from e
    fields = [line.split() for line in lines if line.startswith("duid ")]
    return next((f[1] for f in fields if len(f) == 2), None)
