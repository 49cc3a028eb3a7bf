"""Network links, addresses and routes through rtnetlink.

A network namespace is named by a file path (`/run/netns/<name>`, a bind mount of
`/proc/<pid>/ns/net`, ...); `netns=None` means the daemon's own namespace.

How the netlink traffic is done, and why (numbers: bench/bench_links.py):
- Messages are packed and parsed here with `struct`: a few fixed headers and flat
  attributes. pyroute2 0.9.7 was measured and set aside for this hot path: its message
  classes cost 0.2-0.5 ms to encode or decode one link (the kernel answers a GET in
  0.01 ms, creates a veth in ~0.4 ms), its `IPRoute` object gives every thread that
  touches it a socket and an asyncio loop of its own (never closed), `IPRoute(netns=)`
  forks a child per socket (8-12 ms), and its default socket joins multicast groups
  whose events pile up in a cached handle.
- Sockets in the daemon's namespace sit in a small pool: a thread takes one, uses it
  alone, gives it back, so concurrent callers never share a socket and none waits on
  another's slow request (a link delete blocks ~16 ms in the kernel).
- Sockets in another namespace are made per call and closed at once, never cached: a
  socket holds a reference to its namespace, so a cached one would keep a stopped
  container's namespace alive with its interfaces (the host end of its veth would
  stay on the bridge; a moved-in physical NIC would not come back). Making one costs
  ~0.05 ms: a long-lived helper thread `setns`es into the target, opens the socket and
  goes home; callers' threads never change namespace.
- A veth peer is born in its namespace (`IFLA_NET_NS_FD` inside the peer): one request.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import logging
import os
import queue
import re
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pincus.errors import HostError, InvalidError
from pincus.host import ipconf

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- kernel ABI
# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/veth.h, linux/if_tun.h, sched.h

_NETLINK_ROUTE = 0
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10
_NETLINK_EXT_ACK = 11
_NETLINK_GET_STRICT_CHK = 12
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_DUMP = 0x300
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_NLM_F_CAPPED = 0x100
_NLM_F_ACK_TLVS = 0x200
_NLM_F_DUMP_INTR = 0x10
_NLMSGERR_ATTR_MSG = 1
_NLA_F_NESTED = 0x8000
_NLA_TYPE_MASK = 0x3FFF

_RTM_NEWLINK = 16
_RTM_DELLINK = 17
_RTM_GETLINK = 18
_RTM_NEWADDR = 20
_RTM_DELADDR = 21
_RTM_GETADDR = 22
_RTM_NEWROUTE = 24
_RTM_DELROUTE = 25

_IFLA_ADDRESS = 1
_IFLA_IFNAME = 3
_IFLA_MTU = 4
_IFLA_MASTER = 10
_IFLA_TXQLEN = 13
_IFLA_OPERSTATE = 16
_IFLA_LINKINFO = 18
_IFLA_STATS64 = 23
_IFLA_NET_NS_FD = 28
_IFLA_EXT_MASK = 29
_IFLA_CARRIER = 33
_IFLA_INFO_KIND = 1
_IFLA_INFO_DATA = 2
_VETH_INFO_PEER = 1
_IFLA_BR_FORWARD_DELAY = 1
_IFLA_BR_STP_STATE = 5
_RTEXT_FILTER_SKIP_STATS = 1 << 3
_IFF_UP = 0x1
_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

_IFA_ADDRESS = 1
_IFA_LOCAL = 2

_RTA_DST = 1
_RTA_OIF = 4
_RTA_GATEWAY = 5
_RT_TABLE_MAIN = 254
_RTPROT_BOOT = 3
_RT_SCOPE_UNIVERSE = 0
_RT_SCOPE_LINK = 253
_RT_SCOPE_NOWHERE = 255
_RTN_UNICAST = 1

_CLONE_NEWNET = 0x40000000
_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_IFF_TUN_EXCL = 0x8000

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NLA = struct.Struct("=HH")  # length, type
_U32 = struct.Struct("=I")
_STATS64 = struct.Struct("=8Q")  # the first 8 counters of rtnl_link_stats64

_RECV_BUF = 1 << 16  # the kernel caps one dump datagram at 32 KiB
_POOL_MAX = 8
_DUMP_TRIES = 3

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND ("bridge", "veth", "tun", ...); None for hardware and lo
    mac: str
    mtu: int
    up: bool  # administratively up (IFF_UP)
    operstate: str  # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN", ...
    carrier: bool
    master: str | None
    txqlen: int


@dataclass(frozen=True)
class LinkStats:
    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int


# --------------------------------------------------------------------------- wire format


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(atype: int, payload: bytes) -> bytes:
    n = _NLA.size + len(payload)
    return _NLA.pack(n, atype) + payload + bytes(_align(n) - n)


def _u32(atype: int, value: int) -> bytes:
    return _attr(atype, _U32.pack(value))


def _u8(atype: int, value: int) -> bytes:
    return _attr(atype, bytes((value,)))


def _text(atype: int, value: str) -> bytes:
    return _attr(atype, value.encode() + b"\0")


def _nest(atype: int, *attrs: bytes) -> bytes:
    return _attr(atype | _NLA_F_NESTED, b"".join(attrs))


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """Attribute type -> payload (first occurrence) of the attributes in data[start:end]."""
    found: dict[int, bytes] = {}
    while start + _NLA.size <= end:
        n, atype = _NLA.unpack_from(data, start)
        if n < _NLA.size or start + n > end:
            break
        found.setdefault(atype & _NLA_TYPE_MASK, data[start + _NLA.size : start + n])
        start += _align(n)
    return found


def _cstr(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode(errors="replace")


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(0, 0, index, flags, change)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


@dataclass(frozen=True)
class _Link:
    """A parsed RTM_NEWLINK message."""

    index: int
    flags: int
    attrs: dict[int, bytes]

    @classmethod
    def parse(cls, body: bytes) -> _Link:
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
        return cls(index, flags, _attrs(body, _IFINFOMSG.size, len(body)))

    @property
    def name(self) -> str:
        return _cstr(self.attrs.get(_IFLA_IFNAME, b""))

    def u32(self, atype: int) -> int:
        payload = self.attrs.get(atype)
        return int(_U32.unpack(payload[:4])[0]) if payload and len(payload) >= 4 else 0

    def info(self, master: str | None) -> LinkInfo:
        kind = None
        linkinfo = self.attrs.get(_IFLA_LINKINFO)
        if linkinfo is not None:
            raw_kind = _attrs(linkinfo, 0, len(linkinfo)).get(_IFLA_INFO_KIND)
            kind = _cstr(raw_kind) if raw_kind is not None else None
        oper = (self.attrs.get(_IFLA_OPERSTATE) or b"\0")[0]
        return LinkInfo(
            index=self.index,
            name=self.name,
            kind=kind,
            mac=":".join(f"{b:02x}" for b in self.attrs.get(_IFLA_ADDRESS, b"")),
            mtu=self.u32(_IFLA_MTU),
            up=bool(self.flags & _IFF_UP),
            operstate=_OPERSTATES[oper] if oper < len(_OPERSTATES) else "UNKNOWN",
            carrier=bool((self.attrs.get(_IFLA_CARRIER) or b"\0")[0]),
            master=master,
            txqlen=self.u32(_IFLA_TXQLEN),
        )


@dataclass(frozen=True)
class _Addr:
    """A parsed RTM_NEWADDR message."""

    family: int
    prefixlen: int
    index: int
    attrs: dict[int, bytes]

    @classmethod
    def parse(cls, body: bytes) -> _Addr:
        family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(body)
        return cls(family, prefixlen, index, _attrs(body, _IFADDRMSG.size, len(body)))

    def text(self) -> str:
        # For IPv4 IFA_LOCAL is the address (IFA_ADDRESS is the peer on point-to-point links).
        raw = self.attrs.get(_IFA_LOCAL) or self.attrs.get(_IFA_ADDRESS, b"")
        return f"{socket.inet_ntop(self.family, raw)}/{self.prefixlen}"


# --------------------------------------------------------------------------- sockets


class _NetlinkError(OSError):
    """An rtnetlink request was refused; `ext` is the kernel's extended-ack text, if any."""

    def __init__(self, code: int, ext: str) -> None:
        super().__init__(code, os.strerror(code))
        self.ext = ext


