"""Safety numbers."""

from __future__ import annotations

import hashlib

import pytest

from chat_server.crypto.encoding import lp
from chat_server.crypto.errors import MalformedInput
from chat_server.crypto.safety import format_safety_number, safety_number

K1, K2, K3 = b"\x01" * 32, b"\x02" * 32, b"\xff" + b"\x00" * 31


def _by_hand(first: bytes, second: bytes) -> str:
    digest = hashlib.sha256(lp("cejchat/safety/v1") + first + second).digest()
    groups = [int.from_bytes(digest[i : i + 5], "big") % 100000 for i in range(0, 30, 5)]
    return "".join(f"{g:05d}" for g in groups)


def test_matches_the_format_computed_by_hand() -> None:
    number = safety_number("jeune", [K3, K1], "conseiller", [K2])
    expected = _by_hand(lp("conseiller") + lp(K2), lp("jeune") + lp(K1) + lp(K3))
    assert number == expected
    assert len(number) == 30
    assert number.isdigit()


def test_symmetric_and_independent_of_device_order() -> None:
    a = safety_number("alice", [K1, K2], "bob", [K3])
    assert a == safety_number("bob", [K3], "alice", [K2, K1])


def test_changes_when_a_key_changes() -> None:
    assert safety_number("a", [K1], "b", [K2]) != safety_number("a", [K1], "b", [K3])
    assert safety_number("a", [K1], "b", [K2]) != safety_number("a", [K1, K3], "b", [K2])


def test_user_ids_ordered_by_utf8_bytes() -> None:
    # "u-10" < "u-9" as bytes, though the length prefix would put "u-9" first.
    assert safety_number("u-9", [K1], "u-10", [K2]) == _by_hand(
        lp("u-10") + lp(K2), lp("u-9") + lp(K1)
    )
    # U+FF5A sorts before U+1F600 in UTF-8, after it in UTF-16 code units.
    assert safety_number("\U0001f600", [K1], "\uff5a", [K2]) == _by_hand(
        lp("\uff5a") + lp(K2), lp("\U0001f600") + lp(K1)
    )


def test_member_without_devices() -> None:
    assert safety_number("a", [], "b", [K1]) == _by_hand(lp("a"), lp("b") + lp(K1))


@pytest.mark.parametrize(
    ("user_b", "keys_b"),
    [("a", [K2]), ("b", [K2, K2]), ("b", [b"short"])],
)
def test_refusals(user_b: str, keys_b: list[bytes]) -> None:
    with pytest.raises(MalformedInput):
        safety_number("a", [K1], user_b, keys_b)


def test_format() -> None:
    assert format_safety_number("0123456789" * 3) == "01234 56789 01234 56789 01234 56789"
    with pytest.raises(MalformedInput):
        format_safety_number("12345")
