"""Containers on their own root from a busybox volume, unprivileged by default (real kernel)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pincus.host import process
from pincus.host.idmap import IDMAPPED_ENV
from pincus.storage import paths
from tests.integration.helpers import config, in_container, ping
from tests.pincus_testlib import Daemon, NetNS, cleanup_dir
from tests.rootfslib import MARKER, build_volume
from tests.wsclient import WSClient

HOST_MARKER = Path("/etc/pincus-host-marker")
POOL = "default"
TEMPLATES = (
    "  /etc/hostname:\n    when: [create, copy]\n    template: hostname.tpl\n"
    "  /etc/motd:\n    when: [start]\n    template: motd.tpl\n"
)


class ChownDaemon(Daemon):
    """A pincusd that chown-shifts volumes even where idmapped mounts work (the fallback)."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, IDMAPPED_ENV: "off"}


@pytest.fixture(params=["idmapped", "chown"])
def any_daemon(request: pytest.FixtureRequest, netns: NetNS) -> Iterator[Daemon]:
    """A daemon of each kind: idmapped mounts (this kernel and ext4 take them), chown shift."""
    kind = ChownDaemon if request.param == "chown" else Daemon
    d = kind(netns, Path(tempfile.mkdtemp(prefix="pincus-test-")))
    try:
        d.start()
        yield d
    finally:
        d.shut_down()
        cleanup_dir(d.dir)


@pytest.fixture
def chown_daemon(netns: NetNS) -> Iterator[Daemon]:
    d = ChownDaemon(netns, Path(tempfile.mkdtemp(prefix="pincus-test-")))
    try:
        d.start()
        yield d
    finally:
        d.shut_down()
        cleanup_dir(d.dir)


@pytest.fixture
def host_marker() -> Iterator[Path]:
    """A file only the host's root has: a container must not see it."""
    created = not HOST_MARKER.exists()
    if created:
        HOST_MARKER.write_text("host\n")
    try:
        yield HOST_MARKER
    finally:
        if created:
            HOST_MARKER.unlink(missing_ok=True)


def volume(daemon: Daemon, name: str) -> Path:
    return paths.instance_volume(daemon.dir, POOL, name)


def ensure_pool(daemon: Daemon) -> None:
    if not (daemon.dir / "storage-pools" / POOL).exists():
        daemon.cli("storage", "create", POOL, "dir")


def make_container(
    daemon: Daemon,
    name: str,
    *keys: str,
    init: bool = True,
    templates: dict[str, str] | None = None,
    metadata_templates: str = "",
) -> Path:
    """An instance with a root disk on POOL (an empty volume) filled with a busybox root."""
    ensure_pool(daemon)
    daemon.cli("init", name, "--empty", "-s", POOL, *(a for k in keys for a in ("-c", k)))
    return build_volume(
        volume(daemon, name), init=init, templates=templates, metadata_templates=metadata_templates
    )


def pid_of(daemon: Daemon, name: str) -> int:
    pid = daemon.api("GET", f"/1.0/instances/{name}/state")[1]["metadata"]["pid"]
    assert isinstance(pid, int) and pid > 1
    return pid


def mounts_naming(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line]