def _reason(e: OSError) -> str:
    text = os.strerror(e.errno) if e.errno else str(e)
    ext = getattr(e, "ext", "")
    return f"{text} ({ext})" if ext else text


def _ext_ack(data: bytes, off: int, length: int, flags: int) -> str:
    """The NLMSGERR_ATTR_MSG text of an error message, or ""."""
    if not flags & _NLM_F_ACK_TLVS:
        return ""
    inner = _NLMSGHDR.size if flags & _NLM_F_CAPPED else _U32.unpack_from(data, off + 20)[0]
    msg = _attrs(data, off + 20 + _align(inner), off + length).get(_NLMSGERR_ATTR_MSG)
    return _cstr(msg) if msg else ""


def _new_socket() -> socket.socket:
    """An rtnetlink socket in the calling thread's namespace, joined to no multicast group."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
    try:
        sock.setsockopt(_SOL_NETLINK, _NETLINK_EXT_ACK, 1)
        sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
        # Lets the kernel filter dumps (addresses of one link) instead of sending everything.
        sock.setsockopt(_SOL_NETLINK, _NETLINK_GET_STRICT_CHK, 1)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


class _Rtnl:
    """One rtnetlink socket, used by one thread at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        self.broken = False
        self._buf = bytearray(_RECV_BUF)

    def close(self) -> None:
        self.sock.close()

    def request(self, mtype: int, body: bytes, flags: int = 0) -> list[bytes]:
        """Send one request; return the bodies of the kernel's answers (a GET's object, a
        dump's objects, nothing for a change) or raise _NetlinkError if it was refused."""
        try:
            for _ in range(_DUMP_TRIES - 1):
                replies, interrupted = self._request(mtype, body, flags)
                if not interrupted:
                    return replies
            return self._request(mtype, body, flags)[0]
        except _NetlinkError:
            raise  # the whole answer was read: the socket is still in step
        except BaseException:
            self.broken = True
            raise

    def _request(self, mtype: int, body: bytes, flags: int) -> tuple[list[bytes], bool]:
        """The answers, and whether the kernel flagged a dump as inconsistent (links changed
        while it was sent), in which case it is worth asking again."""
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        seq = self.seq
        flags |= _NLM_F_REQUEST | _NLM_F_ACK
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body)
        replies: list[bytes] = []
        interrupted = False
        while True:
            n = self.sock.recv_into(self._buf, _RECV_BUF, socket.MSG_TRUNC)
            if n > _RECV_BUF:
                raise OSError(errno.EMSGSIZE, "netlink reply larger than the receive buffer")
            data = bytes(self._buf[:n])
            off = 0
            while off + _NLMSGHDR.size <= n:
                length, rtype, rflags, rseq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size or off + length > n:
                    raise OSError(errno.EBADMSG, "truncated netlink message")
                if rseq == seq:
                    if rtype in (_NLMSG_ERROR, _NLMSG_DONE):
                        # An ACK or a dump's end: a zero error code, or a refusal.
                        code = 0
                        if length >= _NLMSGHDR.size + 4:
                            code = abs(struct.unpack_from("=i", data, off + _NLMSGHDR.size)[0])
                        if code:
                            raise _NetlinkError(code, _ext_ack(data, off, length, rflags))
                        return replies, interrupted
                    interrupted |= bool(rflags & _NLM_F_DUMP_INTR)
                    replies.append(data[off + _NLMSGHDR.size : off + length])
                off += _align(length)


