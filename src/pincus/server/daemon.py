"""pincusd: lock the state dir, open the store, probe the kernel, serve the API until told to stop."""

from __future__ import annotations

import argparse
import grp
import hashlib
import logging
import os
import signal
import ssl
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import IO

from pincus.api.cluster_routes import PUBLIC, database_route
from pincus.api.http import Router, TLSHTTPServer, serve, serve_tls
from pincus.api.routes import build
from pincus.config.server_keys import parse_address
from pincus.db.store import Store
from pincus.errors import ConflictError, HostError, PincusError
from pincus.events import EventHub, EventLogHandler
from pincus.host import certs, files
from pincus.host.dqlite_node import Dial, DqliteNode
from pincus.host.facade import Host
from pincus.host.features import probe_kernel_features
from pincus.host.member_api import DATABASE_PATH
from pincus.server import crashpoint
from pincus.server.cluster import (
    DATABASE,
    NETWORK_LATENCY_MS,
    Cluster,
    LocalMember,
    cluster_file,
    make_dial,
)
from pincus.server.server import Server
from pincus.state import State

log = logging.getLogger("pincusd")


def state_dir() -> Path:
    return Path(os.environ.get("PINCUS_DIR") or "/var/lib/pincus").absolute()


def daemon_tag(path: Path) -> str:
    """Short, stable tag of this PINCUS_DIR, put into the names of kernel objects the daemon makes."""
    return hashlib.sha256(str(path).encode()).hexdigest()[:4]


def _acquire_lock(path: Path) -> IO[str]:
    try:
        return files.lock_pidfile(path / "pincusd.lock")
    except ConflictError as e:
        raise SystemExit(f"Error: pincusd is already running for {path}: {e}") from None


def _setup_logging(logfile: Path, debug: bool, hub: EventHub) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    fh = logging.FileHandler(logfile)
    fh.setFormatter(fmt)
    root.addHandler(fh)
    root.addHandler(EventLogHandler(hub))
    if debug:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)
    logging.getLogger("pyroute2").setLevel(logging.WARNING)


def _socket_group(name: str | None) -> int:
    if name is None:
        return 0
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SystemExit(f'Error: group "{name}" does not exist') from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pincusd", description="The pincus daemon")
    parser.add_argument("--debug", action="store_true", help="log debug messages, also to stderr")
    parser.add_argument("--group", help="group that may use the unix socket")
    parser.add_argument("--logfile", help="log file (default $PINCUS_DIR/logs/pincusd.log)")
    args = parser.parse_args(argv)

    path = state_dir()
    # 0711: dnsmasq, once it has dropped to "nobody", must traverse it to its hosts files.
    files.ensure_dir(path, 0o711)
    files.set_owner_mode(path, -1, -1, 0o711)  # -1: whoever owns it keeps it
    gid = _socket_group(args.group)
    lock = _acquire_lock(path)
    files.ensure_dir(path / "logs")

    hub = EventHub()
    _setup_logging(Path(args.logfile) if args.logfile else path / "logs" / "pincusd.log", args.debug, hub)
    host = Host()
    router = Router()  # routes are added once the server is built; a member's database one first
    listeners = Listeners()
    store, node, local, dial = open_local_store(path, host, router, listeners)
    features = probe_kernel_features()
    state = State(dir=path, store=store, events=hub, features=features, tag=daemon_tag(path), host=host)
    if crash_file := os.environ.get("PINCUS_TEST_CRASH_FILE"):
        state.host.add_hook(crashpoint.hook(Path(crash_file)))
    shutdown = threading.Event()
    restart = threading.Event()

    def restart_soon() -> None:
        # After the answer to the request that asked for it has gone out.
        restart.set()
        threading.Timer(0.5, shutdown.set).start()

    cluster = Cluster(
        state, local, restart_soon, lambda wanted: listeners.update(cluster, router, wanted), dial=dial
    )
    server = Server(state, cluster)
    server.start()

    sock_path = path / "unix.socket"
    router.extend(build(server, shutdown))
    httpd = serve(sock_path, router)
    files.set_owner_mode(sock_path, 0, gid, 0o660)
    try:
        listeners.update(cluster, router)
    except PincusError as e:
        log.error("Not serving the API over TLS: %s", e)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        shutdown.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=httpd.serve_forever, name="api", daemon=True).start()
    log.info("pincusd started on %s (pid %d, features %s)", sock_path, os.getpid(), features)

    shutdown.wait()
    log.info("pincusd shutting down")
    # The last members of a cluster going down have no quorum: what the shutdown still reads must
    # not wait a whole minute for a leader that will not come.
    if hasattr(store, "timeout"):
        store.timeout = min(store.timeout, 2.0)
    if node is not None and not restart.is_set():
        # Without a quorum a read may still hang on a peer half gone: a member stops within a bound
        # all the same (instances are left running as after any SIGTERM; the next start adopts them).
        watchdog = threading.Timer(CLUSTER_STOP_LIMIT, _give_up_stopping)
        watchdog.daemon = True
        watchdog.start()
    httpd.shutdown()
    hub.close_all()
    server.stop()
    httpd.server_close()
    sock_path.unlink(missing_ok=True)
    store.close()
    # A member's database traffic comes in through its TLS listener: closed only once the
    # database is no longer needed, or the others could not answer this member's last reads.
    listeners.close()
    if node is not None:
        node.stop()
    lock.close()
    if restart.is_set():
        # Clustering changed which database this daemon runs on: start again, same pid, same
        # arguments (running instances are adopted, as after SIGTERM).
        log.info("pincusd restarting")
        logging.shutdown()
        os.execv(
            sys.executable,
            [sys.executable, "-m", "pincus.server.daemon", *(argv if argv is not None else sys.argv[1:])],
        )


