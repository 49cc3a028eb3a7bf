"""Tables (Incus's boxed, compact and markdown styles), csv, json and yaml output."""

from __future__ import annotations

import sys

from pincus.cli import jsonc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

FORMATS = ("table", "compact", "csv", "json", "yaml", "markdown")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    split = [[c.split("\n") for c in r] for r in cells]
    widths = _widths(headers, split)
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [sep, "|" + "|".join(f" {h.center(w)} " for h, w in zip(headers, widths, strict=True)) + "|", sep]
    for r in split:
        height = max((len(lines) for lines in r), default=1)
        for n in range(height):
            parts = [lines[n] if n < len(lines) else "" for lines in r]
            out.append("|" + "|".join(f" {p.ljust(w)} " for p, w in zip(parts, widths, strict=True)) + "|")
        out.append(sep)
    return "\n".join(out)


def _widths(headers: Sequence[str], split: list[list[list[str]]]) -> list[int]:
    widths = [len(h) for h in headers]
    for r in split:
        for i, lines in enumerate(r):
            widths[i] = max(widths[i], *(len(x) for x in lines))
    return widths


def compact(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Incus's compact style: no borders, columns two spaces apart, a cell's lines one under another."""
    split = [[str(c).split("\n") for c in r] for r in rows]
    widths = _widths(headers, split)

    def line(parts: Sequence[str]) -> str:
        return "  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip()

    out = [line(headers)]
    for r in split:
        for n in range(max((len(lines) for lines in r), default=1)):
            out.append(line([lines[n] if n < len(lines) else "" for lines in r]))
    return "\n".join(out)


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; a cell's lines are joined by <br>."""
    cells = [[str(c).replace("|", "\\|").replace("\n", "<br>") for c in r] for r in rows]
    widths = _widths(headers, [[[c] for c in r] for r in cells])
    out = [
        "|" + "|".join(f" {h.center(w)} " for h, w in zip(headers, widths, strict=True)) + "|",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    out += ["|" + "|".join(f" {c.ljust(w)} " for c, w in zip(r, widths, strict=True)) + "|" for r in cells]
    return "\n".join(out)


def dump_yaml(doc: Any) -> str:
    from pincus.cli.yamlout import dump

    text = dump(doc)  # the usual documents, without PyYAML
    if text is not None:
        return text
    import yaml  # only the documents yamlout is not sure of pay for it

    return str(yaml.safe_dump(doc, default_flow_style=False, sort_keys=False, allow_unicode=True))


def load_yaml(text: str) -> Any:
    """YAML as Incus's client reads it into string-valued maps: `yes`, `on`, `0x10` or `1_000` stay the
    text that was written (YAML 1.1 would make them booleans and numbers); only true/false are
    booleans, for fields such as `ephemeral`."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return yaml.load(text, Loader=Loader)


def render(fmt: str, headers: Sequence[str], rows: Sequence[Sequence[str]], objects: Any) -> None:
    if fmt == "table":
        print(table(headers, rows))
    elif fmt == "compact":
        print(compact(headers, rows))
    elif fmt == "markdown":
        print(markdown(headers, rows))
    elif fmt == "csv":
        import csv  # only --format=csv pays for it

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerows(rows)
    elif fmt == "json":
        print(jsonc.dumps(objects))
    else:
        sys.stdout.write(dump_yaml(objects))
