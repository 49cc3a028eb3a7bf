"""A test's way to kill pincusd at an exact host call (crash-safety tests, tests/faults).

Only when pincusd starts with PINCUS_TEST_CRASH_FILE set: while that file exists, every host call
is counted from the moment it appeared; when the count reaches the number the file holds, the
daemon SIGKILLs itself before the call runs. A file holding 0 records instead: each call's name is
appended to FILE.calls, so a test learns how many calls an operation makes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pincus.host.facade import Hook


def hook(trigger: Path) -> Hook:
    seen: dict[str, int] = {"count": 0, "armed_at": 0}

    def at_call(name: str, call: Callable[[], Any]) -> Any:
        try:
            st = trigger.stat()
        except FileNotFoundError:
            seen["count"] = 0
            return call()
        if st.st_mtime_ns != seen["armed_at"]:  # a new trigger: count from here
            seen.update(count=0, armed_at=st.st_mtime_ns)
        seen["count"] += 1
        target = int(trigger.read_text().strip() or "0")
        if target == 0:
            with open(f"{trigger}.calls", "a") as f:
                f.write(name + "\n")
        elif seen["count"] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return call()

    return at_call
