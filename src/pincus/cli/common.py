"""Argument helpers shared by the command groups.

Every `pincus` command is a new process, so start-up is most of its latency: the CLI modules
import no `typing` at run time (annotations only) and build argparse parsers only for the
command given (see `add_commands`).
"""

from __future__ import annotations

import sys

from pincus.cli.client import ClientError
from pincus.cli.output import FORMATS

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    # Adds a command's arguments (and its subcommands, given the words after it) to its parser.
    Builder = Callable[[argparse.ArgumentParser, list[str]], None]
    # (name, aliases, help line, builder), in the order `--help` lists them.
    Command = tuple[str, tuple[str, ...], str, Builder]


def add_commands(sub: Any, commands: Sequence[Command], words: list[str]) -> None:
    """Parsers for COMMANDS; only for the one WORDS starts with, when it names one.

    An argparse parser costs ~0.2 ms to build; building the whole tree cost 10 ms per command.
    Anything else (no word, an option, a typo) gets every command, so help, usage and
    "invalid choice" messages are argparse's own, listing them all.
    """
    word = words[0] if words else ""
    chosen = [cmd for cmd in commands if word == cmd[0] or word in cmd[1]]
    for name, aliases, help, build in chosen or commands:
        build(sub.add_parser(name, aliases=list(aliases), help=help), words[1:])


def subcommands(p: argparse.ArgumentParser, dest: str, commands: Sequence[Command], words: list[str]) -> None:
    """A command group: COMMAND is required and picks one of COMMANDS."""
    add_commands(p.add_subparsers(dest=dest, required=True, metavar="COMMAND"), commands, words)


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


def edit_yaml(current: dict[str, Any]) -> dict[str, Any]:
    """The new document of an `edit` command: from $EDITOR (else $VISUAL, else vi) on a temporary
    YAML file holding CURRENT when stdin is a terminal, as Incus does; read from stdin otherwise.

    A file that is not a YAML map is reopened in the editor after Enter (Ctrl-C gives up).
    """
    if not sys.stdin.isatty():
        return read_stdin_yaml()
    import os
    import shlex
    import subprocess
    import tempfile

    from pincus.cli.output import dump_yaml, load_yaml

    editor = shlex.split(os.environ.get("EDITOR") or os.environ.get("VISUAL") or "vi")
    fd, name = tempfile.mkstemp(prefix="pincus_editor_", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dump_yaml(current))
        while True:
            if subprocess.run([*editor, name]).returncode != 0:
                raise ClientError(f"The editor {editor[0]} failed; nothing was changed")
            with open(name) as f:
                text = f.read()
            try:
                doc = load_yaml(text)
                if doc is None:
                    doc = {}
                if not isinstance(doc, dict):
                    raise ValueError("the document must be a map")
                return doc
            except Exception as e:
                print(f"Config parsing error: {e}", file=sys.stderr)
                try:
                    input("Press enter to open the editor again or ctrl+c to abort change")
                except (EOFError, KeyboardInterrupt):
                    raise ClientError("Edit aborted; nothing was changed") from None
    finally:
        os.unlink(name)


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


def yaml_devices(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The devices of an edited document, each a string-valued map."""
    devices = doc.get("devices") or {}
    if not isinstance(devices, dict):
        raise ClientError('"devices" must be a map of device name to config')
    out: dict[str, dict[str, str]] = {}
    for name, cfg in devices.items():
        if cfg is not None and not isinstance(cfg, dict):
            raise ClientError(f'Device "{name}" must be a map of keys')
        out[str(name)] = yaml_config({"config": cfg})
    return out


def positionals(func: Any, *names: str, **defaults: Any) -> Builder:
    """A leaf command taking positional arguments by name ("config+" takes one or more KEY=VALUE)."""

    def build(x: argparse.ArgumentParser, words: list[str]) -> None:
        for arg in names:
            if arg.endswith("+"):
                x.add_argument(arg[:-1], nargs="+", metavar="KEY=VALUE")
            else:
                x.add_argument(arg)
        x.set_defaults(func=func, **defaults)

    return build