def test_unprivileged_container_runs_the_images_init_on_its_own_root(
    any_daemon: Daemon, host_marker: Path
) -> None:
    daemon = any_daemon
    idmapped = not isinstance(daemon, ChownDaemon)
    vol = make_container(daemon, "c1")
    daemon.cli("start", "c1")
    try:
        pid = pid_of(daemon, "c1")
        # pid 1 is the image's init (busybox), seen from the host and from inside.
        assert os.readlink(f"/proc/{pid}/exe") == "/bin/busybox"
        assert Path(f"/proc/{pid}/root/etc/marker").read_text().strip() == MARKER
        assert in_container(daemon, "c1", "cat", "/etc/marker").strip() == MARKER
        assert in_container(daemon, "c1", "readlink", "/proc/1/exe").strip() == "/bin/busybox"
        # uid 0 inside is the first id of root's subuid range; the host's root is unmapped.
        uid_map = Path(f"/proc/{pid}/uid_map").read_text().split()
        cfg = config(daemon, "c1")
        current = json.loads(cfg["volatile.idmap.current"])
        base = current[0]["Hostid"]
        assert uid_map == ["0", str(base), "65536"] and base > 0
        assert Path(f"/proc/{pid}/gid_map").read_text().split() == ["0", str(base), "65536"]
        # chown: the volume was shifted to the mapped root (symlinks too) and a file made inside
        # belongs to the mapped uid on the host. idmapped: the files stay as the image has them,
        # the mount maps them.
        on_disk = 0 if idmapped else base
        assert json.loads(cfg["volatile.last_state.idmap"]) == ([] if idmapped else current)
        assert os.lstat(vol / "rootfs/etc/marker").st_uid == on_disk
        assert os.lstat(vol / "rootfs/bin/sh").st_uid == on_disk
        in_container(daemon, "c1", "sh", "-c", "echo hi > /root/made-inside")
        st = os.stat(vol / "rootfs/root/made-inside")
        assert (st.st_uid, st.st_gid) == (on_disk, on_disk)
        assert in_container(daemon, "c1", "stat", "-c", "%u", "/etc/marker").strip() == "0"
        if idmapped:
            assert "idmapped" in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()[0] or any(
                "idmapped" in line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            )
        assert in_container(daemon, "c1", "id", "-u").strip() == "0"
        # The host's files are out of reach.
        assert host_marker.exists()
        r = daemon.cli("exec", "c1", "--", "cat", str(host_marker), check=False)
        assert r.returncode != 0
        assert in_container(daemon, "c1", "sh", "-c", "ls /sys/class/net").split() == ["lo"]
        assert in_container(daemon, "c1", "hostname").strip() == "c1"
        assert in_container(daemon, "c1", "sh", "-c", "cd /tmp && pwd").strip() == "/tmp"
        r = daemon.cli(
            "exec",
            "c1",
            "--cwd",
            "/root",
            "--env",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            'echo "$GREETING $(pwd)"',
        )
        assert r.stdout == "hi /root\n"
        # busybox init ran its sysinit action.
        assert in_container(daemon, "c1", "ls", "-d", "/run/booted").strip() == "/run/booted"
        dev = in_container(daemon, "c1", "ls", "/dev").split()
        assert {"null", "zero", "urandom", "ptmx", "pts", "shm", "console"} <= set(dev)
        assert in_container(daemon, "c1", "sh", "-c", "echo x > /dev/null && echo ok").strip() == "ok"
    finally:
        daemon.cli("stop", "c1", "--timeout", "10")
    # Stopped: nothing left (processes, mounts, the netns handle).
    assert not Path(f"/proc/{pid}").exists()
    assert mounts_naming(daemon.dir) == []
    assert "c1,STOPPED" in daemon.cli("list", "--format=csv").stdout
    # The restart does not shift again, and the container still works.
    daemon.cli("start", "c1")
    try:
        assert in_container(daemon, "c1", "cat", "/root/made-inside").strip() == "hi"
        assert os.stat(vol / "rootfs/root/made-inside").st_uid == on_disk
    finally:
        daemon.cli("stop", "c1", "-f")
    assert mounts_naming(daemon.dir) == []


