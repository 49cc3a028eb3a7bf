"""pincus monitor"""

from __future__ import annotations

import sys

from pincus.cli.output import dump_yaml

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client

_LEVEL_WIDTH = 9


def pretty(event: dict[str, Any]) -> str:
    """One readable line: time, level, what happened, then the context as key=value."""
    ts = str(event.get("timestamp", ""))[11:23]
    md = event.get("metadata") or {}
    if event.get("type") == "lifecycle":
        level, text = "LIFECYCLE", f"{md.get('action', '')} {md.get('source', '')}"
    else:
        level, text = str(md.get("level", "info")).upper(), str(md.get("message", ""))
    ctx = md.get("context") or {}
    tail = " ".join(f"{k}={v}" for k, v in ctx.items())
    return f"{ts} {level:<{_LEVEL_WIDTH}} {text}" + (f"  {tail}" if tail else "")


def _monitor(args: argparse.Namespace, c: Client) -> None:
    types = args.type or "logging,lifecycle"
    for event in c.stream(f"/1.0/events?type={types}&level={args.loglevel}"):
        if args.pretty:
            print(pretty(event), flush=True)
        else:
            sys.stdout.write(dump_yaml(event) + "\n")
            sys.stdout.flush()


def build_monitor(p: argparse.ArgumentParser, words: list[str]) -> None:
    p.add_argument("--pretty", action="store_true", help="one readable line per event")
    p.add_argument("--type", choices=["logging", "lifecycle"], help="only this type of event")
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_monitor)
