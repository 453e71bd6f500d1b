"""JSON laid out as json.dumps(value, indent=2) lays it out, written a piece at a time:
what `--json` prints for `history` and `metrics`, whose documents grow with the number
of certificates (a run over 10,000 of them is a record of about 1.3 MB), is never held
whole, and is the same bytes as the whole document dumped at once (tests compare).

Side effects: none (the caller's `write` does the writing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

Write = Callable[[str], object]


def write_json(value: Any, write: Write, depth: int = 0) -> None:
    """`value` at `depth` (its container's depth + 1) of a document."""
    if isinstance(value, dict) and value:
        pad = "  " * (depth + 1)
        if _flat(value):  # one piece
            inner = ",".join(f"\n{pad}{json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            write(f"{{{inner}\n{'  ' * depth}}}")
            return
        write("{")
        for i, (key, item) in enumerate(value.items()):
            write(f"{',' if i else ''}\n{pad}{json.dumps(key)}: ")
            write_json(item, write, depth + 1)
        write("\n" + "  " * depth + "}")
    elif isinstance(value, list) and value:
        write_items(value, write, depth)
    else:
        write(json.dumps(value))


def _flat(value: dict[Any, Any]) -> bool:
    """No dict or list inside: written in one piece (a label set, a quiet certificate)."""
    return all(not isinstance(item, _CONTAINERS) for item in value.values())


_CONTAINERS = (dict, list)


def write_items(items: Iterable[Any], write: Write, depth: int = 0) -> None:
    """A list whose items come one at a time (from a generator): none is held after it
    is written."""
    pad = "  " * (depth + 1)
    count = 0
    for item in items:
        write(("[" if not count else ",") + f"\n{pad}")
        write_json(item, write, depth + 1)
        count += 1
    write("\n" + "  " * depth + "]" if count else "[]")


def dumped(value: Any, depth: int = 0) -> str:
    """One piece of a document as a string (a sample kept until its family is printed)."""
    parts: list[str] = []
    write_json(value, parts.append, depth)
    return "".join(parts)
