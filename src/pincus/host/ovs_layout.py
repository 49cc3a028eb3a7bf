"""Names and paths of the Open vSwitch and OVN daemons of one pincusd: which daemons, with which
files and arguments. Pure data (nothing here touches the OS); host/ovs_daemons.py runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

_NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
_SB_SCHEMA = Path("/usr/share/ovn/ovn-sb.ovsschema")
_VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


@dataclass(frozen=True)
class DaemonSpec:
    """One daemon: its program, its files, its arguments, and the database file it serves."""

    name: str  # "nb", "sb", "northd", "switchdb", "vswitchd", "controller"
    program: str
    dir: Path
    args: tuple[str, ...] = ()
    db: Path | None = None  # created from SCHEMA on first start
    schema: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def ctl(self) -> Path:
        return self.dir / f"{self.name}.ctl"

    def argv(self) -> list[str]:
        unixctl = [] if self.program == "ovn-controller" else [f"--unixctl={self.ctl}"]
        db = [] if self.db is None else [str(self.db)]
        return [
            self.program,
            *self.args,
            *db,
            f"--pidfile={self.pid_file}",
            f"--log-file={self.log_file}",
            *unixctl,
            "--detach",
            "--no-chdir",
        ]


NB_PORT = 6641
SB_PORT = 6642


def _bracket(address: str) -> str:
    return address if ":" not in address else f"[{address}]"


def tcp_remote(address: str, port: int) -> str:
    """The OVSDB remote of a TCP server at ADDRESS (an IPv6 one in brackets)."""
    return f"tcp:{_bracket(address)}:{port}"


def central_specs(dir: Path, listen: str | None = None) -> list[DaemonSpec]:
    """NB and SB ovsdb-servers and ovn-northd of an embedded central living in DIR; with LISTEN
    (an IP address, a cluster member's own) they also serve the other members' chassis over TCP."""
    nb, sb = central_sockets(dir)
    # A listener is ptcp:PORT:IP (the port first), unlike the tcp:IP:PORT of a client.
    nb_tcp = (f"--remote=ptcp:{NB_PORT}:{_bracket(listen)}",) if listen else ()
    sb_tcp = (f"--remote=ptcp:{SB_PORT}:{_bracket(listen)}",) if listen else ()
    nb_args, sb_args = (f"--remote=punix:{nb}", *nb_tcp), (f"--remote=punix:{sb}", *sb_tcp)
    return [
        DaemonSpec("nb", "ovsdb-server", dir, nb_args, dir / "ovnnb.db", _NB_SCHEMA),
        DaemonSpec("sb", "ovsdb-server", dir, sb_args, dir / "ovnsb.db", _SB_SCHEMA),
        DaemonSpec("northd", "ovn-northd", dir, (f"--ovnnb-db=unix:{nb}", f"--ovnsb-db=unix:{sb}")),
    ]


def central_sockets(dir: Path) -> tuple[Path, Path]:
    return dir / "nb.sock", dir / "sb.sock"


def chassis_socket(dir: Path) -> Path:
    """The local switch database's socket (ovs-vsctl --db=unix:<this>)."""
    return dir / "db.sock"


def chassis_specs(dir: Path) -> list[DaemonSpec]:
    """The switch database, ovs-vswitchd and ovn-controller of the chassis living in DIR."""
    db = f"unix:{chassis_socket(dir)}"
    env = {"OVS_RUNDIR": str(dir), "OVS_DBDIR": str(dir), "OVN_RUNDIR": str(dir), "OVS_LOGDIR": str(dir)}
    return [
        DaemonSpec(
            "switchdb",
            "ovsdb-server",
            dir,
            (f"--remote=punix:{chassis_socket(dir)}",),
            dir / "conf.db",
            _VSWITCH_SCHEMA,
            env,
        ),
        DaemonSpec("vswitchd", "ovs-vswitchd", dir, (db,), env=env),
        DaemonSpec("controller", "ovn-controller", dir, (db,), env=env),
    ]
