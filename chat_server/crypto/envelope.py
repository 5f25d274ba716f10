"""Epoch-key envelopes: an epoch key HPKE-sealed to one device, signed by the sender.

    info = lp("cejchat/envelope/v1") lp(conversation) lp(epoch) lp(recipient_device)
    aad  = lp(sender_device)
    enc, ct = HPKE base-mode single-shot seal of the 32-byte epoch key
    sig  = Ed25519(sender) over lp("cejchat/envelope-sig/v1") lp(info) lp(aad) lp(enc) lp(ct)

JSON: {"conversation", "epoch", "recipient_device", "sender_device", "enc", "ct", "sig"}
with `epoch` a JSON integer and the binary fields unpadded base64url.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chat_server.crypto import hpke
from chat_server.crypto.encoding import (
    b64encode,
    bytes_field,
    epoch_bytes,
    epoch_field,
    lp,
    str_field,
)
from chat_server.crypto.errors import BadSignature, DecryptError, MalformedInput
from chat_server.crypto.keys import SIG_LEN, DeviceKeys, verify_signature

__all__ = [
    "EPOCH_KEY_LEN",
    "Envelope",
    "envelope_aad",
    "envelope_info",
    "envelope_signed_bytes",
    "generate_epoch_key",
    "open_envelope",
    "verify_envelope_signature",
    "wrap_epoch_key",
]

EPOCH_KEY_LEN = 32
_ENC_LEN = 32
_CT_LEN = EPOCH_KEY_LEN + 16


def generate_epoch_key() -> bytes:
    """Return a fresh random 32-byte epoch key (an AES-256-GCM key)."""
    return secrets.token_bytes(EPOCH_KEY_LEN)


def envelope_info(conversation: str, epoch: int, recipient_device: str) -> bytes:
    """The HPKE `info` binding conversation, epoch and recipient device."""
    return (
        lp("cejchat/envelope/v1") + lp(conversation) + lp(epoch_bytes(epoch)) + lp(recipient_device)
    )


def envelope_aad(sender_device: str) -> bytes:
    """The HPKE associated data: the sender device id."""
    return lp(sender_device)


def envelope_signed_bytes(info: bytes, aad: bytes, enc: bytes, ct: bytes) -> bytes:
    """The bytes the sender device signs for an envelope."""
    return lp("cejchat/envelope-sig/v1") + lp(info) + lp(aad) + lp(enc) + lp(ct)


@dataclass(frozen=True)
class Envelope:
    """One epoch key for one recipient device; the fields of the envelope JSON."""

    conversation: str
    epoch: int
    recipient_device: str
    sender_device: str
    enc: bytes
    ct: bytes
    sig: bytes

    @property
    def info(self) -> bytes:
        """The HPKE info this envelope was sealed with."""
        return envelope_info(self.conversation, self.epoch, self.recipient_device)

    @property
    def aad(self) -> bytes:
        """The HPKE associated data this envelope was sealed with."""
        return envelope_aad(self.sender_device)

    def signed_bytes(self) -> bytes:
        """The bytes `sig` covers."""
        return envelope_signed_bytes(self.info, self.aad, self.enc, self.ct)

    def to_json(self) -> dict[str, str | int]:
        """The JSON object (binary fields as unpadded base64url)."""
        return {
            "conversation": self.conversation,
            "epoch": self.epoch,
            "recipient_device": self.recipient_device,
            "sender_device": self.sender_device,
            "enc": b64encode(self.enc),
            "ct": b64encode(self.ct),
            "sig": b64encode(self.sig),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> Envelope:
        """Parse and check the JSON object; raise `MalformedInput` naming the bad field.

        Checks types and lengths only, not the signature.
        """
        if not isinstance(doc, Mapping):
            raise MalformedInput("envelope: expected a JSON object")
        w = "envelope"
        return cls(
            conversation=str_field(doc, "conversation", w),
            epoch=epoch_field(doc, "epoch", w),
            recipient_device=str_field(doc, "recipient_device", w),
            sender_device=str_field(doc, "sender_device", w),
            enc=bytes_field(doc, "enc", w, length=_ENC_LEN),
            ct=bytes_field(doc, "ct", w, length=_CT_LEN),
            sig=bytes_field(doc, "sig", w, length=SIG_LEN),
        )


def wrap_epoch_key(
    epoch_key: bytes,
    *,
    sender: DeviceKeys,
    sender_device: str,
    recipient_device: str,
    recipient_dh_pub: bytes,
    conversation: str,
    epoch: int,
    ephemeral: X25519PrivateKey | None = None,
) -> Envelope:
    """Seal `epoch_key` to the recipient device's X25519 key and sign it as `sender`.

    `ephemeral` fixes the HPKE ephemeral key; only test vectors pass it.
    Raises `MalformedInput` on a bad key length, id or epoch.
    """
    if not isinstance(epoch_key, bytes) or len(epoch_key) != EPOCH_KEY_LEN:
        raise MalformedInput(f"epoch key must be {EPOCH_KEY_LEN} bytes")
    info = envelope_info(conversation, epoch, recipient_device)
    aad = envelope_aad(sender_device)
    enc, ct = hpke.seal_base(recipient_dh_pub, info, aad, epoch_key, ephemeral=ephemeral)
    sig = sender.sign(envelope_signed_bytes(info, aad, enc, ct))
    return Envelope(conversation, epoch, recipient_device, sender_device, enc, ct, sig)


def verify_envelope_signature(envelope: Envelope, sender_sig_pub: bytes) -> bool:
    """Return whether the envelope is signed by `sender_sig_pub`; never raises."""
    try:
        data = envelope.signed_bytes()
    except MalformedInput:
        return False
    return verify_signature(sender_sig_pub, data, envelope.sig)


def open_envelope(envelope: Envelope, recipient: DeviceKeys, sender_sig_pub: bytes) -> bytes:
    """Check the sender's signature, then open the envelope; return the 32-byte epoch key.

    Raises `BadSignature` if the signature does not verify under
    `sender_sig_pub`, `DecryptError` if HPKE open fails (wrong recipient key,
    or conversation / epoch / device ids not those it was sealed with).
    """
    if not verify_envelope_signature(envelope, sender_sig_pub):
        raise BadSignature("envelope signature does not verify")
    key = hpke.open_base(
        envelope.enc, recipient.dh_private_key, envelope.info, envelope.aad, envelope.ct
    )
    if len(key) != EPOCH_KEY_LEN:
        raise DecryptError("envelope does not hold a 32-byte epoch key")
    return key
