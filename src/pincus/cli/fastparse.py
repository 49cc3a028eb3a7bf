"""The command line parsed without argparse, when that gives exactly what argparse would.

Importing and running argparse is most of a short command's cost (it pulls in `re`, `gettext`,
`enum`, ...). The commands' own builders run here against `Spec`, a recorder with the few
ArgumentParser methods they call, and `parse` reads ARGV with a strict subset of argparse's
rules: the positionals first, then exact option strings. Anything else (help, a typo, an
abbreviated or attached option, a word starting with "-" where a value or positional goes, a
builder using something `Spec` lacks) returns None and argparse does the work, with its own
messages. tests/cli/test_fastparse.py checks the result against argparse's, command by command.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from pincus.cli.common import Command

# argparse's nargs spellings; REMAINDER is "..." there too.
_FIXED, _OPTIONAL, _ANY, _SOME, _REMAINDER = None, "?", "*", "+", "..."


class Unsupported(Exception):
    """A builder asked for something this parser does not do: argparse parses that command."""


class Args:
    """The parsed arguments, attribute by attribute as argparse.Namespace holds them."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Args({self.__dict__!r})"


class Action:
    """One add_argument: a positional or an option."""

    def __init__(self, flags: tuple[str, ...], kw: dict[str, Any]) -> None:
        known = {"nargs", "metavar", "help", "default", "action", "choices", "type", "dest", "const"}
        if set(kw) - known:
            raise Unsupported(f"add_argument({', '.join(sorted(set(kw) - known))})")
        self.flags = flags if flags and flags[0].startswith("-") else ()
        self.action = kw.get("action", "store")
        self.nargs = kw.get("nargs")
        self.const = kw.get("const")
        self.choices = kw.get("choices")
        self.type = kw.get("type")
        if self.action == "store_true":
            self.const, default = True, False
        elif self.action in ("store", "append", "store_const"):
            default = None
        else:
            raise Unsupported(f"action={self.action}")
        self.default = kw.get("default", default)
        if self.flags:
            if self.nargs is not None:
                raise Unsupported("an option with nargs")
            longs = [f for f in self.flags if f.startswith("--")]
            self.dest = kw.get("dest") or (longs or self.flags)[0].lstrip("-").replace("-", "_")
        else:
            if len(flags) != 1 or "dest" in kw or self.action != "store":
                raise Unsupported("a positional with dest or action")
            if self.nargs not in (_FIXED, _OPTIONAL, _ANY, _SOME, _REMAINDER) or self.type or self.choices:
                raise Unsupported(f"a positional with nargs={self.nargs!r}, type or choices")
            self.dest = flags[0]

    def takes_value(self) -> bool:
        return self.action in ("store", "append")

    def convert(self, word: str) -> Any:
        if self.type is None:
            return word
        try:
            return self.type(word)
        except (TypeError, ValueError):
            raise Unsupported("a value argparse refuses") from None

    def value(self, word: str) -> Any:
        """WORD as argparse stores it; Unsupported where argparse would refuse it."""
        value = self.convert(word)
        if self.choices is not None and value not in self.choices:
            raise Unsupported("a value outside the choices")
        return value


class Subparsers:
    """What add_subparsers returns: the commands the builders chose to add."""

    def __init__(self, dest: str | None, required: bool) -> None:
        self.dest = dest
        self.required = required
        self.parsers: dict[str, Spec] = {}

    def add_parser(self, name: str, aliases: Sequence[str] = (), help: str | None = None) -> Spec:
        spec = Spec()
        for word in (name, *aliases):
            self.parsers[word] = spec
        return spec


class Spec:
    """The ArgumentParser methods the command builders use, recorded."""

    def __init__(self) -> None:
        self.actions: list[Action] = []
        self.defaults: dict[str, Any] = {}
        self.sub: Subparsers | None = None
        self.usage: str | None = None

    def add_argument(self, *flags: str, **kw: Any) -> None:
        a = Action(flags, kw)
        if "default" not in kw and a.dest in self.defaults:
            a.default = self.defaults[a.dest]
        self.actions.append(a)

    def set_defaults(self, **kw: Any) -> None:
        self.defaults.update(kw)
        for a in self.actions:
            if a.dest in kw:
                a.default = kw[a.dest]

    def __getattr__(self, name: str) -> Any:
        raise Unsupported(f"ArgumentParser.{name}")

    def add_subparsers(
        self, dest: str | None = None, required: bool = False, metavar: str | None = None
    ) -> Subparsers:
        if self.sub is not None or self.actions:
            raise Unsupported("subcommands beside other arguments")
        self.sub = Subparsers(dest, required)
        return self.sub


