"""Id map allocation (pure), subuid/subgid files and image templates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pincus import idmaps
from pincus.errors import HostError, InvalidError
from pincus.host import idmap as host_idmap
from pincus.instances import idmap, templates

ROOT = (100000, 10_000_001)


def test_default_map_is_roots_first_range_shared() -> None:
    m = idmap.allocate("c1", {}, {}, ROOT, ROOT, [])
    assert m == (
        idmaps.IdRange(True, False, 100000, 0, 65536),
        idmaps.IdRange(False, True, 100000, 0, 65536),
    )
    assert idmap.allocate("c2", {}, {}, ROOT, ROOT, [idmap.Block("c1", 165536, 65536)]) == m
    assert idmaps.proc_map_lines(m, True) == "0 100000 65536\n"


def test_privileged_has_no_map() -> None:
    assert idmap.allocate("c1", {"security.privileged": "true"}, {}, ROOT, ROOT, []) == ()


def test_isolated_takes_the_next_free_block_and_keeps_its_own() -> None:
    others = [idmap.Block("a", 165536, 65536), idmap.Block("b", 231072, 65536)]
    m = idmap.allocate("c1", {"security.idmap.isolated": "true"}, {}, ROOT, ROOT, others)
    assert m[0].hostid == 296608
    kept = idmap.allocate(
        "c1", {"security.idmap.isolated": "true"}, {"volatile.idmap.base": "500000"}, ROOT, ROOT, others
    )
    assert kept[0].hostid == 500000


def test_overlap_with_another_instances_block_is_refused() -> None:
    with pytest.raises(InvalidError, match="overlaps instance 'a'"):
        idmap.allocate(
            "c1", {"security.idmap.base": "170000"}, {}, ROOT, ROOT, [idmap.Block("a", 165536, 65536)]
        )


def test_outside_roots_range_is_refused() -> None:
    with pytest.raises(InvalidError, match="outside root's id range"):
        idmap.allocate("c1", {"security.idmap.base": "10"}, {}, ROOT, ROOT, [])
    with pytest.raises(InvalidError, match="larger than root's id range"):
        idmap.allocate("c1", {"security.idmap.size": "20000000"}, {}, ROOT, ROOT, [])


def test_no_free_block_left_is_refused() -> None:
    small = (100000, 65536 * 2)
    taken = [idmap.Block("a", 165536, 65536)]
    with pytest.raises(InvalidError, match="No free id range"):
        idmap.allocate("c1", {"security.idmap.isolated": "true"}, {}, small, small, taken)


def test_map_json_round_trips_in_incus_form() -> None:
    m = idmap.allocate("c1", {}, {}, ROOT, ROOT, [])
    text = idmaps.to_json(m)
    assert '"Isuid":true' in text and '"Maprange":65536' in text
    assert idmaps.from_json(text) == m
    assert idmaps.from_json("") == ()
    with pytest.raises(InvalidError):
        idmaps.from_json("[{}]")


def test_root_ranges_reads_and_adds_a_missing_range(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("bob:100000:65536\nroot:300000:70000\nroot:900000:5\n")
    assert host_idmap.root_ranges(subuid, subgid) == ((300000, 70000), host_idmap.DEFAULT_ROOT_RANGE)
    assert subgid.read_text() == "root:1000000:1000000000\n"
    assert subuid.read_text().count("root:") == 2  # present: not touched


def test_shift_tree_shifts_forward_back_and_keeps_setuid(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    tool = root / "bin/tool"
    tool.write_text("x")
    tool.chmod(0o4755)
    (root / "bin/link").symlink_to("/nonexistent")
    (root / "hard").hardlink_to(tool)
    m = idmap.allocate("c1", {}, {}, ROOT, ROOT, [])
    assert host_idmap.shift_tree(root, (), m) == 4  # root, bin, tool, link: the hard link's inode once
    for p in (root, root / "bin", tool, root / "bin/link"):
        assert p.lstat().st_uid == 100000 and p.lstat().st_gid == 100000
    assert tool.stat().st_mode & 0o7777 == 0o4755
    other = (idmaps.IdRange(True, True, 200000, 0, 65536),)
    host_idmap.shift_tree(root, m, other)
    assert tool.stat().st_uid == 200000
    host_idmap.shift_tree(root, other, ())
    assert tool.stat().st_uid == 0 and tool.stat().st_mode & 0o7777 == 0o4755
    assert host_idmap.shift_tree(root, (), ()) == 0


def test_shift_tree_refuses_an_id_outside_the_map(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    os.chown(root, 70000, 0)
    with pytest.raises(HostError, match="uid 70000 is outside"):
        host_idmap.shift_tree(root, (), idmap.allocate("c1", {}, {}, ROOT, ROOT, []))


METADATA = """
architecture: x86_64
templates:
  /etc/hostname:
    when: [create, copy]
    template: hostname.tpl
  /etc/hosts:
    when: [start]
    template: hosts.tpl
"""


def test_templates_due_by_trigger_and_rendered() -> None:
    tpls = templates.parse_metadata(METADATA)
    assert [t.path for t in templates.due(tpls, None)] == ["/etc/hosts"]
    assert [t.path for t in templates.due(tpls, "create")] == ["/etc/hostname", "/etc/hosts"]
    assert templates.render("127.0.1.1 {{ instance.name }}\n{{container.name}}", "c1") == "127.0.1.1 c1\nc1"
    assert templates.render("{% if x %}y{% endif %}", "c1") is None
    assert templates.render("{{ config_get('user.x', '') }}", "c1") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("templates:\n  etc/x:\n    template: a.tpl\n", "must be absolute"),
        ("templates:\n  /etc/x:\n    template: ../a\n", "file name"),
        ("templates:\n  /etc/x: {}\n", "needs a template file"),
        ("templates: [1]\n", "not a map"),
        ("templates: {\n", "Invalid image metadata"),
    ],
)
def test_bad_metadata_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        templates.parse_metadata(text)


def test_shift_tree_changes_nothing_when_an_id_cannot_map(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "a").mkdir(parents=True)
    (root / "a/bad").write_text("x")
    os.chown(root / "a/bad", 70000, 0)
    with pytest.raises(HostError, match="bad: uid 70000 is outside"):
        host_idmap.shift_tree(root, (), idmap.allocate("c1", {}, {}, ROOT, ROOT, []))
    assert root.stat().st_uid == 0 and (root / "a").stat().st_uid == 0


def test_a_shift_cut_short_is_finished_by_running_it_again(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "a").mkdir(parents=True)
    m = idmap.allocate("c1", {}, {}, ROOT, ROOT, [])
    os.chown(root / "a", 100000 + 5, 100000 + 5)  # shifted before the crash (uid 5 inside)
    host_idmap.shift_tree(root, (), m)
    assert root.stat().st_uid == 100000 and (root / "a").stat().st_uid == 100005
