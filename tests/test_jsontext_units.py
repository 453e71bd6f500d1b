"""Unit: JSON written a piece at a time is the bytes json.dumps(indent=2) gives for the
whole value, whatever the value (random documents, a fixed seed)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from certagent.jsontext import (
    Items,
    dumped,
    lazy_object,
    write_compact,
    write_items,
    write_json,
)

SCALARS: list[Any] = [None, True, False, 0, -7, 2**70, 1.5, -0.0, 1e300, "", "a\"b\\c\n",
                      "é☃\U0001f600", "\x00\x1f"]  # fmt: skip


def value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        return rng.choice(SCALARS)
    if roll < 0.7:
        return {rng.choice(["k", "name", "é", "a b", ""]) + str(i): value(rng, depth + 1)
                for i in range(rng.randrange(0, 5))}  # fmt: skip
    return [value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]


def test_pieces_make_the_document_json_dumps_lays_out() -> None:
    rng = random.Random(28)  # noqa: S311 - a reproducible corpus, not a secret
    for _ in range(2000):
        v = value(rng)
        assert dumped(v) == json.dumps(v, indent=2), v


def test_items_from_a_generator_make_a_list_at_any_depth() -> None:
    rng = random.Random(7)  # noqa: S311 - a reproducible corpus, not a secret
    for depth in range(4):
        for count in (0, 1, 3):
            items = [value(rng) for _ in range(count)]
            parts: list[str] = []
            write_items(iter(items), parts.append, depth)
            whole = json.dumps({"x": items}, indent=2)
            inner = whole[len('{\n  "x": ') : -2]  # the list as laid out at depth 1
            if depth == 1:
                assert "".join(parts) == inner
            assert json.loads("".join(parts)) == items


def test_an_iterator_anywhere_in_a_document_is_the_list_it_yields() -> None:
    """A value that is an iterator (a report's endpoints, made one at a time) is laid
    out as the list of what it yields, at any depth, in any dict."""
    rng = random.Random(29)  # noqa: S311 - a reproducible corpus, not a secret
    for _ in range(300):
        items = [value(rng) for _ in range(rng.randrange(0, 4))]
        doc = {"schema": 1, "endpoints": items, "nested": {"a": [items], "z": None}}
        lazy = {"schema": 1, "endpoints": iter(items), "nested": {"a": [iter(items)], "z": None}}
        parts: list[str] = []
        write_json(lazy, parts.append)
        assert "".join(parts) == json.dumps(doc, indent=2)


def test_the_compact_form_is_json_dumps_sorted_with_iterators_as_lists() -> None:
    rng = random.Random(30)  # noqa: S311 - a reproducible corpus, not a secret
    for _ in range(300):
        items = [value(rng) for _ in range(rng.randrange(0, 600, 37))]  # 0 to many batches
        head = {f"k{i}": value(rng) for i in range(rng.randrange(0, 4))}
        parts: list[str] = []
        write_compact({**head, "m": iter(items)}, parts.append)
        whole = json.dumps({**head, "m": items}, sort_keys=True, separators=(",", ":"))
        assert "".join(parts) == whole
    parts = []
    write_compact({}, parts.append)
    assert "".join(parts) == "{}"


def test_an_object_read_with_a_list_left_as_text_is_the_object_json_reads() -> None:
    rng = random.Random(5)  # noqa: S311 - a reproducible corpus, not a secret
    for _ in range(1000):
        doc = {"a": value(rng), "certificates": [value(rng) for _ in range(rng.randrange(4))],
               "z": value(rng)}  # fmt: skip
        for layout in ({}, {"indent": 2}, {"separators": (",", ":")}, {"indent": "\t"}):
            text = json.dumps(doc, **layout)  # type: ignore[arg-type]
            read = lazy_object(text, "certificates")
            assert isinstance(read["certificates"], Items)
            assert read == doc and list(read["certificates"]) == doc["certificates"]
            assert dumped(read) == json.dumps(doc, indent=2)
        cut = rng.randrange(len(text))  # a torn line: refused as json.loads refuses it
        with pytest.raises(ValueError):
            lazy_object(text[:cut], "certificates")
    for bad in ('{"certificates": [1 2]}', '{"certificates": [1,]}', '{"a": 1} x', "[1]",
                '{"certificates": [1], }', '{1: 2}', ""):  # fmt: skip
        with pytest.raises(ValueError):
            lazy_object(bad, "certificates")
