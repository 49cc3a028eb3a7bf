"""Bind mounts into a running container's mount namespace (host/mount_inject.py), real kernel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pincus import idmaps
from pincus.errors import HostError
from pincus.host import container as ct
from pincus.host import mount_inject
from tests.rootfslib import build_rootfs

MAP = (
    idmaps.IdRange(True, False, 1_000_900_000, 0, 65536),
    idmaps.IdRange(False, True, 1_000_900_000, 0, 65536),
)


@pytest.fixture(params=["privileged", "userns"])
def container(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[ct.ContainerProcess]:
    state = tmp_path / "state"
    state.mkdir()
    idmap: idmaps.IdMap = MAP if request.param == "userns" else ()
    spec = ct.RootSpec(build_rootfs(tmp_path / "root"), idmap, idmapped=bool(idmap))
    proc = ct.spawn_container(f"{prefix}mi", f"{prefix}mi", state, tmp_path / "log", spec)
    try:
        yield proc
    finally:
        ct.stop_container(proc, timeout=0, force=True, state_dir=state)


def _mounts(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    return {line.split()[4]: line.split()[5] for line in lines}


def test_inject_and_eject_a_directory_and_a_file(container: ct.ContainerProcess, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("x\n")
    init = mount_inject.Init(container.pid, container.start_time)
    mount_inject.inject(init, source, "/mnt/a/b", True)
    mount_inject.inject(init, source / "f", "/etc/f", False)
    root = Path(f"/proc/{container.pid}/root")
    assert (root / "mnt/a/b/f").read_text() == "x\n" and (root / "etc/f").read_text() == "x\n"
    mounts = _mounts(container.pid)
    assert mounts["/mnt/a/b"].startswith("ro") and mounts["/etc/f"].startswith("rw")
    assert str(source) not in Path("/proc/self/mountinfo").read_text()
    mount_inject.eject(init, "/mnt/a/b")
    mount_inject.eject(init, "/etc/f")
    mount_inject.eject(init, "/etc/f")  # nothing there any more: fine
    assert "/mnt/a/b" not in _mounts(container.pid) and "/etc/f" not in _mounts(container.pid)
    assert not (root / "mnt/a/b/f").exists()


def test_a_stale_start_time_is_refused_and_nothing_is_mounted(
    container: ct.ContainerProcess, tmp_path: Path
) -> None:
    stale = mount_inject.Init(container.pid, container.start_time + 1)
    with pytest.raises(HostError, match="no longer the container's init"):
        mount_inject.inject(stale, tmp_path, "/mnt/stale", False)
    assert "/mnt/stale" not in _mounts(container.pid)
    with pytest.raises(HostError, match="No such file or directory"):
        mount_inject.inject(
            mount_inject.Init(container.pid, container.start_time), tmp_path / "nope", "/x", False
        )