class _Pool:
    """Idle sockets of the daemon's own namespace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Rtnl] = []
        self._pid = os.getpid()

    def _forget_if_forked(self) -> None:
        # A forked child shares the parent's sockets: using them would mix up the replies.
        if self._pid != os.getpid():
            for conn in self._idle:
                conn.close()
            self._idle = []
            self._pid = os.getpid()

    def take(self) -> _Rtnl:
        with self._lock:
            self._forget_if_forked()
            if self._idle:
                return self._idle.pop()
        return _Rtnl(_new_socket())

    def give(self, conn: _Rtnl) -> None:
        if not conn.broken:
            with self._lock:
                self._forget_if_forked()
                if len(self._idle) < _POOL_MAX:
                    self._idle.append(conn)
                    return
        conn.close()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _setns(fd: int) -> None:
    # os.setns arrived in Python 3.12.
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


_Job = tuple[int, "queue.SimpleQueue[socket.socket | BaseException]"]


class _NetnsSockets:
    """Opens sockets inside other namespaces from one helper thread.

    setns() changes only the calling thread, so the helper enters the target, opens the
    socket and returns to the process's namespace (a thread parked in a namespace would
    keep it alive). Callers' threads never leave the daemon's namespace.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def open(self, nsfd: int) -> socket.socket:
        reply: queue.SimpleQueue[socket.socket | BaseException] = queue.SimpleQueue()
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._serve, args=(self._jobs,), name="pincus-netns-sockets", daemon=True
                )
                self._thread.start()
            self._jobs.put((nsfd, reply))
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        return result

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
        home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        while True:
            nsfd, reply = jobs.get()
            try:
                _setns(nsfd)
                reply.put(_new_socket())
            except BaseException as e:
                reply.put(e)
            try:
                _setns(home)
            except OSError as e:  # pragma: no cover - setns to an open nsfs fd does not fail
                # The next job enters its own target first, so serving on is still correct.
                log.error("netns helper could not return home: %s", e)


