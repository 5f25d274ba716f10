"""The server's fast way to the signed bytes equals the format's definition, byte for byte."""

from __future__ import annotations

import random

import pytest

from chat_server.crypto.encoding import MAX_EPOCH
from chat_server.crypto.errors import MalformedInput
from chat_server.crypto.message import (
    aad_head_v2,
    message_signed_bytes,
    signed_bytes_v2,
)
from chat_server.crypto.meta import canonical_meta

METAS: list[dict[str, object]] = [
    {},
    {"reply_to": 3},
    {"b": [1, "é", None, True], "a": {"z": "\u0007", "y": -(2**53 - 1)}},
]


@pytest.mark.parametrize("seed", range(20))
def test_equal_to_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    conv = "c_" + "".join(rng.choice("abcdef0123456789é") for _ in range(rng.randint(1, 40)))
    device = "d_" + str(rng.getrandbits(64))
    epoch = rng.choice([0, 1, 7, MAX_EPOCH, rng.randint(0, MAX_EPOCH)])
    client_id = f"cl-{rng.getrandbits(40):x}"
    msg_type = rng.choice(["text", "system.note", "item.card"])
    meta = METAS[seed % len(METAS)]
    nonce = rng.randbytes(12)
    body = rng.randbytes(rng.randint(16, 600))
    fast = signed_bytes_v2(
        aad_head_v2(conv, epoch, device), client_id, msg_type, canonical_meta(meta), nonce, body
    )
    slow = message_signed_bytes(
        conv, epoch, device, client_id, msg_type, nonce, body, meta=meta, version=2
    )
    assert fast == slow


def test_empty_meta_fast_path_is_the_json_encoding() -> None:
    assert canonical_meta({}) == b"{}"


def test_malformed_strings_raise() -> None:
    with pytest.raises(MalformedInput):
        aad_head_v2("c", -1, "d")
    with pytest.raises(MalformedInput):
        signed_bytes_v2(b"", "\ud800", "text", b"{}", bytes(12), bytes(16))
