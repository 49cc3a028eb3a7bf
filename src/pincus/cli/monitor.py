"""pincus monitor"""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pincus.cli.client import Client

_LEVEL_WIDTH = 9


TYPES = ("logging", "lifecycle", "operation")


def pretty(event: dict[str, Any]) -> str:
    """One readable line: time, level, what happened, then the context as key=value."""
    ts = str(event.get("timestamp", ""))[11:23]
    md = event.get("metadata") or {}
    if event.get("type") == "lifecycle":
        level, text = "LIFECYCLE", f"{md.get('action', '')} {md.get('source', '')}"
    elif event.get("type") == "operation":
        level, text = "OPERATION", f"{md.get('description', '')} {md.get('status', '')}".strip()
    else:
        level, text = str(md.get("level", "info")).upper(), str(md.get("message", ""))
    ctx = md.get("context") or {}
    tail = " ".join(f"{k}={v}" for k, v in ctx.items())
    return f"{ts} {level:<{_LEVEL_WIDTH}} {text}" + (f"  {tail}" if tail else "")


def _monitor(args: argparse.Namespace, c: Client) -> None:
    types = ",".join(dict.fromkeys(args.type or TYPES))  # as Incus: every type unless told
    fmt = "pretty" if args.pretty else args.format
    for event in c.stream(f"/1.0/events?type={types}&level={args.loglevel}"):
        if fmt == "pretty":
            print(pretty(event), flush=True)
        elif fmt == "json":
            print(json.dumps(event), flush=True)
        else:
            from pincus.cli.output import dump_yaml

            sys.stdout.write(dump_yaml(event) + "\n")
            sys.stdout.flush()


def build_monitor(p: argparse.ArgumentParser, words: list[str]) -> None:
    p.add_argument("--pretty", action="store_true", help="one readable line per event (--format=pretty)")
    p.add_argument(
        "--type", action="append", choices=TYPES, help="only events of this type (repeatable; default: all)"
    )
    p.add_argument("--format", default="yaml", choices=["pretty", "json", "yaml"], help="output format")
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_monitor)