CLUSTER_STOP_LIMIT = 15.0  # seconds a cluster member's shutdown may take


def _give_up_stopping() -> None:
    log.error("pincusd did not stop within %g s (no database quorum?): exiting now", CLUSTER_STOP_LIMIT)
    logging.shutdown()
    os._exit(1)


def open_local_store(
    path: Path, host: Host, router: Router, listeners: Listeners
) -> tuple[Store, DqliteNode | None, LocalMember | None, Dial | None]:
    """The store pincusd runs on: SQLite, or as a cluster member (cluster.json) its dqlite node and
    the replicated database; the SQLite file it had before is kept aside as pincus.db.pre-cluster.

    A member's node listens only inside this process and talks to the others through their API
    listeners (TLS, cluster certificate), so that listener starts here, before the database is
    opened: the others must reach this node for it to find a leader."""
    doc = files.read_json(cluster_file(path))
    if doc is None:
        if files.is_dir(path / "database"):  # a member removed from its cluster: that node is done
            files.remove_tree(path / "database.removed")
            files.move_dir(path / "database", path / "database.removed")
        return Store(path / DATABASE), None, None, None
    local = LocalMember.from_doc(doc, cluster_file(path))
    from pincus.db.dqlite_store import DqliteStore  # only a cluster member loads the dqlite client

    old = path / DATABASE
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{old}{suffix}").exists():
            files.move_dir(Path(f"{old}{suffix}"), Path(f"{old}.pre-cluster{suffix}"))
    crt, key = path / "cluster.crt", path / "cluster.key"
    nodes: list[DqliteNode] = []
    dial = make_dial(host, local.address, certs.fingerprint(certs.read(crt)), (crt, key), nodes)
    node = DqliteNode(local.node_id, local.address, path / "database", NETWORK_LATENCY_MS, dial=dial)
    nodes.append(node)
    try:
        router.add("POST", DATABASE_PATH, database_route(host, node))
        listeners.start(local.address, crt, key, router)
        store = DqliteStore(local.database, database=DATABASE, timeout=60.0, dial=dial)
        store.member = local.name
    except BaseException:
        listeners.close()
        node.stop()
        raise
    return store, node, local, dial


class Listeners:
    """The API over TLS on core.https_address and cluster.https_address, re-bound when they change."""

    def __init__(self) -> None:
        self._servers: dict[str, TLSHTTPServer] = {}
        self._lock = threading.Lock()

    def update(self, cluster: Cluster, router: Router, wanted: list[str] | None = None) -> None:
        """Listen on WANTED (default: what the server config says), and nowhere else."""
        with self._lock:
            wanted = cluster.listen_addresses() if wanted is None else wanted
            for address in [a for a in self._servers if a not in wanted]:
                self._close(address)
            if not wanted or all(a in self._servers for a in wanted):
                return
            crt, key, trusted = cluster.tls_pair()
            for address in wanted:
                if address not in self._servers:
                    self._start(address, certs.server_context(crt, key, trusted), router)

    def start(self, address: str, crt: Path, key: Path, router: Router) -> None:
        """A member's listener on ADDRESS, trusting its cluster certificate CRT."""
        with self._lock:
            self._start(address, certs.server_context(crt, key, crt), router)

    def _start(self, address: str, ctx: ssl.SSLContext, router: Router) -> None:
        try:
            httpd = serve_tls(parse_address(address), router, ctx, PUBLIC)
        except OSError as e:
            raise HostError(f"Cannot listen on {address}: {e.strerror or e}") from e
        self._servers[address] = httpd
        threading.Thread(target=httpd.serve_forever, name=f"api-{address}", daemon=True).start()
        log.info("Serving the API over TLS on %s", address)

    def _close(self, address: str) -> None:
        httpd = self._servers.pop(address)
        httpd.shutdown()
        httpd.server_close()

    def close(self) -> None:
        with self._lock:
            for address in list(self._servers):
                self._close(address)


if __name__ == "__main__":
    main()
