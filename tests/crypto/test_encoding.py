"""lp() and strict unpadded base64url."""

from __future__ import annotations

import pytest

from chat_server.crypto.encoding import (
    MAX_EPOCH,
    b64decode,
    b64encode,
    bytes_field,
    epoch_field,
    lp,
)
from chat_server.crypto.errors import MalformedInput


def test_lp_known_answers() -> None:
    assert lp(b"") == b"\x00\x00\x00\x00"
    assert lp(b"\x01\x02") == b"\x00\x00\x00\x02\x01\x02"
    assert lp("é") == b"\x00\x00\x00\x02\xc3\xa9"
    assert lp(0) == b"\x00\x00\x00\x010"
    assert lp(MAX_EPOCH) == b"\x00\x00\x00\x109007199254740991"


@pytest.mark.parametrize("bad", [-1, MAX_EPOCH + 1, True])
def test_lp_refuses_bad_epochs(bad: int) -> None:
    with pytest.raises(MalformedInput):
        lp(bad)


def test_lp_refuses_lone_surrogates() -> None:
    with pytest.raises(MalformedInput):
        lp("\ud800")


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff\xfe", b"abc", bytes(range(256))])
def test_b64_round_trip_without_padding(data: bytes) -> None:
    text = b64encode(data)
    assert "=" not in text
    assert "+" not in text
    assert "/" not in text
    assert b64decode(text) == data


def test_b64_known_answer() -> None:
    assert b64encode(b"\xfb\xff") == "-_8"


@pytest.mark.parametrize(
    "bad",
    ["a", "ab==", "ab=", "+/8", "ab c", "ab\n", "AB", "é", "abcde"],
)
def test_b64_refuses_malformed(bad: str) -> None:
    with pytest.raises(MalformedInput) as info:
        b64decode(bad, what="field")
    assert isinstance(info.value, ValueError)
    assert "field" in str(info.value)


def test_b64_refuses_non_strings_and_wrong_lengths() -> None:
    with pytest.raises(MalformedInput):
        b64decode(b"AAAA")  # type: ignore[arg-type]
    with pytest.raises(MalformedInput, match="expected 32 bytes"):
        b64decode(b64encode(bytes(31)), length=32)


def test_json_field_helpers() -> None:
    doc: dict[str, object] = {"k": b64encode(b"xy"), "e": 3, "b": True, "n": None}
    assert bytes_field(doc, "k", "doc") == b"xy"
    assert epoch_field(doc, "e", "doc") == 3
    with pytest.raises(MalformedInput, match=r"doc\.b"):
        epoch_field(doc, "b", "doc")
    with pytest.raises(MalformedInput, match=r"doc\.n"):
        bytes_field(doc, "n", "doc")
