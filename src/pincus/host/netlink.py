"""The rtnetlink client that links.py, addresses.py, routes.py, bridgeport.py and tc.py build on.

A network namespace is named by a file path (`/run/netns/<name>`, a bind mount of
`/proc/<pid>/ns/net`, ...); `netns=None` means the daemon's own namespace.

How the netlink traffic is done, and why (numbers: bench/bench_links.py):
- Messages are packed and parsed with `struct`: a few fixed headers and flat attributes.
  pyroute2 0.9.7 was measured and set aside for this hot path: its message classes cost
  0.2-0.5 ms to encode or decode one link (the kernel answers a GET in 0.01 ms, creates a
  veth in ~0.4 ms), its `IPRoute` object gives every thread that touches it a socket and an
  asyncio loop of its own (never closed), `IPRoute(netns=)` forks a child per socket
  (8-12 ms), and its default socket joins multicast groups whose events pile up.
- Sockets in the daemon's namespace sit in a small pool: a thread takes one, uses it alone,
  gives it back, so concurrent callers never share a socket and none waits on another's
  slow request (a link delete blocks ~16 ms in the kernel).
- Sockets in another namespace are made per call and closed at once, never cached: a socket
  holds a reference to its namespace, so a cached one would keep a stopped container's
  namespace alive with its interfaces (the host end of its veth would stay on the bridge; a
  moved-in physical NIC would not come back). Making one costs ~0.05 ms: a long-lived helper
  thread `setns`es into the target, opens the socket and goes home; callers' threads never
  change namespace.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pincus.errors import HostError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- kernel ABI
# linux/netlink.h, sched.h

_NETLINK_ROUTE = 0
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10
_NETLINK_EXT_ACK = 11
_NETLINK_GET_STRICT_CHK = 12
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8  # a change request: send the changed object back to the requester
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
_NLM_F_CAPPED = 0x100
_NLM_F_ACK_TLVS = 0x200
_NLM_F_DUMP_INTR = 0x10
_NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
_NLA_TYPE_MASK = 0x3FFF
_CLONE_NEWNET = 0x40000000

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_NLA = struct.Struct("=HH")  # length, type
_U32 = struct.Struct("=I")

_RECV_BUF = 1 << 16  # the kernel caps one dump datagram at 32 KiB
_POOL_MAX = 8
_DUMP_TRIES = 3
_TIMEOUT_S = 10.0  # the kernel answers at once; this only turns a wedged rtnl lock into an error

# --------------------------------------------------------------------------- wire format


def align(n: int) -> int:
    return (n + 3) & ~3


def attr(atype: int, payload: bytes) -> bytes:
    n = _NLA.size + len(payload)
    return _NLA.pack(n, atype) + payload + bytes(align(n) - n)


def u32(atype: int, value: int) -> bytes:
    return attr(atype, _U32.pack(value))


def u8(atype: int, value: int) -> bytes:
    return attr(atype, bytes((value,)))


def text(atype: int, value: str) -> bytes:
    return attr(atype, value.encode() + b"\0")


def nest(atype: int, *attrs: bytes) -> bytes:
    return attr(atype | NLA_F_NESTED, b"".join(attrs))


def address_family(version: int) -> int:
    """AF_INET or AF_INET6 for an IP version (4 or 6)."""
    return socket.AF_INET if version == 4 else socket.AF_INET6


def attrs(data: bytes, start: int = 0, end: int | None = None) -> dict[int, bytes]:
    """Attribute type -> payload (first occurrence) of the attributes in data[start:end]."""
    # attr_list's walk inlined: `list` parses every link and address of every running container,
    # and this loop is most of that time.
    end = len(data) if end is None else end
    found: dict[int, bytes] = {}
    unpack, size = _NLA.unpack_from, _NLA.size
    while start + size <= end:
        n, atype = unpack(data, start)
        if n < size or start + n > end:
            break
        atype &= _NLA_TYPE_MASK
        if atype not in found:
            found[atype] = data[start + size : start + n]
        start += (n + 3) & ~3
    return found


def attr_list(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, bytes]]:
    """Every (type, payload) in data[start:end], repeated types included, in order."""
    end = len(data) if end is None else end
    found: list[tuple[int, bytes]] = []
    while start + _NLA.size <= end:
        n, atype = _NLA.unpack_from(data, start)
        if n < _NLA.size or start + n > end:
            break
        found.append((atype & _NLA_TYPE_MASK, data[start + _NLA.size : start + n]))
        start += align(n)
    return found


def cstr(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode(errors="replace")


def as_u32(payload: bytes | None) -> int:
    return int(_U32.unpack(payload[:4])[0]) if payload and len(payload) >= 4 else 0


# --------------------------------------------------------------------------- requests


class NetlinkError(OSError):
    """An rtnetlink request was refused; `ext` is the kernel's extended-ack text, if any."""

    def __init__(self, code: int, ext: str) -> None:
        super().__init__(code, os.strerror(code))
        self.ext = ext

    def __str__(self) -> str:
        return reason(self)


def reason(e: OSError) -> str:
    """What went wrong, with the kernel's own explanation when it gave one."""
    plain = os.strerror(e.errno) if e.errno else OSError.__str__(e)
    ext = getattr(e, "ext", "")
    return f"{plain} ({ext})" if ext else plain


