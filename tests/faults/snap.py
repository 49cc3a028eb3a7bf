"""`python -m tests.faults.snap PINCUS_DIR` inside a daemon's namespace: its canonical snapshot
(tests/faults/run.py) as JSON, read while the daemon is down or up."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from pincus.server.daemon import daemon_tag
from tests.faults.run import snapshot_of


def main() -> None:
    root = Path(sys.argv[1])
    conn = sqlite3.connect(f"file:{root / 'pincus.db'}?mode=ro", uri=True)
    try:
        db = [line for line in conn.iterdump() if "operations" not in line]
    finally:
        conn.close()
    json.dump(snapshot_of(root, daemon_tag(root), db), sys.stdout)


if __name__ == "__main__":
    main()