_pool = _Pool()
_netns_sockets = _NetnsSockets()


def _open_netns(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _where(netns: str | None) -> str:
    return f' in network namespace "{netns}"' if netns else ""


def _ns_text(netns: str | None) -> str:
    return f'network namespace "{netns}"' if netns else "the daemon's network namespace"


@contextmanager
def _rtnl(what: str, netns: str | None, say_where: bool = True) -> Iterator[_Rtnl]:
    """A socket for `netns`; every OSError inside becomes HostError("<what>: <reason>")."""
    if say_where:
        what += _where(netns)
    if netns is None:
        conn = _pool.take()
        try:
            yield conn
        except OSError as e:
            raise HostError(f"{what}: {_reason(e)}") from e
        finally:
            _pool.give(conn)
        return
    try:
        nsfd = _open_netns(netns)
        try:
            sock = _netns_sockets.open(nsfd)
        finally:
            os.close(nsfd)
    except OSError as e:
        raise HostError(f"{what}: cannot enter the network namespace: {_reason(e)}") from e
    conn = _Rtnl(sock)
    try:
        yield conn
    except OSError as e:
        raise HostError(f"{what}: {_reason(e)}") from e
    finally:
        conn.close()


# --------------------------------------------------------------------------- helpers


def _check_name(name: str) -> None:
    raw = name.encode()
    if (
        not 0 < len(raw) <= 15
        or name in (".", "..")
        or any(c in name for c in "/:")
        or any(c.isspace() for c in name)
    ):
        raise InvalidError(f'Invalid interface name "{name}"')


def _check_mac(mac: str) -> bytes:
    if not _MAC_RE.match(mac.lower()):
        raise InvalidError(f'Invalid MAC address "{mac}"')
    return _mac_bytes(mac)


def _check_positive(what: str, value: int) -> None:
    if value <= 0:
        raise InvalidError(f"Invalid {what} {value}")


def _getlink(nl: _Rtnl, name: str | None = None, index: int = 0, stats: bool = False) -> _Link:
    """The kernel's view of one link; raises _NetlinkError(ENODEV) if there is none."""
    body = _ifinfo(index)
    if name is not None:
        body += _text(_IFLA_IFNAME, name)
    if not stats:
        body += _u32(_IFLA_EXT_MASK, _RTEXT_FILTER_SKIP_STATS)
    replies = nl.request(_RTM_GETLINK, body)
    if not replies:
        raise _NetlinkError(errno.ENODEV, "")
    return _Link.parse(replies[0])


def _index(nl: _Rtnl, name: str) -> int:
    return _getlink(nl, name).index


def _info_with_master(nl: _Rtnl, link: _Link) -> LinkInfo:
    master_index = link.u32(_IFLA_MASTER)
    master = None
    if master_index:
        try:
            master = _getlink(nl, index=master_index).name
        except _NetlinkError as e:
            if e.errno != errno.ENODEV:  # the master went away between the two requests
                raise
    return link.info(master)


def _setlink(what: str, name: str, netns: str | None, *attrs: bytes) -> None:
    """Change attributes of the link called `name` (one request)."""
    _check_name(name)
    with _rtnl(what, netns) as nl:
        nl.request(_RTM_NEWLINK, _ifinfo() + _text(_IFLA_IFNAME, name) + b"".join(attrs))


# --------------------------------------------------------------------------- queries


def get_link(name: str, netns: str | None = None) -> LinkInfo | None:
    """The link called `name`, or None if there is none."""
    _check_name(name)
    with _rtnl(f'Failed to get link "{name}"', netns) as nl:
        try:
            link = _getlink(nl, name)
        except _NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return _info_with_master(nl, link)


def get_link_by_index(index: int, netns: str | None = None) -> LinkInfo | None:
    """The link with ifindex `index`, or None if there is none."""
    _check_positive("interface index", index)
    with _rtnl(f"Failed to get link with index {index}", netns) as nl:
        try:
            link = _getlink(nl, index=index)
        except _NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return _info_with_master(nl, link)


def list_links(netns: str | None = None) -> list[LinkInfo]:
    """Every link of the namespace, in ifindex order."""
    with _rtnl("Failed to list links", netns) as nl:
        body = _ifinfo() + _u32(_IFLA_EXT_MASK, _RTEXT_FILTER_SKIP_STATS)
        found = [_Link.parse(b) for b in nl.request(_RTM_GETLINK, body, _NLM_F_DUMP)]
    names = {link.index: link.name for link in found}
    infos = [link.info(names.get(link.u32(_IFLA_MASTER))) for link in found]
    return sorted(infos, key=lambda info: info.index)


def link_stats(name: str, netns: str | None = None) -> LinkStats:
    """The kernel's 64-bit traffic counters of `name`."""
    _check_name(name)
    what = f'Failed to read statistics of "{name}"'
    with _rtnl(what, netns) as nl:
        raw = _getlink(nl, name, stats=True).attrs.get(_IFLA_STATS64, b"")
    if len(raw) < _STATS64.size:
        raise HostError(f"{what}{_where(netns)}: the kernel sent no counters")
    rx_p, tx_p, rx_b, tx_b, rx_e, tx_e, rx_d, tx_d = _STATS64.unpack_from(raw)
    return LinkStats(
        rx_bytes=rx_b,
        rx_packets=rx_p,
        tx_bytes=tx_b,
        tx_packets=tx_p,
        rx_errors=rx_e,
        tx_errors=tx_e,
        rx_dropped=rx_d,
        tx_dropped=tx_d,
    )


def _addresses(nl: _Rtnl, index: int) -> list[_Addr]:
    # With strict checking the kernel sends the addresses of this link only.
    body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, index)
    found = [_Addr.parse(b) for b in nl.request(_RTM_GETADDR, body, _NLM_F_DUMP)]
    return [a for a in found if a.index == index]


