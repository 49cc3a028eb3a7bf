"""OVN pieces that need no daemon: uplink range checks, the datapath choice, daemon command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from pincus.db.networks import NetworkRecord
from pincus.errors import ConflictError, HostError, InvalidError
from pincus.host import ovs_daemons, ovs_layout, ovsdb
from pincus.networks.ovn import check_uplink_config

GW = {"parent": "br9", "ipv4.gateway": "10.250.9.1/24"}


def test_ranges_inside_the_uplink_subnet_and_apart_pass() -> None:
    check_uplink_config(
        "up", {**GW, "ipv4.ovn.ranges": "10.250.9.10-10.250.9.19,10.250.9.20-10.250.9.29"}, []
    )


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ("10.250.9.10-10.250.9.20,10.250.9.20-10.250.9.30", "overlap"),
        ("10.250.9.250-10.250.10.5", "outside the uplink subnet"),
    ],
)
def test_bad_ranges_are_refused(ranges: str, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        check_uplink_config("up", {**GW, "ipv4.ovn.ranges": ranges}, [])


def test_ranges_need_a_gateway() -> None:
    with pytest.raises(InvalidError, match=r"ipv4\.gateway"):
        check_uplink_config("up", {"parent": "br9", "ipv4.ovn.ranges": "10.250.9.10-10.250.9.19"}, [])


def test_ranges_of_two_uplinks_on_one_parent_may_not_overlap() -> None:
    other = NetworkRecord("up2", "physical", "", {**GW, "ipv4.ovn.ranges": "10.250.9.15-10.250.9.25"})
    with pytest.raises(ConflictError, match='network "up2"'):
        check_uplink_config("up", {**GW, "ipv4.ovn.ranges": "10.250.9.10-10.250.9.19"}, [other])


def test_datapath_type_is_overridable_and_checked() -> None:
    assert ovs_daemons.datapath_type("netdev") == "netdev"
    assert ovs_daemons.datapath_type("system") == "system"
    assert ovs_daemons.datapath_type(None) in ("system", "netdev")
    with pytest.raises(HostError, match="datapath type"):
        ovs_daemons.datapath_type("dpdk; rm -rf /")


def test_every_daemon_has_its_own_files_and_ovn_controller_no_unixctl(tmp_path: Path) -> None:
    specs = [*ovs_layout.central_specs(tmp_path / "c"), *ovs_layout.chassis_specs(tmp_path / "h")]
    assert len({s.pid_file for s in specs}) == len({s.log_file for s in specs}) == len(specs) == 6
    for spec in specs:
        argv = spec.argv()
        assert f"--pidfile={spec.pid_file}" in argv and "--detach" in argv
        assert (f"--unixctl={spec.ctl}" in argv) == (spec.program != "ovn-controller")
    controller = specs[-1]
    assert controller.env["OVN_RUNDIR"] == str(tmp_path / "h")


@pytest.mark.parametrize(
    "remote",
    [
        "unix:/run/x.sock",
        "tcp:10.250.0.1:6641",
        "ssl:[fd42:250::1]:6641",
        "tcp:10.250.0.1:6641,tcp:10.250.0.2:6641",
    ],
)
def test_ovsdb_remotes_accepted(remote: str) -> None:
    assert ovsdb.check_remote(remote) == remote


@pytest.mark.parametrize(
    "remote", ["", "unix:relative", "tcp:host", "tcp:1.2.3.4:1,", "-v", "tcp:1.2.3.4:1 --x"]
)
def test_ovsdb_remotes_refused(remote: str) -> None:
    with pytest.raises(HostError, match="Invalid OVSDB connection"):
        ovsdb.check_remote(remote)
