"""The canonical encoding of `meta` (format version 2)."""

from __future__ import annotations

from typing import Any

import pytest

from chat_server.crypto.errors import MalformedInput
from chat_server.crypto.meta import canonical_meta


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({}, b"{}"),
        ({"b": 1, "a": 2, "B": 3, "_": 4}, b'{"B":3,"_":4,"a":2,"b":1}'),
        ({"n": -(2**53 - 1), "m": 2**53 - 1}, b'{"m":9007199254740991,"n":-9007199254740991}'),
        ({"t": True, "f": False, "z": None}, b'{"f":false,"t":true,"z":null}'),
        ({"l": [{"y": 1, "x": [2]}, "é"]}, '{"l":[{"x":[2],"y":1},"é"]}'.encode()),
        (
            {"s": 'a"b\\c\b\f\n\r\t\x00\x1f\x7f\u2028😀/'},
            '{"s":"a\\"b\\\\c\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\u2028😀/"}'.encode(),
        ),
    ],
)
def test_canonical_form(meta: dict[str, Any], expected: bytes) -> None:
    assert canonical_meta(meta) == expected


@pytest.mark.parametrize(
    "meta",
    [
        {"due": 1.5},
        {"due": 1.0},
        {"due": float("nan")},
        {"n": 2**53},
        {"n": -(2**53)},
        {"bad key": 1},
        {"": 1},
        {"é": 1},
        {"k" * 65: 1},
        {"s": "\ud800"},
        {"b": b"bytes"},
        {"deep": [[[[[[[[1]]]]]]]]},
    ],
)
def test_values_without_a_canonical_form_are_refused(meta: dict[str, Any]) -> None:
    with pytest.raises(MalformedInput):
        canonical_meta(meta)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(MalformedInput):
        canonical_meta([1, 2])  # type: ignore[arg-type]


def test_seven_levels_of_nesting_are_allowed() -> None:
    assert canonical_meta({"d": [[[[[[1]]]]]]}) == b'{"d":[[[[[[1]]]]]]}'