def all_addresses(netns: str | None = None) -> list[str]:
    """Every address of every link as "addr/prefixlen", both families (one dump)."""
    body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    with _rtnl("Failed to list addresses", netns) as nl:
        return [_Addr.parse(b).text() for b in nl.request(_RTM_GETADDR, body, _NLM_F_DUMP)]


def link_addresses(name: str, netns: str | None = None) -> list[str]:
    """Every address on `name` as "addr/prefixlen", IPv6 link-local ones included."""
    _check_name(name)
    with _rtnl(f'Failed to list addresses of "{name}"', netns) as nl:
        return [a.text() for a in _addresses(nl, _index(nl, name))]


# --------------------------------------------------------------------------- creation


def create_bridge(name: str, mtu: int | None = None, hwaddr: str | None = None) -> None:
    """A Linux bridge in the daemon's namespace, STP off and forward delay 0."""
    _check_name(name)
    body = _ifinfo() + _text(_IFLA_IFNAME, name)
    if mtu is not None:
        _check_positive("MTU", mtu)
        body += _u32(_IFLA_MTU, mtu)
    if hwaddr is not None:
        body += _attr(_IFLA_ADDRESS, _check_mac(hwaddr))
    data = _nest(_IFLA_INFO_DATA, _u32(_IFLA_BR_STP_STATE, 0), _u32(_IFLA_BR_FORWARD_DELAY, 0))
    body += _nest(_IFLA_LINKINFO, _text(_IFLA_INFO_KIND, "bridge"), data)
    with _rtnl(f'Failed to create bridge "{name}"', None) as nl:
        nl.request(_RTM_NEWLINK, body, _NLM_F_CREATE | _NLM_F_EXCL)


def _create_veth(
    host_name: str,
    peer_name: str,
    peer_extra: bytes,
    peer_mac: str | None,
    mtu: int | None,
    txqlen: int | None,
) -> None:
    _check_name(host_name)
    _check_name(peer_name)
    both = b""  # attributes set on both ends
    if mtu is not None:
        _check_positive("MTU", mtu)
        both += _u32(_IFLA_MTU, mtu)
    if txqlen is not None:
        _check_positive("TX queue length", txqlen)
        both += _u32(_IFLA_TXQLEN, txqlen)
    peer = _ifinfo() + _text(_IFLA_IFNAME, peer_name) + both + peer_extra
    if peer_mac is not None:
        peer += _attr(_IFLA_ADDRESS, _check_mac(peer_mac))
    # The peer is a whole ifinfomsg (header and attributes) inside VETH_INFO_PEER.
    info = _nest(_IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer))
    body = _ifinfo() + _text(_IFLA_IFNAME, host_name) + both
    body += _nest(_IFLA_LINKINFO, _text(_IFLA_INFO_KIND, "veth"), info)
    with _rtnl(f'Failed to create veth "{host_name}"', None) as nl:
        nl.request(_RTM_NEWLINK, body, _NLM_F_CREATE | _NLM_F_EXCL)


