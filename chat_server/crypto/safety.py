"""Safety numbers: a 30-digit fingerprint of two members' device signing keys.

For each member, the block is `lp(user_id)` then `lp(sig_pub)` for each of
their devices, sorted by raw key bytes. The blocks are ordered by user id
(compared as UTF-8 bytes), then

    digest = SHA-256(lp("cejchat/safety/v1") block_1 block_2)

and the first 30 bytes, read as six big-endian 5-byte integers, each modulo
100000, give six 5-digit groups. Both members compute the same number.

When the conversation's structure has a structure key, its public half is
bound too: `lp("cejchat/safety-structure/v1") lp(public_key)` is appended to
the hashed input (without one, the number is unchanged).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from chat_server.crypto.encoding import lp
from chat_server.crypto.errors import MalformedInput
from chat_server.crypto.keys import KEY_LEN

__all__ = ["format_safety_number", "safety_number"]


def _block(user_id: str, sig_pubs: Sequence[bytes]) -> bytes:
    for key in sig_pubs:
        if not isinstance(key, bytes) or len(key) != KEY_LEN:
            raise MalformedInput(f"sig_pub must be {KEY_LEN} raw bytes")
    if len(set(sig_pubs)) != len(sig_pubs):
        raise MalformedInput(f"duplicate sig_pub for user {user_id!r}")
    return lp(user_id) + b"".join(lp(key) for key in sorted(sig_pubs))


def safety_number(
    user_a: str,
    sig_pubs_a: Sequence[bytes],
    user_b: str,
    sig_pubs_b: Sequence[bytes],
    structure_public: bytes | None = None,
) -> str:
    """Return the 30-digit safety number (no separators) of two members.

    Symmetric in (a, b). Raises `MalformedInput` if the user ids are equal,
    a key is not 32 bytes, or a member lists the same key twice.
    `structure_public`: the structure key's raw public half, if any.
    """
    block_a, block_b = _block(user_a, sig_pubs_a), _block(user_b, sig_pubs_b)
    # Order by the UTF-8 bytes (not by lp(), which would put shorter ids first, nor by
    # UTF-16 code units, which is what JavaScript's string comparison does).
    key_a, key_b = user_a.encode("utf-8"), user_b.encode("utf-8")
    if key_a == key_b:
        raise MalformedInput("a safety number needs two different users")
    first, second = (block_a, block_b) if key_a < key_b else (block_b, block_a)
    tail = b""
    if structure_public is not None:
        if not isinstance(structure_public, bytes) or len(structure_public) != KEY_LEN:
            raise MalformedInput(f"structure public key must be {KEY_LEN} raw bytes")
        tail = lp("cejchat/safety-structure/v1") + lp(structure_public)
    digest = hashlib.sha256(lp("cejchat/safety/v1") + first + second + tail).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def format_safety_number(number: str) -> str:
    """Show a 30-digit safety number as six groups of five separated by spaces."""
    if len(number) != 30 or not number.isascii() or not number.isdigit():
        raise MalformedInput("a safety number is 30 ASCII digits")
    return " ".join(number[i : i + 5] for i in range(0, 30, 5))