def _ext_ack(data: bytes, off: int, length: int, flags: int) -> str:
    """The NLMSGERR_ATTR_MSG text of an error message, or ""."""
    if not flags & _NLM_F_ACK_TLVS:
        return ""
    inner = _NLMSGHDR.size if flags & _NLM_F_CAPPED else _U32.unpack_from(data, off + 20)[0]
    msg = attrs(data, off + 20 + align(inner), off + length).get(_NLMSGERR_ATTR_MSG)
    return cstr(msg) if msg else ""


def new_socket() -> socket.socket:
    """An rtnetlink socket in the calling thread's namespace, joined to no multicast group."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
    try:
        sock.settimeout(_TIMEOUT_S)
        sock.setsockopt(_SOL_NETLINK, _NETLINK_EXT_ACK, 1)
        sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
        # Lets the kernel filter dumps (addresses of one link) instead of sending everything.
        sock.setsockopt(_SOL_NETLINK, _NETLINK_GET_STRICT_CHK, 1)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


class Rtnl:
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
        dump's objects, nothing for a change) or raise NetlinkError if it was refused."""
        try:
            for _ in range(_DUMP_TRIES - 1):
                replies, interrupted = self._request(mtype, body, flags)
                if not interrupted:
                    return replies
            return self._request(mtype, body, flags)[0]
        except NetlinkError:
            raise  # the whole answer was read: the socket is still in step
        except BaseException:
            self.broken = True
            raise

    def _request(self, mtype: int, body: bytes, flags: int) -> tuple[list[bytes], bool]:
        """The answers, and whether the kernel flagged a dump as inconsistent (links changed
        while it was sent), in which case it is worth asking again."""
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        seq = self.seq
        flags |= NLM_F_REQUEST | NLM_F_ACK
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
                            raise NetlinkError(code, _ext_ack(data, off, length, rflags))
                        return replies, interrupted
                    interrupted |= bool(rflags & _NLM_F_DUMP_INTR)
                    replies.append(data[off + _NLMSGHDR.size : off + length])
                off += align(length)


# --------------------------------------------------------------------------- sockets


class _Pool:
    """Idle sockets of the daemon's own namespace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Rtnl] = []
        self._pid = os.getpid()

    def _forget_if_forked(self) -> None:
        # A forked child shares the parent's sockets: using them would mix up the replies.
        if self._pid != os.getpid():
            for conn in self._idle:
                conn.close()
            self._idle = []
            self._pid = os.getpid()

    def take(self) -> Rtnl:
        with self._lock:
            self._forget_if_forked()
            if self._idle:
                return self._idle.pop()
        return Rtnl(new_socket())

    def give(self, conn: Rtnl) -> None:
        if not conn.broken:
            with self._lock:
                self._forget_if_forked()
                if len(self._idle) < _POOL_MAX:
                    self._idle.append(conn)
                    return
        conn.close()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace of fd (os.setns is Python 3.12+)."""
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


_Job = tuple[int | None, "queue.SimpleQueue[socket.socket | BaseException]"]


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

    def open(self, nsfd: int | None) -> socket.socket:
        """A socket in the namespace of nsfd; None: in a new, empty namespace of its own."""
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
                if nsfd is None:
                    _unshare_netns()
                else:
                    setns(nsfd)
                reply.put(new_socket())
            except BaseException as e:
                reply.put(e)
            try:
                setns(home)
            except OSError as e:  # pragma: no cover - setns to an open nsfs fd does not fail
                # The next job enters its own target first, so serving on is still correct.
                log.error("netns helper could not return home: %s", e)


def _unshare_netns() -> None:
    if _libc.unshare(_CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"create a network namespace: {os.strerror(code)}")


_pool = _Pool()
_netns_sockets = _NetnsSockets()


def open_netns(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def socket_in(netns: str) -> socket.socket:
    """A new socket in the namespace at path netns (the caller closes it)."""
    nsfd = open_netns(netns)
    try:
        return _netns_sockets.open(nsfd)
    finally:
        os.close(nsfd)


def socket_in_new_netns() -> socket.socket:
    """A socket in a new, empty namespace that lives as long as the socket: for probes."""
    return _netns_sockets.open(None)


def where(netns: str | None) -> str:
    return f' in network namespace "{netns}"' if netns else ""


def ns_text(netns: str | None) -> str:
    return f'network namespace "{netns}"' if netns else "the daemon's network namespace"


@contextmanager
def rtnl(what: str, netns: str | None, say_where: bool = True) -> Iterator[Rtnl]:
    """A socket for `netns`; every OSError inside becomes HostError("<what>: <reason>")."""
    if say_where:
        what += where(netns)
    if netns is None:
        conn = _pool.take()
        try:
            yield conn
        except OSError as e:
            raise HostError(f"{what}: {reason(e)}") from e
        finally:
            _pool.give(conn)
        return
    try:
        sock = socket_in(netns)
    except OSError as e:
        raise HostError(f"{what}: cannot enter the network namespace: {reason(e)}") from e
    conn = Rtnl(sock)
    try:
        yield conn
    except OSError as e:
        raise HostError(f"{what}: {reason(e)}") from e
    finally:
        conn.close()
