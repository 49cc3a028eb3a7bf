"""TAP devices for QEMU's `-netdev tap,ifname=`, made with the /dev/net/tun ioctls (rtnetlink
cannot create them)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from pincus.errors import HostError, InvalidError
from pincus.host import checks, links, netlink

# linux/if_tun.h
_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_IFF_TUN_EXCL = 0x8000


def create_tap(name: str, mtu: int | None = None) -> None:
    """A persistent TAP device for QEMU's `-netdev tap,ifname=`: single queue, vnet_hdr.

    Fails with "File exists" when any link of that name exists (a plain TUNSETIFF would
    silently attach to an existing TAP).
    """
    checks.interface_name(name)
    if mtu is not None and mtu <= 0:
        raise InvalidError(f"Invalid MTU {mtu}")
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
        raise HostError(f"{what}: {netlink.reason(e)}") from e
    if mtu is not None:
        try:
            links.set_mtu(name, mtu)
        except HostError as e:
            links.delete_link(name)  # leave nothing half-made behind
            raise HostError(f"{what}: {e}") from e
