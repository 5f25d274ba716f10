"""Epoch key commitments: which key an epoch is, fixed and signed by its creator.

    commitment = HMAC-SHA256(key=epoch_key, msg=lp("cejchat/epoch-commit/v1")
                             lp(conversation) lp(epoch))
    sig = Ed25519(creator device) over lp("cejchat/epoch-commit-sig/v1")
          lp(conversation) lp(epoch) lp(creator_device) lp(commitment)

A client accepts a key opened from an envelope only if it gives the epoch's
commitment, so an envelope holding another key (a poisoned re-wrap) is told
apart from the right one without any message of that epoch at hand.
"""

from __future__ import annotations

import hmac
from hashlib import sha256

from chat_server.crypto.encoding import epoch_bytes, lp
from chat_server.crypto.errors import MalformedInput
from chat_server.crypto.keys import DeviceKeys, verify_signature

__all__ = [
    "COMMITMENT_LEN",
    "commitment_signed_bytes",
    "epoch_commitment",
    "key_matches_commitment",
    "sign_commitment",
    "verify_commitment_signature",
]

COMMITMENT_LEN = 32
_LABEL = "cejchat/epoch-commit/v1"
_SIG_LABEL = "cejchat/epoch-commit-sig/v1"


def epoch_commitment(epoch_key: bytes, conversation: str, epoch: int) -> bytes:
    """The 32-byte commitment to `epoch_key` for (conversation, epoch)."""
    if not isinstance(epoch_key, bytes) or len(epoch_key) != 32:
        raise MalformedInput("epoch key must be 32 bytes")
    msg = lp(_LABEL) + lp(conversation) + lp(epoch_bytes(epoch))
    return hmac.new(epoch_key, msg, sha256).digest()


def key_matches_commitment(
    epoch_key: bytes, conversation: str, epoch: int, commitment: bytes
) -> bool:
    """Whether `epoch_key` is the key `commitment` fixes (constant time); never raises."""
    try:
        mine = epoch_commitment(epoch_key, conversation, epoch)
    except MalformedInput:
        return False
    return hmac.compare_digest(mine, commitment)


def commitment_signed_bytes(
    conversation: str, epoch: int, creator_device: str, commitment: bytes
) -> bytes:
    """The bytes the creator device signs."""
    return (
        lp(_SIG_LABEL)
        + lp(conversation)
        + lp(epoch_bytes(epoch))
        + lp(creator_device)
        + lp(commitment)
    )


def sign_commitment(
    keys: DeviceKeys, conversation: str, epoch: int, creator_device: str, commitment: bytes
) -> bytes:
    """The creator device's Ed25519 signature over the commitment."""
    return keys.sign(commitment_signed_bytes(conversation, epoch, creator_device, commitment))


def verify_commitment_signature(
    sig_pub: bytes,
    conversation: str,
    epoch: int,
    creator_device: str,
    commitment: bytes,
    sig: bytes,
) -> bool:
    """Whether `sig` is the creator's signature over the commitment; never raises."""
    if len(commitment) != COMMITMENT_LEN:
        return False
    try:
        data = commitment_signed_bytes(conversation, epoch, creator_device, commitment)
    except MalformedInput:
        return False
    return verify_signature(sig_pub, data, sig)
