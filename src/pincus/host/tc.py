"""Traffic limits on a NIC's host-side interface (a container's veth end or a VM's TAP) with tc.

Directions follow Incus, seen from the instance; on the host-side interface they swap:

- ``ingress_bps`` (into the instance) is the host end's *egress*: a ``tbf`` root qdisc
  (handle ``1:``) on the host end.
- ``egress_bps`` (out of the instance) is the host end's *ingress*. With the tc ``police``
  action (``use_police``) a u32 match-all filter polices it on an ``ingress`` qdisc. Without it
  (this project's kernel has no CONFIG_NET_ACT_POLICE) the same filter redirects the host end's
  ingress with ``mirred`` to an IFB device of the caller's name, and a ``tbf`` on the IFB shapes
  it; the IFB hands the packets back to the host end's receive path afterwards. The IFB joins the
  link group the host end leads (links.port_group), so deleting the host end deletes its IFB in the
  same kernel batch.
- ``priority`` sets ``skb->priority`` of packets from the instance with host/bpf.py's program in
  a ``cls_bpf`` filter (preference 1) on the host end's ingress. The program answers "no match",
  so the redirect/police filter (preference 2) still sees every packet: the two chain without
  knowing of each other.
- ``limits.max`` is the caller's business: it passes the same rate in both fields.

Every call replaces whatever pincus set on the host end before (the host end is pincus's own
interface, so its root qdisc, ingress qdisc and filters are too), so a live update is just
``apply_limits`` again; an existing tbf is changed in place, so traffic is never unshaped
during an update. A failure undoes *everything* on the host end and the IFB, including limits
from an earlier call, and raises; the caller re-applies the old limits if it wants them.

Bucket size (burst) of every tbf/police: the bytes the rate carries in 10 ms (a few timer ticks,
so the shaper keeps the rate without starving between wake-ups), but never less than 16500
bytes: one frame of the largest MTU pincus allows (16384) plus an Ethernet and VLAN header must
fit into the bucket or tbf drops it outright, and a later MTU increase must not silently break
the limit. The queue behind a tbf holds 50 ms of traffic at the rate. A policer has no queue,
so its bucket is those 50 ms instead, but never less than 256 KiB: a veth hands the policer
whole GSO packets of up to 64 KiB, and TCP sends them back to back. Measured in the test guest
(tests/guestkernel, 10 Mbit/s, 3 s of one TCP stream): a 62.5 KB bucket carried 2.9 Mbit/s,
128 KiB 5.3, 256 KiB 10.5, 1 MiB (Incus's fixed burst) 12.6, the excess being the burst itself.

Why netlink in-process rather than tc(8): tc dumps every link of the namespace at start-up
(measured: 3 ms per call with a few links, 13 ms with 1000), so a per-NIC call would cost more
the more NICs exist. Here every message addresses one interface by index or name, nothing is
ever dumped, and a call costs well under a millisecond of netlink plus, for a new IFB or a
deleted one, the kernel's own link creation/unregistration (the latter waits for an RCU grace
period, ~20 ms, so an update that keeps an egress limit keeps its IFB).

The requests go through host/netlink.py, which also opens the socket inside ``netns`` when one
is given (any namespace handle path, not only ``ip netns`` names; the caller's thread never moves).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pincus.errors import HostError, InvalidError, UnsupportedError
from pincus.host import bpf, links, netlink, sysctl
from pincus.reverter import Reverter

log = logging.getLogger(__name__)

MIN_RATE_BPS = 1_000  # below this the bucket of one large frame takes minutes to fill
MAX_RATE_BPS = 2**63 - 1  # everything a bit rate key accepts; tbf takes 64-bit rates
MAX_PRIORITY = 2**32 - 1  # skb->priority is a u32

_BURST_TIME_S = 0.010
# Largest pincus MTU + Ethernet header + VLAN tag is 16402; the rest is room for tc(8) rounding
# the bucket to timer ticks when it reads it back (it can come out a byte short).
_MIN_BURST = 16500
_MAX_BURST = 256 * 2**20  # the burst is a u32; 256 MiB is still >2 ms at 1 Tbit/s
_QUEUE_TIME_S = 0.050
_POLICE_MTU = 65536  # GRO/GSO packets reach the ingress hook whole; don't count them as too big
_MIN_POLICE_BURST = 256 * 1024  # four GSO packets (module doc)

_ROOT_HANDLE = 0x00010000  # 1:
_INGRESS_HANDLE = 0xFFFF0000  # ffff:, also the parent of ingress filters
_PREF_PRIORITY = 1
_PREF_LIMIT = 2
_IFB_PREFIX_OF_HOST = "ifb"  # the host's own ifb0/ifb1 (from the ifb module): never ours


@dataclass(frozen=True)
class Limits:
    """Rates in bit/s (None = unlimited) and skb priority (None = leave the kernel's)."""

    ingress_bps: int | None = None
    egress_bps: int | None = None
    priority: int | None = None


# --- public operations -----------------------------------------------------------------------

_police_available: bool | None = None
_police_lock = threading.Lock()


def has_police(netns: str | None = None) -> bool:
    """Whether the kernel has the tc ``police`` action; probed once per process.

    The probe attaches a police filter to ``lo`` of a throw-away network namespace, so it
    touches nothing real. ``netns`` is accepted for symmetry and ignored: tc actions are
    kernel-wide.
    """
    del netns
    global _police_available
    with _police_lock:
        if _police_available is None:
            try:
                conn = netlink.Rtnl(netlink.socket_in_new_netns())
            except OSError as e:
                raise HostError(f"probe the tc police action: {netlink.reason(e)}") from e
            try:
                _police_available = _probe_police(_Tc(conn))
            finally:
                conn.close()
        return _police_available


def apply_limits(
    dev: str, limits: Limits, ifb_name: str, use_police: bool, netns: str | None = None, fresh: bool = False
) -> None:
    """Make `dev` carry exactly `limits`, replacing what pincus set on it before.

    `fresh` says `dev` was just created and carries no qdisc yet: nothing of ours to drop first
    (one request fewer per NIC start).

    `ifb_name` is the IFB this NIC uses when it needs one (egress limit without police); it is
    created or deleted as needed. Raises InvalidError for values tc cannot express,
    UnsupportedError for a missing kernel feature, HostError for any other failure (after
    removing everything this module may have put on `dev` and the IFB).
    """
    _check_limits(limits)
    _check_ifb_name(ifb_name)
    with netlink.rtnl(f"apply limits on {dev}", netns) as conn:
        _apply(_Tc(conn), dev, limits, ifb_name, use_police, own_netns=netns is None, fresh=fresh)


def clear_limits(dev: str, ifb_name: str, netns: str | None = None) -> None:
    """Remove the limits pincus set on `dev` and delete its IFB; anything missing is fine."""
    _check_ifb_name(ifb_name)
    with netlink.rtnl(f"clear limits on {dev}", netns) as conn:
        _clear(_Tc(conn), dev, ifb_name)


def burst_bytes(rate_bps: int) -> int:
    """Bucket size for a rate: 10 ms of traffic, at least one largest frame (module doc)."""
    return min(max(int(rate_bps * _BURST_TIME_S) // 8, _MIN_BURST), _MAX_BURST)


# --- input checks ------------------------------------------------------------------------------


def _check_limits(limits: Limits) -> None:
    for what, rate in (("ingress", limits.ingress_bps), ("egress", limits.egress_bps)):
        if rate is not None and not MIN_RATE_BPS <= rate <= MAX_RATE_BPS:
            raise InvalidError(
                f"{what} rate {rate} bit/s is outside what tc can shape "
                f"({MIN_RATE_BPS} bit/s to {MAX_RATE_BPS} bit/s)"
            )
    if limits.priority is not None and not 0 <= limits.priority <= MAX_PRIORITY:
        raise InvalidError(f"priority {limits.priority} is outside 0-{MAX_PRIORITY}")


def _check_ifb_name(ifb_name: str) -> None:
    # A guard against a caller bug that would otherwise delete or reshape the host's own IFBs.
    if ifb_name.startswith(_IFB_PREFIX_OF_HOST):
        raise InvalidError(f'IFB name "{ifb_name}" is reserved for the host\'s own ifb devices')


# --- the operations, as netlink steps --------------------------------------------------------------


def _apply(
    nl: _Tc,
    dev: str,
    limits: Limits,
    ifb: str,
    use_police: bool,
    own_netns: bool = False,
    fresh: bool = False,
) -> None:
    op = f"apply limits on {dev}"
    link = links.lookup_link(nl.conn, dev, resolve_master=False)
    if link is None:
        raise HostError(f"{op}: no such device")
    index = link.index
    # Loaded before anything changes: a kernel without BPF fails here with nothing to undo.
    prog_fd = bpf.load_priority_program(limits.priority) if limits.priority is not None else None
    try:
        with Reverter() as undo:
            undo.add(_clear, nl, dev, ifb)
            use_ifb = limits.egress_bps is not None and not use_police
            ifb_index = None
            if use_ifb:
                # The IFB joins the link group `dev` leads, so deleting `dev` takes the IFB along
                # in the same kernel batch (links.port_group): a NIC stop waits once, not twice.
                group = links.port_group(index)
                if link.group != group:
                    _step(op, "set the port's link group", links.set_group_by_index, nl.conn, index, group)
                ifb_index = _ensure_ifb(nl, op, ifb, own_netns, group)

            # The host end's egress = traffic into the instance.
            if limits.ingress_bps is not None:
                # Replace changes our existing tbf in place, or grafts a new one on the default.
                _step(
                    op,
                    "set tbf root qdisc",
                    nl.qdisc_replace,
                    index,
                    _TC_H_ROOT,
                    _ROOT_HANDLE,
                    "tbf",
                    _tbf_options(limits.ingress_bps),
                )
            elif not fresh:
                _step(op, "delete root qdisc", nl.qdisc_delete, index, _TC_H_ROOT)

            # The host end's ingress = traffic out of the instance.
            if ifb_index is not None and limits.egress_bps is not None:
                # Shape on the IFB before anything is redirected to it.
                _step(
                    op,
                    f"set tbf root qdisc on IFB {ifb}",
                    nl.qdisc_replace,
                    ifb_index,
                    _TC_H_ROOT,
                    _ROOT_HANDLE,
                    "tbf",
                    _tbf_options(limits.egress_bps),
                )
            # Dropping the ingress qdisc drops every filter of ours on it, whatever an earlier
            # call put there; the new set goes on a fresh one.
            if not fresh:
                _step(op, "delete ingress qdisc", nl.qdisc_delete, index, _TC_H_INGRESS)
            if limits.egress_bps is not None or limits.priority is not None:
                _step(
                    op,
                    "add ingress qdisc",
                    nl.qdisc_add,
                    index,
                    _TC_H_INGRESS,
                    _INGRESS_HANDLE,
                    "ingress",
                    b"",
                )
            if prog_fd is not None and limits.priority is not None:
                _add_priority_filter(nl, op, index, prog_fd, limits.priority)
            if ifb_index is not None:
                _step(
                    op,
                    f"add filter redirecting ingress to IFB {ifb}",
                    nl.filter_add,
                    index,
                    _PREF_LIMIT,
                    "u32",
                    _u32_match_all(_mirred_redirect(ifb_index)),
                )
            elif limits.egress_bps is not None:
                _step(
                    op,
                    "add police filter",
                    nl.filter_add,
                    index,
                    _PREF_LIMIT,
                    "u32",
                    _u32_match_all(_police(limits.egress_bps)),
                )

            if ifb_index is None:
                _delete_ifb(nl, op, ifb)
            undo.success()
    finally:
        if prog_fd is not None:
            os.close(prog_fd)  # the filter holds its own reference to the program


def _clear(nl: _Tc, dev: str, ifb: str) -> None:
    op = f"clear limits on {dev}"
    link = links.lookup_link(nl.conn, dev, resolve_master=False)
    if link is not None:
        for step, parent in (("delete root qdisc", _TC_H_ROOT), ("delete ingress qdisc", _TC_H_INGRESS)):
            try:
                nl.qdisc_delete(link.index, parent)
            except netlink.NetlinkError as e:
                if e.errno != errno.ENODEV:  # the device vanished meanwhile: nothing to clear
                    raise HostError(f"{op}: {step}: {e}") from e
    _delete_ifb(nl, op, ifb)


def _step(op: str, step: str, fn: Callable[..., None], *args: object) -> None:
    try:
        fn(*args)
    except netlink.NetlinkError as e:
        raise HostError(f"{op}: {step}: {e}") from e


def _ensure_ifb(nl: _Tc, op: str, ifb: str, own_netns: bool, group: int) -> int:
    """Create the IFB (up) in link group `group`, or take the existing one of that name if it is
    an IFB (and put it in `group`); its index.

    In our own namespace the IFB comes up without IPv6: a link-local address on every IFB makes
    each later IPv6 change in the namespace dearer, so NIC #500 would pay for #1-#499.
    """
    try:
        index = links.add_link(nl.conn, ifb, "ifb", up=not own_netns, group=group)
        if own_netns:
            _disable_ipv6(ifb)
        if index:  # new, and the kernel said which index: kind, group and state are ours
            if own_netns:
                _step(op, f"set IFB {ifb} up", links.set_up_by_index, nl.conn, index)
            return index
    except netlink.NetlinkError as e:
        if e.errno == errno.EOPNOTSUPP:
            raise UnsupportedError("IFB devices are not supported by this kernel") from e
        if e.errno != errno.EEXIST:
            raise HostError(f"{op}: add IFB {ifb}: {e}") from e
    link = links.lookup_link(nl.conn, ifb, resolve_master=False)
    if link is None:
        raise HostError(f"{op}: add IFB {ifb}: it vanished right after creation")
    if link.kind != "ifb":
        raise HostError(
            f"{op}: add IFB {ifb}: a device of that name exists and is not an IFB "
            f"(kind {link.kind or 'none'})"
        )
    if link.group != group:  # left by a port that is gone (its ifindex led another group)
        _step(op, f"set link group of IFB {ifb}", links.set_group_by_index, nl.conn, link.index, group)
    if not link.up:
        _step(op, f"set IFB {ifb} up", links.set_up_by_index, nl.conn, link.index)
    return link.index


def _disable_ipv6(name: str) -> None:
    if os.path.isdir("/proc/sys/net/ipv6"):  # else no IPv6 in this kernel, nothing to turn off
        sysctl.set_ipv6_disabled(name)


def _delete_ifb(nl: _Tc, op: str, ifb: str) -> None:
    link = links.lookup_link(nl.conn, ifb, resolve_master=False)
    if link is None:
        return
    if link.kind != "ifb":
        # Never delete something we did not make, even when asked to clean up under its name.
        log.warning("%s: not deleting %s: it is a %s device, not an IFB", op, ifb, link.kind)
        return
    try:
        links.delete_by_index(nl.conn, link.index)
    except netlink.NetlinkError as e:
        if e.errno != errno.ENODEV:
            raise HostError(f"{op}: delete IFB {ifb}: {e}") from e


def _probe_police(nl: _Tc) -> bool:
    lo = 1  # the loopback device of a new namespace
    try:
        nl.qdisc_add(lo, _TC_H_INGRESS, _INGRESS_HANDLE, "ingress", b"")
        nl.filter_add(lo, _PREF_LIMIT, "u32", _u32_match_all(_police(1_000_000)))
    except netlink.NetlinkError as e:
        log.info("tc police action unavailable: %s", e)
        return False
    return True


# --- tc message contents (see linux/pkt_sched.h, pkt_cls.h, tc_act/tc_mirred.h) ---------------------

_TC_H_ROOT = 0xFFFFFFFF
_TC_H_INGRESS = 0xFFFFFFF1
_TCA_KIND, _TCA_OPTIONS = 1, 2
_TCA_TBF_PARMS, _TCA_TBF_RATE64, _TCA_TBF_BURST = 1, 4, 6
_TC_LINKLAYER_ETHERNET = 1  # stated, so the kernel needs no rate table to guess it
_TCA_U32_SEL, _TCA_U32_ACT = 5, 7
_TC_U32_TERMINAL = 1
_TCA_ACT_KIND, _TCA_ACT_OPTIONS = 1, 2
_TCA_MIRRED_PARMS = 2
_TCA_EGRESS_REDIR = 1
_TC_ACT_SHOT, _TC_ACT_STOLEN = 2, 4
_TCA_POLICE_TBF, _TCA_POLICE_RATE, _TCA_POLICE_RATE64 = 1, 2, 8
_TC_RTAB_SIZE = 1024
_PSCHED_NS_PER_TICK = 64  # PSCHED_SHIFT 6
_TCA_BPF_FD, _TCA_BPF_NAME, _TCA_BPF_FLAGS = 6, 7, 8
_ETH_P_ALL = 0x0003
_U32_MAX = 2**32 - 1


def _ratespec(rate_bps: int, cell_log: int = 0) -> tuple[bytes, bytes]:
    """(struct tc_ratespec, 64-bit rate attribute payload or b"") for a rate in bit/s."""
    bytes_ps = max(rate_bps // 8, 1)
    spec = struct.pack("=BBHhHI", cell_log, _TC_LINKLAYER_ETHERNET, 0, 0, 0, min(bytes_ps, _U32_MAX))
    return spec, (struct.pack("=Q", bytes_ps) if bytes_ps >= _U32_MAX else b"")


def _tbf_options(rate_bps: int) -> bytes:
    burst = burst_bytes(rate_bps)
    spec, rate64 = _ratespec(rate_bps)
    limit = min(int(rate_bps * _QUEUE_TIME_S) // 8 + burst, _U32_MAX)
    # buffer (in ticks) is left 0: TCA_TBF_BURST gives the bucket in bytes and wins over it.
    qopt = spec + bytes(12) + struct.pack("=III", limit, 0, 0)
    return (
        netlink.attr(_TCA_TBF_PARMS, qopt)
        + (netlink.attr(_TCA_TBF_RATE64, rate64) if rate64 else b"")
        + netlink.attr(_TCA_TBF_BURST, struct.pack("=I", burst))
    )


def _u32_match_all(action: bytes) -> bytes:
    # One key with mask 0 matches every packet; TERMINAL makes the node run its actions.
    sel = struct.pack("=BBBxHHhhI", _TC_U32_TERMINAL, 0, 1, 0, 0, 0, 0, 0) + bytes(16)
    return netlink.attr(_TCA_U32_SEL, sel) + netlink.nest(_TCA_U32_ACT, netlink.nest(1, action))


def _mirred_redirect(to_index: int) -> bytes:
    parms = struct.pack("=IIiiiiI", 0, 0, _TC_ACT_STOLEN, 0, 0, _TCA_EGRESS_REDIR, to_index)
    options = netlink.nest(_TCA_ACT_OPTIONS, netlink.attr(_TCA_MIRRED_PARMS, parms))
    return netlink.text(_TCA_ACT_KIND, "mirred") + options


def police_burst_bytes(rate_bps: int) -> int:
    """Bucket size of a policer: 50 ms of traffic, at least four GSO packets (module doc)."""
    return min(max(int(rate_bps * _QUEUE_TIME_S) // 8, _MIN_POLICE_BURST), _MAX_BURST)


def _police(rate_bps: int) -> bytes:
    burst = police_burst_bytes(rate_bps)
    # The kernel insists on a rate table (1 KiB) but computes from the rate itself since 3.x; the
    # table's cell_log must merely be non-zero for it to be accepted.
    spec, rate64 = _ratespec(rate_bps, cell_log=3)
    # The police bucket is given as time, in scheduler ticks.
    burst_ticks = min(burst * 8 * 10**9 // rate_bps // _PSCHED_NS_PER_TICK, _U32_MAX)
    # struct tc_police: exceeding packets are dropped (TC_ACT_SHOT); conforming ones pass.
    parm = (
        struct.pack("=IiIII", 0, _TC_ACT_SHOT, 0, burst_ticks, _POLICE_MTU)
        + spec
        + bytes(12)
        + struct.pack("=iiI", 0, 0, 0)
    )
    opts = netlink.attr(_TCA_POLICE_TBF, parm) + netlink.attr(_TCA_POLICE_RATE, bytes(_TC_RTAB_SIZE))
    if rate64:
        opts += netlink.attr(_TCA_POLICE_RATE64, rate64)
    return netlink.attr(_TCA_ACT_KIND, b"police\0") + netlink.nest(_TCA_ACT_OPTIONS, opts)


def _add_priority_filter(nl: _Tc, op: str, index: int, prog_fd: int, priority: int) -> None:
    opts = (
        netlink.attr(_TCA_BPF_FD, struct.pack("=I", prog_fd))
        + netlink.attr(_TCA_BPF_NAME, f"pincus-priority-{priority}".encode() + b"\0")
        + netlink.attr(_TCA_BPF_FLAGS, struct.pack("=I", 0))
    )  # not direct-action: the filter chain goes on
    try:
        nl.filter_add(index, _PREF_PRIORITY, "bpf", opts)
    except netlink.NetlinkError as e:
        if e.errno == errno.ENOENT and "classifier not found" in e.ext:
            raise UnsupportedError("the tc bpf classifier is not supported by this kernel") from e
        raise HostError(f"{op}: add priority filter: {e}") from e


# --- tc requests over host/netlink.py ------------------------------------------------------------

_RTM_NEWQDISC, _RTM_DELQDISC = 36, 37
_RTM_NEWTFILTER = 44
_TCMSG = struct.Struct("=BxxxiIII")  # family, index, handle, parent, info


def _tcmsg(index: int, handle: int, parent: int, info: int = 0) -> bytes:
    return _TCMSG.pack(socket.AF_UNSPEC, index, handle, parent, info)


class _Tc:
    """The qdiscs and filters this module changes, one request each, on one socket."""

    def __init__(self, conn: netlink.Rtnl) -> None:
        self.conn = conn

    def change(self, msg_type: int, flags: int, body: bytes) -> None:
        self.conn.request(msg_type, body, flags)

    # qdiscs and filters

    def qdisc_add(self, index: int, parent: int, handle: int, kind: str, options: bytes) -> None:
        self._qdisc(netlink.NLM_F_CREATE | netlink.NLM_F_EXCL, index, parent, handle, kind, options)

    def qdisc_replace(self, index: int, parent: int, handle: int, kind: str, options: bytes) -> None:
        self._qdisc(netlink.NLM_F_CREATE | netlink.NLM_F_REPLACE, index, parent, handle, kind, options)

    def _qdisc(self, flags: int, index: int, parent: int, handle: int, kind: str, options: bytes) -> None:
        body = _tcmsg(index, handle, parent) + netlink.text(_TCA_KIND, kind)
        if options:
            body += netlink.nest(_TCA_OPTIONS, options)
        self.change(_RTM_NEWQDISC, flags, body)

    def qdisc_delete(self, index: int, parent: int) -> None:
        """Delete the root or ingress qdisc; having none (only the kernel's default) is fine."""
        try:
            self.change(_RTM_DELQDISC, 0, _tcmsg(index, 0, parent))
        except netlink.NetlinkError as e:
            if e.errno != errno.ENOENT:  # "handle of zero" (default root) / no ingress qdisc
                raise

    def filter_add(self, index: int, pref: int, kind: str, options: bytes) -> None:
        info = (pref << 16) | socket.htons(_ETH_P_ALL)
        body = (
            _tcmsg(index, 0, _INGRESS_HANDLE, info)
            + netlink.text(_TCA_KIND, kind)
            + netlink.nest(_TCA_OPTIONS, options)
        )
        self.change(_RTM_NEWTFILTER, netlink.NLM_F_CREATE | netlink.NLM_F_EXCL, body)


_RTM_GETQDISC = 38


def qdiscs(dev: str, netns: str | None = None) -> dict[str, str]:
    """ "root" and "ingress" -> the kind of that qdisc on dev (what apply_limits put there, or the
    kernel's default); {} if dev does not exist. Read back for the drift check."""
    with netlink.rtnl(f"list qdiscs of {dev}", netns) as conn:
        link = links.lookup_link(conn, dev)
        if link is None:
            return {}
        replies = conn.request(_RTM_GETQDISC, _tcmsg(0, 0, 0), netlink.NLM_F_DUMP)
    out: dict[str, str] = {}
    where = {_TC_H_ROOT: "root", _TC_H_INGRESS: "ingress"}
    for body in replies:
        if len(body) < _TCMSG.size:
            continue
        _, index, _, parent, _ = _TCMSG.unpack_from(body)
        kind = netlink.attrs(body, _TCMSG.size).get(_TCA_KIND)
        if index == link.index and parent in where and kind:
            out[where[parent]] = netlink.cstr(kind)
    return out
