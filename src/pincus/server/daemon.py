"""pincusd: lock the state dir, open the store, probe the kernel, serve the API until told to stop."""

from __future__ import annotations

import argparse
import grp
import hashlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import IO

from pincus.api.http import serve
from pincus.api.routes import build
from pincus.db.store import Store
from pincus.errors import ConflictError
from pincus.events import EventHub, EventLogHandler
from pincus.host import files
from pincus.host.features import probe_kernel_features
from pincus.server import crashpoint
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
    store = Store(path / "pincus.db")
    features = probe_kernel_features()
    state = State(dir=path, store=store, events=hub, features=features, tag=daemon_tag(path))
    if crash_file := os.environ.get("PINCUS_TEST_CRASH_FILE"):
        state.host.add_hook(crashpoint.hook(Path(crash_file)))
    server = Server(state)
    server.start()

    shutdown = threading.Event()
    sock_path = path / "unix.socket"
    httpd = serve(sock_path, build(server, shutdown))
    files.set_owner_mode(sock_path, 0, gid, 0o660)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        shutdown.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=httpd.serve_forever, name="api", daemon=True).start()
    log.info("pincusd started on %s (pid %d, features %s)", sock_path, os.getpid(), features)

    shutdown.wait()
    log.info("pincusd shutting down")
    httpd.shutdown()
    hub.close_all()
    server.stop()
    httpd.server_close()
    sock_path.unlink(missing_ok=True)
    store.close()
    lock.close()


if __name__ == "__main__":
    main()