def test_privileged_and_isolated_maps_shift_the_volume_back_and_forth(chown_daemon: Daemon) -> None:
    daemon = chown_daemon
    vol = make_container(daemon, "c1")
    (vol / "rootfs/bin/su-test").write_text("#!/bin/sh\n")
    os.chmod(vol / "rootfs/bin/su-test", 0o4755)
    daemon.cli("start", "c1")
    daemon.cli("stop", "c1", "-f")
    shared = json.loads(config(daemon, "c1")["volatile.idmap.current"])[0]["Hostid"]
    st = os.lstat(vol / "rootfs/bin/su-test")
    assert st.st_uid == shared and st.st_mode & 0o7777 == 0o4755
    # Isolated: a block of its own, above the shared one; the volume follows.
    daemon.cli("config", "set", "c1", "security.idmap.isolated=true")
    daemon.cli("start", "c1")
    try:
        cfg = config(daemon, "c1")
        base = int(cfg["volatile.idmap.base"])
        assert base >= shared + 65536
        pid = pid_of(daemon, "c1")
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", str(base), "65536"]
        assert os.lstat(vol / "rootfs/bin/su-test").st_uid == base
        assert os.lstat(vol / "rootfs/bin/su-test").st_mode & 0o7777 == 0o4755
    finally:
        daemon.cli("stop", "c1", "-f")
    # Another isolated instance gets another block; one asking for c1's block is refused.
    make_container(daemon, "c2", "security.idmap.isolated=true")
    daemon.cli("start", "c2")
    try:
        assert int(config(daemon, "c2")["volatile.idmap.base"]) >= base + 65536
    finally:
        daemon.cli("stop", "c2", "-f")
    make_container(daemon, "c3", f"security.idmap.base={base + 1000}")
    before = config(daemon, "c3")
    msg = daemon.fails("start", "c3")
    assert "overlaps" in msg and '"c1"' in msg.replace("'", '"')
    assert config(daemon, "c3") == before
    assert os.lstat(volume(daemon, "c3") / "rootfs/etc/marker").st_uid == 0  # not shifted
    # Privileged: no user namespace, and the files are root's again.
    daemon.cli("config", "set", "c1", "security.privileged=true")
    daemon.cli("start", "c1")
    try:
        pid = pid_of(daemon, "c1")
        assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user")
        assert os.lstat(vol / "rootfs/etc/marker").st_uid == 0
        assert os.lstat(vol / "rootfs/bin/su-test").st_mode & 0o7777 == 0o4755
        assert in_container(daemon, "c1", "cat", "/etc/marker").strip() == MARKER
    finally:
        daemon.cli("stop", "c1", "-f")
    assert json.loads(config(daemon, "c1")["volatile.last_state.idmap"]) == []


def test_rootfs_without_init_is_refused_naming_the_path(daemon: Daemon) -> None:
    vol = make_container(daemon, "c1", init=False)
    before = config(daemon, "c1")
    msg = daemon.fails("start", "c1")
    assert "/sbin/init" in msg and str(vol / "rootfs") in msg
    assert config(daemon, "c1") == before
    assert "c1,STOPPED" in daemon.cli("list", "--format=csv").stdout
    assert mounts_naming(daemon.dir) == []
    assert os.lstat(vol / "rootfs/etc/marker").st_uid == 0  # refused before any shift


def set_volatile(daemon: Daemon, name: str, key: str, value: str) -> None:
    """What a create from an image sets (volatile.apply_template), for a volume filled by hand."""
    with sqlite3.connect(daemon.dir / "pincus.db") as db:
        (iid,) = db.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
        db.execute(
            "INSERT INTO instances_volatile (instance_id, key, value) VALUES (?, ?, ?)", (iid, key, value)
        )


def test_templates_apply_on_create_and_disk_devices_are_bound(daemon: Daemon, tmp_path: Path) -> None:
    vol = make_container(
        daemon,
        "c1",
        templates={"hostname.tpl": "{{ instance.name }}\n", "motd.tpl": "welcome to {{container.name}}\n"},
        metadata_templates=TEMPLATES,
    )
    set_volatile(daemon, "c1", "volatile.apply_template", "create")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("host data\n")
    daemon.cli("config", "device", "add", "c1", "data", "disk", f"source={shared}", "path=/mnt/data")
    daemon.cli(
        "config", "device", "add", "c1", "ro", "disk", f"source={shared}", "path=/mnt/ro", "readonly=true"
    )
    daemon.cli("start", "c1")
    try:
        assert in_container(daemon, "c1", "cat", "/etc/hostname") == "c1\n"
        assert in_container(daemon, "c1", "cat", "/etc/motd") == "welcome to c1\n"
        assert "volatile.apply_template" not in config(daemon, "c1")
        assert in_container(daemon, "c1", "cat", "/mnt/data/from-host").strip() == "host data"
        r = daemon.cli("exec", "c1", "--", "sh", "-c", "echo x > /mnt/ro/new", check=False)
        assert r.returncode != 0 and not (shared / "new").exists()
        # Root inside cannot lift it: the flag is locked by the user namespace's mount namespace.
        r = daemon.cli("exec", "c1", "--", "mount", "-o", "remount,bind,rw", "/mnt/ro", check=False)
        assert r.returncode != 0
        r = daemon.cli("exec", "c1", "--", "sh", "-c", "echo x > /mnt/ro/new", check=False)
        assert r.returncode != 0 and not (shared / "new").exists()
    finally:
        daemon.cli("stop", "c1", "-f")
    assert mounts_naming(shared) == []
    # The create trigger is spent: a restart keeps what the container made of /etc/hostname.
    (vol / "rootfs/etc/hostname").write_text("changed\n")
    daemon.cli("start", "c1")
    try:
        assert in_container(daemon, "c1", "cat", "/etc/hostname") == "changed\n"
    finally:
        daemon.cli("stop", "c1", "-f")


