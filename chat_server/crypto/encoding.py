"""Byte encodings shared by every part of the format (docs/crypto-format.md).

- `lp(x)`: 4-byte big-endian length, then the bytes; strings are UTF-8 and
  epochs are their decimal ASCII string.
- `b64encode` / `b64decode`: base64url without padding. Decoding is strict:
  it refuses padding, whitespace, characters outside the URL-safe alphabet
  and non-canonical encodings, raising `MalformedInput` (a `ValueError`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from chat_server.crypto.errors import MalformedInput

__all__ = [
    "MAX_EPOCH",
    "b64decode",
    "b64encode",
    "bytes_field",
    "epoch_bytes",
    "epoch_field",
    "lp",
    "str_field",
]

#: Largest epoch the format accepts: the browser holds epochs as JS numbers.
MAX_EPOCH = 2**53 - 1

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def epoch_bytes(epoch: int) -> bytes:
    """Return the decimal ASCII form of `epoch`, an int in [0, MAX_EPOCH].

    Raises `MalformedInput` for anything else (including bool).
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        raise MalformedInput(f"epoch must be an integer in [0, 2**53-1], got {epoch!r}")
    return str(epoch).encode("ascii")


def lp(value: bytes | str | int) -> bytes:
    """Length-prefix `value`: 4-byte big-endian length, then the bytes.

    `str` is encoded as UTF-8 (a lone surrogate raises `MalformedInput`);
    `int` is an epoch, written as its decimal ASCII string. Callers that take
    an epoch from outside pass `epoch_bytes(epoch)` so a string "2" cannot
    stand in for the epoch 2.
    """
    if isinstance(value, str):
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedInput("string is not valid Unicode text") from exc
    elif isinstance(value, int):
        data = epoch_bytes(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        raise MalformedInput(f"cannot length-prefix a {type(value).__name__}")
    if len(data) >= 2**32:
        raise MalformedInput("value too long for a 4-byte length prefix")
    return len(data).to_bytes(4, "big") + data


def b64encode(data: bytes) -> str:
    """Encode `data` as base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str, *, length: int | None = None, what: str = "value") -> bytes:
    """Decode strict base64url without padding; check the length if `length` is given.

    Raises `MalformedInput` naming `what` on any bad input, never another error.
    """
    if not isinstance(text, str):
        raise MalformedInput(f"{what}: expected a base64url string, got {type(text).__name__}")
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise MalformedInput(f"{what}: not unpadded base64url")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise MalformedInput(f"{what}: not unpadded base64url") from exc
    if b64encode(data) != text:
        # Unused trailing bits set: refuse, so every value has one spelling.
        raise MalformedInput(f"{what}: non-canonical base64url")
    if length is not None and len(data) != length:
        raise MalformedInput(f"{what}: expected {length} bytes, got {len(data)}")
    return data


def str_field(doc: Mapping[str, object], name: str, where: str) -> str:
    """Return `doc[name]` if it is a string; else raise `MalformedInput` naming `where.name`."""
    value = doc.get(name)
    if not isinstance(value, str):
        raise MalformedInput(f"{where}.{name}: expected a string")
    return value


def epoch_field(doc: Mapping[str, object], name: str, where: str) -> int:
    """Return `doc[name]` if it is a JSON integer in [0, MAX_EPOCH]; else `MalformedInput`."""
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EPOCH:
        raise MalformedInput(f"{where}.{name}: expected an integer in [0, 2**53-1]")
    return value


def bytes_field(
    doc: Mapping[str, object], name: str, where: str, *, length: int | None = None
) -> bytes:
    """Decode `doc[name]` as unpadded base64url (of `length` bytes if given)."""
    return b64decode(str_field(doc, name, where), length=length, what=f"{where}.{name}")
