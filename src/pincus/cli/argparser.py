"""The argparse parser class of `pincus`: help, usage errors and the commands fastparse leaves."""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def _terminal_width() -> int:
    """What `shutil.get_terminal_size().columns` says, without importing shutil (2 ms here)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Parser(argparse.ArgumentParser):
    """Usage errors follow the CLI contract too: `Error: ...` on stderr, exit 1."""

    def error(self, message: str) -> NoReturn:
        print(f"Error: {message}", file=sys.stderr)
        self.print_usage(sys.stderr)
        sys.exit(1)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's asks shutil for the width, once per argument added; the result is the same
        # (it leaves 2 columns free only when it computes the width itself).
        return argparse.HelpFormatter(prog=self.prog, width=_terminal_width() - 2)
