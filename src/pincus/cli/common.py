"""Argument helpers shared by the command groups."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pincus.cli.client import ClientError
from pincus.cli.output import FORMATS


def key_values(items: list[str], allow_pair: bool = True) -> dict[str, str]:
    """KEY=VALUE... ; also Incus's two-word form `KEY VALUE`."""
    if allow_pair and len(items) == 2 and "=" not in items[0]:
        return {items[0]: items[1]}
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ClientError(f'Bad key=value pair: "{item}"')
        out[key] = value
    return out


def add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", "-f", default="table", choices=FORMATS, help="output format")


def read_stdin_yaml() -> dict[str, Any]:
    from pincus.cli.output import load_yaml

    if sys.stdin.isatty():
        raise ClientError("edit reads the new YAML from standard input (pincus ... edit NAME < file.yaml)")
    try:
        doc = load_yaml(sys.stdin.read())
    except Exception as e:
        raise ClientError(f"Invalid YAML on standard input: {e}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ClientError("The YAML on standard input must be a map")
    return doc


def yaml_config(doc: dict[str, Any]) -> dict[str, str]:
    """YAML may give true/1 where the API wants strings."""
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise ClientError('"config" must be a map')
    out: dict[str, str] = {}
    for k, v in config.items():
        if isinstance(v, bool):
            out[str(k)] = "true" if v else "false"
        elif v is None:
            out[str(k)] = ""
        else:
            out[str(k)] = str(v)
    return out


def command(
    sub: Any, name: str, help: str, func: Any, *positionals: str, **defaults: Any
) -> argparse.ArgumentParser:
    """One subcommand: its positional arguments by name ("config+" takes one or more KEY=VALUE)."""
    x: argparse.ArgumentParser = sub.add_parser(name, help=help)
    for arg in positionals:
        if arg.endswith("+"):
            x.add_argument(arg[:-1], nargs="+", metavar="KEY=VALUE")
        else:
            x.add_argument(arg)
    x.set_defaults(func=func, **defaults)
    return x
