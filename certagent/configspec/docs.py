"""What is generated from the description: the JSON Schema and the reference tables of
docs/configuration.md."""

from __future__ import annotations

import re
from typing import Any

from ..configkinds import (
    Duration,
    Key,
    Kind,
    ListOf,
    MapOf,
    Section,
    human,
)
from .common import ENDPOINT, CommandKind, unwrap
from .top import TOP


def json_schema() -> dict[str, Any]:
    """The configuration's JSON Schema (draft 2020-12), from the description."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://certagent.invalid/schemas/config.schema.json",
        "title": "certagent configuration",
        "description": "Generated from certagent/configspec.py; the loader validates the "
        "same description and also checks what a schema cannot (files exist, users and "
        "groups exist, cross-key rules).",
        **TOP.schema(),
    }


def section(path: str) -> Section:
    """The section at a dotted path: `certificates.*.deploy`, `monitor.endpoints[]`."""
    node: Kind[Any] = TOP
    for part in filter(None, re.split(r"\.|(?=\[\])", path)):
        node = unwrap(node)
        if (part == "[]" and isinstance(node, ListOf)) or (part == "*" and isinstance(node, MapOf)):
            node = node.item
        elif isinstance(node, Section):
            node = node.keys[part].kind
        else:
            raise KeyError(path)
    node = unwrap(node)
    if not isinstance(node, Section):
        raise KeyError(path)
    return node


def table(path: str) -> str:
    """The reference table of one section (`top`, a dotted path, or `command` and
    `endpoint`, the mapping forms of those two), as Markdown."""
    named = {"top": TOP, "command": CommandKind.MAPPING, "endpoint": ENDPOINT}
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in (named.get(path) or section(path)).keys.values():
        cells = (f"`{key.name}`", key.kind.text, _default(key), key.doc)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def _default(key: Key) -> str:
    if key.required:
        return "required"
    if key.default_doc:
        return key.default_doc
    d = key.default
    if d is None:
        return "none"
    if isinstance(d, bool):
        return f"`{str(d).lower()}`"
    if isinstance(key.kind, Duration):
        return f"`{human(float(d))}`"
    if isinstance(d, tuple | list):
        return f"`[{', '.join(str(x) for x in d)}]`"
    if isinstance(d, dict):
        return "`{}`"
    return f"`{d:g}`" if isinstance(d, float) else f"`{d}`"


_MARKED = re.compile(r"(<!-- table: (\S+) -->\n)(?:(?!<!-- table:).)*?(<!-- end table -->)", re.S)


def render_docs(text: str) -> str:
    """docs/configuration.md with every `<!-- table: PATH -->` block regenerated."""
    return _MARKED.sub(lambda m: f"{m.group(1)}{table(m.group(2))}\n{m.group(3)}", text)
