"""JSON laid out as json.dumps(value, indent=2) lays it out, written a piece at a time:
what `--json` prints for `history` and `metrics`, whose documents grow with the number
of certificates (a run over 10,000 of them is a record of about 1.3 MB), is never held
whole, and is the same bytes as the whole document dumped at once (tests compare).

And the other way: a large object read with one of its lists left as text (`Items`),
its entries decoded one at a time each time it is walked (`lazy_object`): a record of
a run that renewed 10,000 certificates is 5.6 MB of text, and 20 MB once decoded.

`write_compact` is the one-line form (the audit log, check.json), by json's C encoder.

Side effects: none (the caller's `write` does the writing).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    elif (isinstance(value, list) and value) or isinstance(value, Items | Iterator):
        write_items(value, write, depth)  # an iterator: its entries made as they are written
    else:
        write(json.dumps(value))


def _flat(value: dict[Any, Any]) -> bool:
    """No dict or list inside: written in one piece (a label set, a quiet certificate)."""
    return all(not isinstance(item, _CONTAINERS) for item in value.values())


_CONTAINERS: tuple[type, ...] = (dict, list)  # and Items, below


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


def write_compact(record: Mapping[str, Any], write: Write) -> None:
    """`record` as json.dumps(record, sort_keys=True, separators=(",", ":")) writes it,
    by json's C encoder: a value that is an iterator is the list of what it yields,
    encoded BATCH entries at a time and let go (the audit record of a run over 10,000
    certificates is 5.6 MB of text, never also 50 MB of objects)."""
    for i, key in enumerate(sorted(record)):
        value = record[key]
        write(f"{',' if i else '{'}{_COMPACT.encode(key)}:")
        if isinstance(value, Iterator):
            write("[")
            more = ""
            while batch := list(itertools.islice(value, BATCH)):
                write(more + _COMPACT.encode(batch)[1:-1])  # the entries, without brackets
                more = ","
            write("]")
        else:
            write(_COMPACT.encode(value))
    write("}" if record else "{}")


BATCH = 256
_COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def dumped(value: Any, depth: int = 0) -> str:
    """One piece of a document as a string (a sample kept until its family is printed)."""
    parts: list[str] = []
    write_json(value, parts.append, depth)
    return "".join(parts)


class Items:
    """A list of a JSON text, decoded an entry at a time each time it is walked (it was
    checked whole when it was found)."""

    def __init__(self, text: str, start: int) -> None:
        self._text, self._start = text, start  # at its "["

    def __iter__(self) -> Iterator[Any]:
        text, decode, after = self._text, _DECODER.raw_decode, _AFTER.match
        at = _space(text, self._start + 1)
        if text[at] == "]":
            return
        while True:
            item, at = decode(text, at)
            yield item
            found = after(text, at)  # checked whole when found: a comma or the end
            if found is None or found.group(1) == "]":
                return
            at = found.end()

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, Items) else other)

    __hash__ = None  # type: ignore[assignment]


_CONTAINERS += (Items, Iterator)
_DECODER = json.JSONDecoder()
_WS = " \t\n\r"
_AFTER = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")


def _space(text: str, at: int) -> int:
    while at < len(text) and text[at] in _WS:
        at += 1
    return at


def lazy_object(text: str, lazy: str) -> dict[str, Any]:
    """A JSON object whose key `lazy`, when it holds a list, is an `Items` (decoded
    once here, to be sure of it, and let go). ValueError when `text` is not exactly one
    JSON object."""
    at = _space(text, 0)
    if text[at : at + 1] != "{":
        raise ValueError("not a JSON object")
    out: dict[str, Any] = {}
    at = _space(text, at + 1)
    while text[at : at + 1] != "}" or out:  # after a comma, a key: never "}"
        key, at = _DECODER.raw_decode(text, at)
        at = _space(text, at)
        if not isinstance(key, str) or text[at : at + 1] != ":":
            raise ValueError(f"expected a key and a colon at {at}")
        at = _space(text, at + 1)
        if key == lazy and text[at : at + 1] == "[":
            items = Items(text, at)
            at = _checked(text, at)
            out[key] = items
        else:
            out[key], at = _DECODER.raw_decode(text, at)
        at = _space(text, at)
        if text[at : at + 1] == "}":
            break
        if text[at : at + 1] != ",":
            raise ValueError(f"expected , or }} at {at}")
        at = _space(text, at + 1)
    if _space(text, at + 1) != len(text):
        raise ValueError("extra data after the object")
    return out


def _checked(text: str, at: int) -> int:
    """Past the list at `at`, decoded whole to be sure of it: its objects let go as
    they are made (a list of None is what is held)."""
    _, end = _SKIPPER.raw_decode(text, at)
    return int(end)


_SKIPPER = json.JSONDecoder(object_pairs_hook=lambda pairs: None)