def _mount_points(pid: int) -> dict[str, str]:
    """The mounts of the container whose init is PID: mount point inside -> its options."""
    out = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        out[fields[4]] = fields[5]
    return out


def test_disk_hot_plug_binds_into_the_running_container_and_unplug_takes_it_out(
    any_daemon: Daemon, tmp_path: Path
) -> None:
    daemon = any_daemon
    make_container(daemon, "c1")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # the container's root is an unmapped stranger to it
    (shared / "from-host").write_text("host data\n")
    single = tmp_path / "single"
    single.write_text("one file\n")
    daemon.cli("start", "c1")
    try:
        pid = pid_of(daemon, "c1")
        daemon.cli("config", "device", "add", "c1", "data", "disk", f"source={shared}", "path=/mnt/x/data")
        daemon.cli(
            "config", "device", "add", "c1", "ro", "disk", f"source={shared}", "path=/mnt/ro", "readonly=true"
        )
        daemon.cli("config", "device", "add", "c1", "one", "disk", f"source={single}", "path=/etc/one")
        assert in_container(daemon, "c1", "cat", "/mnt/x/data/from-host") == "host data\n"
        assert in_container(daemon, "c1", "cat", "/mnt/ro/from-host") == "host data\n"
        assert in_container(daemon, "c1", "cat", "/etc/one") == "one file\n"
        mounts = _mount_points(pid)
        assert mounts["/mnt/x/data"].split(",")[0] == "rw" and mounts["/mnt/ro"].split(",")[0] == "ro"
        # Made inside as the container's root: the directories belong to it, not to the host's root.
        assert in_container(daemon, "c1", "stat", "-c", "%u", "/mnt/x") == "0\n"
        in_container(daemon, "c1", "sh", "-c", "echo inside > /mnt/x/data/made-inside")
        assert (shared / "made-inside").read_text() == "inside\n"
        r = daemon.cli("exec", "c1", "--", "sh", "-c", "echo x > /mnt/ro/new", check=False)
        assert r.returncode != 0 and "Read-only file system" in r.stderr and not (shared / "new").exists()
        # Locked: the container's root cannot make it writable again.
        r = daemon.cli("exec", "c1", "--", "mount", "-o", "remount,bind,rw", "/mnt/ro", check=False)
        assert r.returncode != 0 and _mount_points(pid)["/mnt/ro"].split(",")[0] == "ro"
        # The host (the test's and the daemon's mount namespaces) is unaffected.
        assert mounts_naming(shared) == [] and mounts_naming(single) == []
        daemon_mounts = Path(f"/proc/{daemon.proc.pid if daemon.proc else 0}/mountinfo").read_text()
        assert str(shared) not in daemon_mounts and "/mnt/x/data" not in daemon_mounts
        assert not Path("/mnt/x").exists()

        daemon.cli("config", "device", "remove", "c1", "data")
        daemon.cli("config", "device", "remove", "c1", "one")
        assert "/mnt/x/data" not in _mount_points(pid) and "/etc/one" not in _mount_points(pid)
        r = daemon.cli("exec", "c1", "--", "test", "-e", "/mnt/x/data/from-host", check=False)
        assert r.returncode == 1
        assert in_container(daemon, "c1", "cat", "/mnt/ro/from-host") == "host data\n"  # the other stays
        assert (shared / "from-host").read_text() == "host data\n" and single.read_text() == "one file\n"
        # A changed disk is re-plugged: now read-write at a new path.
        daemon.cli("config", "device", "set", "c1", "ro", "readonly=false", "path=/mnt/rw")
        mounts = _mount_points(pid)
        assert "/mnt/ro" not in mounts and mounts["/mnt/rw"].split(",")[0] == "rw"
        # A source that vanished: refused, nothing changed.
        gone = tmp_path / "gone"
        err = daemon.fails("config", "device", "add", "c1", "g", "disk", f"source={gone}", "path=/mnt/g")
        assert "does not exist" in err and "/mnt/g" not in _mount_points(pid)
    finally:
        daemon.cli("stop", "c1", "-f")
    assert mounts_naming(shared) == []