def create_veth_into_netns(
    host_name: str,
    peer_name: str,
    netns: str,
    peer_mac: str | None = None,
    mtu: int | None = None,
    txqlen: int | None = None,
) -> None:
    """A veth pair whose peer is born inside `netns` (one request, nothing to move).

    `mtu` and `txqlen` apply to both ends; the host end stays in the daemon's namespace.
    """
    _check_name(host_name)
    try:
        nsfd = _open_netns(netns)
    except OSError as e:
        raise HostError(
            f'Failed to create veth "{host_name}": cannot open network namespace "{netns}": {_reason(e)}'
        ) from e
    try:
        _create_veth(host_name, peer_name, _u32(_IFLA_NET_NS_FD, nsfd), peer_mac, mtu, txqlen)
    finally:
        os.close(nsfd)


def create_veth(
    host_name: str,
    peer_name: str,
    peer_mac: str | None = None,
    mtu: int | None = None,
    txqlen: int | None = None,
) -> None:
    """A veth pair with both ends in the daemon's namespace."""
    _create_veth(host_name, peer_name, b"", peer_mac, mtu, txqlen)


def create_tap(name: str, mtu: int | None = None) -> None:
    """A persistent TAP device for QEMU's `-netdev tap,ifname=`: single queue, vnet_hdr.

    Fails with "File exists" when any link of that name exists (a plain TUNSETIFF would
    silently attach to an existing TAP).
    """
    _check_name(name)
    if mtu is not None:
        _check_positive("MTU", mtu)
    what = f'Failed to create TAP "{name}"'
    ifr = struct.pack("16sH22x", name.encode(), _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR | _IFF_TUN_EXCL)
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, _TUNSETIFF, ifr)
            fcntl.ioctl(fd, _TUNSETPERSIST, 1)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno == errno.EBUSY:  # IFF_TUN_EXCL's way of saying the name is taken
            e = OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        raise HostError(f"{what}: {_reason(e)}") from e
    if mtu is not None:
        try:
            _setlink(what, name, None, _u32(_IFLA_MTU, mtu))
        except HostError:
            delete_link(name)  # leave nothing half-made behind
            raise


def delete_link(name: str, netns: str | None = None) -> None:
    """Delete `name`; a link (or namespace) that is already gone is not an error."""
    _check_name(name)
    if netns is not None and not os.path.exists(netns):
        return  # the namespace went away and took its links with it
    with _rtnl(f'Failed to delete link "{name}"', netns) as nl:
        try:
            nl.request(_RTM_DELLINK, _ifinfo() + _text(_IFLA_IFNAME, name))
        except _NetlinkError as e:
            if e.errno != errno.ENODEV:
                raise


# --------------------------------------------------------------------------- settings


def set_master(name: str, bridge: str) -> None:
    """Enslave `name` to `bridge` (daemon's namespace)."""
    _check_name(name)
    _check_name(bridge)
    with _rtnl(f'Failed to attach "{name}" to bridge "{bridge}"', None) as nl:
        body = _ifinfo() + _text(_IFLA_IFNAME, name) + _u32(_IFLA_MASTER, _index(nl, bridge))
        nl.request(_RTM_NEWLINK, body)


def set_nomaster(name: str) -> None:
    """Release `name` from its bridge (daemon's namespace); no-op if it has none."""
    _setlink(f'Failed to detach "{name}" from its master', name, None, _u32(_IFLA_MASTER, 0))


def _set_flags(what: str, name: str, netns: str | None, up: bool) -> None:
    _check_name(name)
    with _rtnl(what, netns) as nl:
        body = _ifinfo(flags=_IFF_UP if up else 0, change=_IFF_UP) + _text(_IFLA_IFNAME, name)
        nl.request(_RTM_NEWLINK, body)


def set_up(name: str, netns: str | None = None) -> None:
    _set_flags(f'Failed to bring up "{name}"', name, netns, True)


def set_down(name: str, netns: str | None = None) -> None:
    _set_flags(f'Failed to bring down "{name}"', name, netns, False)


def set_mtu(name: str, mtu: int, netns: str | None = None) -> None:
    _check_positive("MTU", mtu)
    _setlink(f'Failed to set MTU {mtu} on "{name}"', name, netns, _u32(_IFLA_MTU, mtu))


