"""`python -m pincus.host.nsexec NETNS COMMAND...`: what `ip netns exec` does, also in a chroot.

Runs COMMAND in the named network namespace with a private mount namespace whose /sys shows
that network namespace. `ip netns exec` insists on making / a slave mount first, which fails
where / is not a mount point (a chroot, as on a newcomer's check of a fresh machine); this
falls back to making each visible mount a slave, and stacks the new /sys instead of unmounting.
"""

from __future__ import annotations

import os
import sys

from pincus.host.container_init import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_REC,
    check,
    libc,
    make_mounts_slave,
    mount,
)

_MS_BIND = 0x1000


def enter(netns: str) -> None:
    path = netns if netns.startswith("/") else f"/run/netns/{netns}"
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(libc.setns(fd, CLONE_NEWNET), f"enter network namespace {path}")
    finally:
        os.close(fd)
    check(libc.unshare(CLONE_NEWNS), "unshare mount namespace")
    make_mounts_slave()
    # The new /sys hides the cgroup mounts under it: keep them, as a daemon run in here needs them.
    try:
        cgroup: int | None = os.open("/sys/fs/cgroup", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        cgroup = None
    try:
        mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if cgroup is not None and os.path.isdir("/sys/fs/cgroup"):
            mount(f"/proc/self/fd/{cgroup}", "/sys/fs/cgroup", None, _MS_BIND | MS_REC)
    finally:
        if cgroup is not None:
            os.close(cgroup)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m pincus.host.nsexec NETNS COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        enter(argv[0])
    except Exception as e:
        print(f"nsexec: {e}", file=sys.stderr)
        return 1
    try:
        os.execvp(argv[1], argv[1:])
    except OSError as e:
        print(f"nsexec: {argv[1]}: {e.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
