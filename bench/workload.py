"""The modelled traffic: who talks to whom, and what one message looks like on the wire.

P conversations of two members (a beneficiary ``b<i>`` and a counsellor
``c<i>``, conversation ``conv<i>``). A message is what a real client sends for
a 100-300 character text: ``body`` is the AES-256-GCM ciphertext of
``{"text":"..."}`` (UTF-8, a few accented letters, 16-byte tag), ``nonce`` 12
bytes, ``sig`` an Ed25519 signature (64 bytes), all base64 in the frame. In
unsigned mode the bytes are random (the server cannot tell); in signed mode
they are real (``bench.signed``).
"""

from __future__ import annotations

import base64
import os
import random
from dataclasses import dataclass

# {"text": ""} around the text, and the GCM tag.
_JSON_OVERHEAD = len(b'{"text":""}')
_TAG = 16
# French text: about 4% of characters take two bytes in UTF-8.
_BYTES_PER_CHAR = 1.04
TEXT_CHARS = (100, 300)


def user_ids(pair: int) -> tuple[str, str]:
    """(beneficiary, counsellor) ids of pair ``pair``."""
    return f"b{pair}", f"c{pair}"


def conversation_id(pair: int) -> str:
    """The conversation of pair ``pair``."""
    return f"conv{pair}"


def token_of(user_id: str) -> str:
    """The bench session token of a seeded user (its hash is what the store holds)."""
    return "bench-token-" + user_id


def device_of(user_id: str) -> str:
    """The device id of a seeded user's session."""
    return "dev-" + user_id


def ciphertext_len(chars: int) -> int:
    """Bytes of the ciphertext of a ``text`` message of ``chars`` characters."""
    return _JSON_OVERHEAD + round(chars * _BYTES_PER_CHAR) + _TAG


@dataclass(frozen=True)
class Payloads:
    """A pool of message bodies and signatures (base64 bytes), drawn at random per message."""

    bodies: tuple[bytes, ...]
    sigs: tuple[bytes, ...]

    @classmethod
    def make(cls, seed: int, count: int = 64) -> Payloads:
        rng = random.Random(seed)
        bodies = tuple(
            base64.b64encode(rng.randbytes(ciphertext_len(rng.randint(*TEXT_CHARS))))
            for _ in range(count)
        )
        sigs = tuple(base64.b64encode(rng.randbytes(64)) for _ in range(count))
        return cls(bodies, sigs)

    def mean_body_b64(self) -> float:
        """Mean base64 length of a body, for the report."""
        return sum(len(b) for b in self.bodies) / len(self.bodies)


def fresh_nonce() -> bytes:
    """A new random 96-bit nonce, base64: the server refuses a nonce reused by a device."""
    return base64.b64encode(os.urandom(12))
