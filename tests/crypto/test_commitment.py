"""Epoch key commitments: the fixed vector file and the refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chat_server.crypto.commitment import (
    commitment_signed_bytes,
    epoch_commitment,
    key_matches_commitment,
    sign_commitment,
    verify_commitment_signature,
)
from chat_server.crypto.encoding import b64decode
from chat_server.crypto.keys import DeviceKeys

NAME = "epoch-commitment-v1.json"
# The repository's copy first, then the project's shared/ folder beside the checkout.
CANDIDATES = (
    Path(__file__).resolve().parent / NAME,
    Path(__file__).resolve().parents[3] / "shared" / "vectors" / NAME,
)


def _cases() -> list[dict[str, Any]]:
    for path in CANDIDATES:
        if path.is_file():
            cases: list[dict[str, Any]] = json.loads(path.read_text("utf-8"))["cases"]
            return cases
    raise FileNotFoundError(NAME)


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{c['conversation']}/{c['epoch']}")
def test_fixed_vector(case: dict[str, Any]) -> None:
    key = b64decode(case["epoch_key"])
    conv, epoch, creator = case["conversation"], case["epoch"], case["creator_device"]
    commitment = epoch_commitment(key, conv, epoch)
    assert commitment == b64decode(case["commitment"])
    assert commitment_signed_bytes(conv, epoch, creator, commitment).hex() == case[
        "signed_bytes_hex"
    ]
    keys = DeviceKeys.from_private_bytes(bytes(32), b64decode(case["creator_sig_priv"]))
    assert keys.public.sig_pub == b64decode(case["creator_sig_pub"])
    assert sign_commitment(keys, conv, epoch, creator, commitment) == b64decode(case["sig"])
    assert verify_commitment_signature(
        keys.public.sig_pub, conv, epoch, creator, commitment, b64decode(case["sig"])
    )


def test_another_key_epoch_or_signer_does_not_match() -> None:
    key = bytes(range(32))
    c = epoch_commitment(key, "c", 3)
    assert key_matches_commitment(key, "c", 3, c)
    assert not key_matches_commitment(bytes(32), "c", 3, c)
    assert not key_matches_commitment(key, "c", 4, c)
    assert not key_matches_commitment(key, "d", 3, c)
    assert not key_matches_commitment(b"short", "c", 3, c)
    alice = DeviceKeys.from_private_bytes(bytes(32), bytes([1]) * 32)
    bob = DeviceKeys.from_private_bytes(bytes(32), bytes([2]) * 32)
    sig = sign_commitment(alice, "c", 3, "d-a", c)
    assert verify_commitment_signature(alice.public.sig_pub, "c", 3, "d-a", c, sig)
    assert not verify_commitment_signature(bob.public.sig_pub, "c", 3, "d-a", c, sig)
    assert not verify_commitment_signature(alice.public.sig_pub, "c", 3, "d-b", c, sig)
    assert not verify_commitment_signature(alice.public.sig_pub, "c", 3, "d-a", c[:31], sig)