def parse(commands: Sequence[Command], argv: list[str]) -> Args | None:
    """ARGV parsed as argparse would parse it against COMMANDS, or None when not sure."""
    from pincus.cli.common import add_commands

    top = Spec()
    try:
        add_commands(top.add_subparsers(dest="command", required=True), commands, argv)
        values = _parse(top, argv)
    except Unsupported:
        return None
    return Args(**values)


def _parse(spec: Spec, words: list[str]) -> dict[str, Any]:
    if spec.sub is not None:
        if not words or words[0] not in spec.sub.parsers:
            raise Unsupported("no known command")
        values: dict[str, Any] = {}
        if spec.sub.dest:
            values[spec.sub.dest] = words[0]
        values.update(_parse(spec.sub.parsers[words[0]], words[1:]))
        return {**spec.defaults, **values}
    values = {}
    for a in spec.actions:
        if a.dest not in values:
            values[a.dest] = a.default
    for dest, default in spec.defaults.items():
        values.setdefault(dest, default)
    positionals = [a for a in spec.actions if not a.flags]
    rest = _positionals(positionals, words, values)
    _options([a for a in spec.actions if a.flags], rest, values)
    for a in spec.actions:  # argparse converts a string default it did not replace
        if a.flags and a.type is not None and isinstance(values[a.dest], str) and values[a.dest] is a.default:
            values[a.dest] = a.convert(values[a.dest])
    return values


def _positionals(positionals: list[Action], words: list[str], values: dict[str, Any]) -> list[str]:
    """Give the leading run of plain words to POSITIONALS; the words left (options)."""
    if positionals and positionals[-1].nargs == _REMAINDER:
        fixed = positionals[:-1]
        if any(a.nargs is not _FIXED for a in fixed):
            raise Unsupported("a remainder after variable positionals")
        i = 0
        for a in fixed:
            if i >= len(words) or words[i].startswith("-"):
                raise Unsupported("an option before the remainder")
            values[a.dest] = words[i]
            i += 1
            # A positional's pattern takes the "--" after its word too, and argparse drops it.
            if words[i : i + 1] == ["--"]:
                i += 1
                if words[i : i + 1] == ["--"]:
                    raise Unsupported("two -- in a row")
        # Before a "--", argparse still looks at option-like words (and may call them ambiguous).
        if words[i - 1 : i] != ["--"] and any(w.startswith("-") for w in words[i:]):
            raise Unsupported("option-like words in the remainder")
        values[positionals[-1].dest] = words[i:]
        return []
    n = 0
    while n < len(words) and not words[n].startswith("-"):
        n += 1
    plain, rest = words[:n], words[n:]
    if any(a.nargs is not _FIXED for a in positionals[:-1]):
        raise Unsupported("two variable positionals")
    last = positionals[-1] if positionals and positionals[-1].nargs is not _FIXED else None
    fixed = positionals[:-1] if last else positionals
    extra = len(plain) - len(fixed)
    if extra < 0 or (last is None and extra) or (last is not None and last.nargs == _SOME and extra < 1):
        raise Unsupported("a wrong number of positionals")
    if last is not None and last.nargs == _OPTIONAL and extra > 1:
        raise Unsupported("a wrong number of positionals")
    for a, w in zip(fixed, plain, strict=False):
        values[a.dest] = w
    if last is not None:
        tail = plain[len(fixed) :]
        if last.nargs == _OPTIONAL:
            values[last.dest] = tail[0] if tail else last.default
        elif tail or last.nargs == _SOME:
            values[last.dest] = tail
        else:
            values[last.dest] = last.default if last.default is not None else []
    return rest


def _options(options: list[Action], words: list[str], values: dict[str, Any]) -> None:
    """Exact option strings only (argparse would also take abbreviations and attached values)."""
    by_flag = {flag: a for a in options for flag in a.flags}
    i = 0
    while i < len(words):
        word = words[i]
        flag, eq, attached = word.partition("=")
        a = by_flag.get(word) or (by_flag.get(flag) if eq and flag.startswith("--") else None)
        if a is None:
            raise Unsupported(f"the word {word!r}")
        if a.takes_value():
            if eq and word not in by_flag:
                raw = attached
            elif i + 1 < len(words) and not words[i + 1].startswith("-"):
                i += 1
                raw = words[i]
            else:
                raise Unsupported("an option without its value")
            value = a.value(raw)
            values[a.dest] = [*(values[a.dest] or []), value] if a.action == "append" else value
        elif eq and word not in by_flag:
            raise Unsupported("a value given to a flag")
        else:
            values[a.dest] = a.const
        i += 1