def set_mac(name: str, mac: str, netns: str | None = None) -> None:
    raw = _check_mac(mac)
    _setlink(f'Failed to set MAC address {mac.lower()} on "{name}"', name, netns, _attr(_IFLA_ADDRESS, raw))


def set_txqlen(name: str, qlen: int, netns: str | None = None) -> None:
    _check_positive("TX queue length", qlen)
    _setlink(f'Failed to set TX queue length {qlen} on "{name}"', name, netns, _u32(_IFLA_TXQLEN, qlen))


def set_carrier(name: str, on: bool) -> None:
    """Force carrier on/off (IFLA_CARRIER, daemon's namespace).

    Only drivers with ndo_change_carrier allow it: TAP does (carrier on needs a reader,
    such as QEMU, attached), veth does not (the kernel answers "Operation not
    supported"); a veth end loses carrier when its peer is set down instead.
    """
    what = f'Failed to set carrier {"on" if on else "off"} on "{name}"'
    _setlink(what, name, None, _u8(_IFLA_CARRIER, 1 if on else 0))


def rename_link(name: str, new_name: str, netns: str | None = None) -> None:
    """Rename a link (kernel 6.18 allows it while up; older ones answer "Device or resource busy")."""
    _check_name(name)
    _check_name(new_name)
    with _rtnl(f'Failed to rename "{name}" to "{new_name}"', netns) as nl:
        nl.request(_RTM_NEWLINK, _ifinfo(_index(nl, name)) + _text(_IFLA_IFNAME, new_name))


def move_link_to_netns(
    name: str, netns: str | None, new_name: str | None = None, from_netns: str | None = None
) -> None:
    """Move `name` from `from_netns` into `netns`, renaming it to `new_name` there.

    None on either side means the daemon's own namespace, so moving a NIC back out of a
    container is `move_link_to_netns(name, None, from_netns=<container netns>)` (on this
    machine `/proc/1/ns/net` cannot be opened). One request; a link changing namespace
    is set down by the kernel.
    """
    _check_name(name)
    if new_name is not None:
        _check_name(new_name)
    what = f'Failed to move "{name}" from {_ns_text(from_netns)} to {_ns_text(netns)}'
    try:
        nsfd = _open_netns(netns if netns is not None else "/proc/self/ns/net")
    except OSError as e:
        raise HostError(f"{what}: cannot open the network namespace: {_reason(e)}") from e
    try:
        with _rtnl(what, from_netns, say_where=False) as nl:
            if new_name is None:
                body = _ifinfo() + _text(_IFLA_IFNAME, name)
            else:
                # Addressed by index, IFLA_IFNAME is the name the link takes in its new home.
                body = _ifinfo(_index(nl, name)) + _text(_IFLA_IFNAME, new_name)
            nl.request(_RTM_NEWLINK, body + _u32(_IFLA_NET_NS_FD, nsfd))
    finally:
        os.close(nsfd)


def set_ipv6_disabled(name: str, disabled: bool = True) -> None:
    """Write net.ipv6.conf.<name>.disable_ipv6 in the daemon's namespace."""
    _check_name(name)
    try:
        ipconf.set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1" if disabled else "0")
    except HostError as e:
        raise HostError(f'Failed to {"disable" if disabled else "enable"} IPv6 on "{name}": {e}') from e


# --------------------------------------------------------------------------- addresses


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def add_address(name: str, cidr: str, netns: str | None = None) -> None:
    """Add "addr/prefixlen" to `name`; an address already present is an error."""
    _check_name(name)
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as e:
        raise InvalidError(f'Invalid address "{cidr}"') from e
    with _rtnl(f'Failed to add address {cidr} to "{name}"', netns) as nl:
        head = _IFADDRMSG.pack(_family(iface.version), iface.network.prefixlen, 0, 0, _index(nl, name))
        raw = iface.ip.packed
        nl.request(
            _RTM_NEWADDR,
            head + _attr(_IFA_LOCAL, raw) + _attr(_IFA_ADDRESS, raw),
            _NLM_F_CREATE | _NLM_F_EXCL,
        )


def delete_address(name: str, cidr: str, netns: str | None = None) -> None:
    """Remove one "addr/prefixlen" from `name`; an address or link already gone is fine."""
    _check_name(name)
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as e:
        raise InvalidError(f'Invalid address "{cidr}"') from e
    with _rtnl(f'Failed to remove address {cidr} from "{name}"', netns) as nl:
        try:
            head = _IFADDRMSG.pack(_family(iface.version), iface.network.prefixlen, 0, 0, _index(nl, name))
            raw = iface.ip.packed
            nl.request(_RTM_DELADDR, head + _attr(_IFA_LOCAL, raw) + _attr(_IFA_ADDRESS, raw))
        except _NetlinkError as e:
            if e.errno not in (errno.ENODEV, errno.EADDRNOTAVAIL):
                raise