def test_disk_hot_plug_into_a_privileged_container(daemon: Daemon, tmp_path: Path) -> None:
    make_container(daemon, "c1", "security.privileged=true")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("host data\n")
    daemon.cli("start", "c1")
    try:
        pid = pid_of(daemon, "c1")
        daemon.cli(
            "config", "device", "add", "c1", "ro", "disk", f"source={shared}", "path=/mnt/ro", "readonly=true"
        )
        assert in_container(daemon, "c1", "cat", "/mnt/ro/from-host") == "host data\n"
        assert _mount_points(pid)["/mnt/ro"].split(",")[0] == "ro"
        r = daemon.cli("exec", "c1", "--", "sh", "-c", "echo x > /mnt/ro/new", check=False)
        assert r.returncode != 0 and not (shared / "new").exists()
        assert mounts_naming(shared) == []
        daemon.cli("config", "device", "remove", "c1", "ro")
        assert "/mnt/ro" not in _mount_points(pid)
    finally:
        daemon.cli("stop", "c1", "-f")


# --- every NIC path inside a user namespace -------------------------------------------------------

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && ip addr add "$ip/$mask" dev "$interface"
exit 0
"""


def test_unprivileged_containers_on_a_bridge_ping_each_other(daemon: Daemon, prefix: str) -> None:
    br = f"{prefix}br"
    daemon.ns.add_bridge(br)
    for i, name in enumerate(("c1", "c2")):
        make_container(daemon, name)
        daemon.cli(
            "config", "device", "add", name, "eth0", "nic", "nictype=bridged", f"parent={br}", "name=eth0"
        )
        daemon.cli("start", name)
        in_container(daemon, name, "ip", "addr", "add", f"10.250.40.{i + 2}/24", "dev", "eth0")
    try:
        assert ping(daemon, "c1", "10.250.40.3") and ping(daemon, "c2", "10.250.40.2")
        mac = config(daemon, "c1")["volatile.eth0.hwaddr"]
        assert in_container(daemon, "c1", "cat", "/sys/class/net/eth0/address").strip() == mac
        host_name = config(daemon, "c1")["volatile.eth0.host_name"]
    finally:
        daemon.cli("stop", "c1", "c2", "-f")
    assert daemon.ns.link(host_name) is None


def test_udhcpc_in_an_unprivileged_container_gets_its_static_allocation(daemon: Daemon, prefix: str) -> None:
    net = f"{prefix}br"
    daemon.cli("network", "create", net, "ipv4.address=10.250.41.1/24", "ipv6.address=none",
               "ipv4.dhcp.ranges=10.250.41.100-10.250.41.150")  # fmt: skip
    daemon.cli("network", "create", "phys0", "--type=physical", f"parent={net}")
    vol = make_container(daemon, "c1")
    (vol / "rootfs/bin/udhcpc-script").write_text(UDHCPC_SCRIPT)
    os.chmod(vol / "rootfs/bin/udhcpc-script", 0o755)
    daemon.cli("config", "device", "add", "c1", "eth0", "nic", "network=phys0", "name=eth0",
               "ipv4.address=10.250.41.7")  # fmt: skip
    daemon.cli("start", "c1")
    try:
        in_container(daemon, "c1", "udhcpc", "-q", "-n", "-t", "5", "-T", "1", "-i", "eth0",
                     "-s", "/bin/udhcpc-script")  # fmt: skip
        assert "inet 10.250.41.7/24" in in_container(daemon, "c1", "ip", "-4", "addr", "show", "dev", "eth0")
        assert ping(daemon, "c1", "10.250.41.1")
    finally:
        daemon.cli("stop", "c1", "-f")


def test_physical_nic_moves_into_an_unprivileged_container_and_back(daemon: Daemon, prefix: str) -> None:
    nic = f"{prefix}nic"
    daemon.ns.add_standin_nic(nic)
    daemon.ns.ip("link", "set", nic, "mtu", "1400")
    before = daemon.ns.link(nic)
    assert before is not None
    daemon.cli("network", "create", "lan", "--type=physical", f"parent={nic}")
    make_container(daemon, "c1")
    daemon.cli("config", "device", "add", "c1", "lan0", "nic", "network=lan", "name=lan0")
    daemon.cli("start", "c1")
    try:
        assert daemon.ns.link(nic) is None
        assert in_container(daemon, "c1", "cat", "/sys/class/net/lan0/mtu").strip() == "1400"
        in_container(daemon, "c1", "ip", "addr", "add", "10.250.42.2/24", "dev", "lan0")
    finally:
        daemon.cli("stop", "c1", "--timeout", "10")
    after = daemon.ns.link(nic)
    assert after is not None
    assert (after["ifname"], after["mtu"], after["address"]) == (
        before["ifname"],
        before["mtu"],
        before["address"],
    )


def test_unprivileged_container_survives_a_daemon_sigkill_and_stops_cleanly(daemon: Daemon) -> None:
    make_container(daemon, "c1")
    daemon.cli("start", "c1")
    pid = pid_of(daemon, "c1")
    daemon.stop(signal.SIGKILL)
    daemon.start()
    try:
        assert "c1,RUNNING" in daemon.cli("list", "--format=csv").stdout
        assert pid_of(daemon, "c1") == pid
        assert in_container(daemon, "c1", "cat", "/etc/marker").strip() == MARKER
    finally:
        daemon.cli("stop", "c1", "--timeout", "10")
    # Its new parent (this machine's pid 1) may leave it a zombie: it holds nothing then.
    assert process.exited(pid)
    assert "c1,STOPPED" in daemon.cli("list", "--format=csv").stdout
    assert mounts_naming(daemon.dir) == []


def test_exec_with_a_terminal_in_an_unprivileged_container(daemon: Daemon) -> None:
    make_container(daemon, "c1")
    daemon.cli("start", "c1")
    try:
        code, doc = daemon.api(
            "POST",
            "/1.0/instances/c1/exec",
            {
                "command": ["sh", "-c", "tty; stty size; id -u"],
                "interactive": True,
                "wait-for-websocket": True,
                "width": 80,
                "height": 24,
            },
        )
        assert code == 202, doc
        op = doc["metadata"]
        base = f"/1.0/operations/{op['id']}/websocket?secret="
        ws = {
            ch: WSClient(str(daemon.dir / "unix.socket"), base + s) for ch, s in op["metadata"]["fds"].items()
        }
        got = b""
        while b"\n0" not in got:
            got += ws["0"].recv()[1]
        assert daemon.wait_op(doc)["metadata"]["return"] == 0
        assert b"24 80" in got, got
        for w in ws.values():
            w.close()
    finally:
        daemon.cli("stop", "c1", "-f")


def test_the_busybox_image_reaches_its_steady_state_with_its_templates(daemon: Daemon) -> None:
    """The images branch's real image (scripts/build-image.sh), imported and unpacked by the store."""
    assert daemon.image() == "busybox"  # `pincus image import` of busybox_image(), once
    daemon.cli("init", "busybox", "c1")
    assert config(daemon, "c1")["volatile.apply_template"] == "create"  # set by the create
    daemon.cli("start", "c1")
    try:
        assert in_container(daemon, "c1", "cat", "/etc/pincus-image-marker").strip() == "pincus busybox image"
        assert in_container(daemon, "c1", "hostname").strip() == "c1"
        assert "127.0.1.1 c1" in in_container(daemon, "c1", "cat", "/etc/hosts")

        # inittab's console shell waits on the console terminal: the same process a second later.
        def shells() -> list[str]:
            out = in_container(daemon, "c1", "ps", "-o", "pid,args")
            return [line.split()[0] for line in out.splitlines() if line.split()[1:] == ["/bin/sh"]]

        first = shells()
        time.sleep(1)
        assert first and shells() == first
    finally:
        daemon.cli("stop", "c1", "--timeout", "10")
    assert "c1,STOPPED" in daemon.cli("list", "--format=csv").stdout