def flush_addresses(name: str, netns: str | None = None) -> None:
    """Remove every address of `name`, IPv6 link-local included."""
    _check_name(name)
    with _rtnl(f'Failed to flush addresses of "{name}"', netns) as nl:
        index = _index(nl, name)
        for old in _addresses(nl, index):
            body = _IFADDRMSG.pack(old.family, old.prefixlen, 0, 0, index)
            for atype in (_IFA_LOCAL, _IFA_ADDRESS):
                if atype in old.attrs:
                    body += _attr(atype, old.attrs[atype])
            try:
                nl.request(_RTM_DELADDR, body)
            except _NetlinkError as e:
                # Deleting a primary IPv4 address takes its secondaries with it.
                if e.errno != errno.EADDRNOTAVAIL:
                    raise


# --------------------------------------------------------------------------- routes


def _route(nl: _Rtnl, dst_cidr: str, dev: str, via: str | None, proto: int, scope: int, rtype: int) -> bytes:
    try:
        dst = ipaddress.ip_network(dst_cidr)
        gateway = ipaddress.ip_address(via) if via is not None else None
    except ValueError as e:
        raise InvalidError(f'Invalid route "{dst_cidr}" via "{via}": {e}') from e
    if gateway is not None and gateway.version != dst.version:
        raise InvalidError(f'Invalid route "{dst_cidr}": gateway {via} is of another family')
    body = _RTMSG.pack(_family(dst.version), dst.prefixlen, 0, 0, _RT_TABLE_MAIN, proto, scope, rtype, 0)
    if dst.prefixlen:
        body += _attr(_RTA_DST, dst.network_address.packed)
    body += _u32(_RTA_OIF, _index(nl, dev))
    if gateway is not None:
        body += _attr(_RTA_GATEWAY, gateway.packed)
    return body


def add_route(dst_cidr: str, dev: str, via: str | None = None, netns: str | None = None) -> None:
    """Route `dst_cidr` out of `dev` (through `via` if given) in the main table."""
    _check_name(dev)
    with _rtnl(f'Failed to add route {dst_cidr} dev "{dev}"', netns) as nl:
        scope = _RT_SCOPE_UNIVERSE if via is not None else _RT_SCOPE_LINK
        body = _route(nl, dst_cidr, dev, via, _RTPROT_BOOT, scope, _RTN_UNICAST)
        nl.request(_RTM_NEWROUTE, body, _NLM_F_CREATE | _NLM_F_EXCL)


def delete_route(dst_cidr: str, dev: str, netns: str | None = None) -> None:
    """Remove the main-table route to `dst_cidr` out of `dev`; a missing one is not an error."""
    _check_name(dev)
    with _rtnl(f'Failed to delete route {dst_cidr} dev "{dev}"', netns) as nl:
        try:
            # Scope "nowhere", protocol and type 0 match a route of any scope, origin and type.
            body = _route(nl, dst_cidr, dev, None, 0, _RT_SCOPE_NOWHERE, 0)
            nl.request(_RTM_DELROUTE, body)
        except _NetlinkError as e:
            # No such route, or no such device (its routes went with it).
            if e.errno not in (errno.ESRCH, errno.ENODEV):
                raise


def create_vlan(name: str, parent: str, vid: int, gvrp: bool = False) -> None:
    """An 802.1Q sub-interface of parent (GVRP registration when asked)."""
    _check_name(name)
    _check_name(parent)
    if not 0 <= vid <= 4094:
        raise InvalidError(f"VLAN id {vid} is outside 0-4094")
    argv = ["ip", "link", "add", "link", parent, "name", name, "type", "vlan", "id", str(vid)]
    if gvrp:
        argv += ["gvrp", "on"]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise HostError(f'Failed to create VLAN {vid} interface "{name}" on "{parent}": {r.stderr.strip()}')


def global_addresses(name: str, netns: str | None = None) -> list[str]:
    """The addresses of a link that are neither link-local nor loopback."""
    out = []
    for cidr in link_addresses(name, netns):
        ip = ipaddress.ip_interface(cidr).ip
        if not (ip.is_link_local or ip.is_loopback):
            out.append(cidr)
    return out
