"""The structure key: one X25519 key pair per structure, for transfers with nobody online.

docs/crypto-format.md, "Structure key". Every epoch of a conversation of the
structure has one more envelope (the usual `envelope` format) whose recipient
is the structure key: ``recipient_device = "structure:" + key_id``, sealed to
the structure's public key. The private half is handed to each staff device
of the structure in a *grant*, HPKE-sealed to that device:

    key_id    = b64url(SHA-256(lp("cejchat/structure-key-id/v1") lp(public_key))[0:16])
    statement = lp("cejchat/structure-key/v1") lp(structure) lp(public_key) lp(creator_device)
    key sig   = Ed25519(creator device) over statement
    info      = lp("cejchat/structure-grant/v1") lp(structure) lp(key_id) lp(recipient_device)
    aad       = lp(sender_device)
    enc, ct   = HPKE base-mode seal of the 32-byte X25519 private scalar
    grant sig = Ed25519(sender) over
                lp("cejchat/structure-grant-sig/v1") lp(info) lp(aad) lp(enc) lp(ct)

A grant is accepted only if its signature verifies and the scalar it holds
gives the announced public key (so a grant can hold no other key).

An *endorsement* is a staff device's signature over the key it verified and
pinned (docs/security.md, "Endorsements"), which a young person's client asks of
its counsellor's device before it pins a key for the first time:

    endorsement = Ed25519(endorsing device) over
                  lp("cejchat/structure-endorsement/v1") lp(structure) lp(key_id)
                  lp(public_key) lp(endorser_device)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chat_server.crypto import hpke
from chat_server.crypto.encoding import b64encode, bytes_field, lp, str_field
from chat_server.crypto.envelope import EPOCH_KEY_LEN, Envelope, verify_envelope_signature
from chat_server.crypto.errors import BadSignature, DecryptError, MalformedInput
from chat_server.crypto.keys import KEY_LEN, SIG_LEN, DeviceKeys, verify_signature

__all__ = [
    "RECIPIENT_PREFIX",
    "StructureGrant",
    "endorsement_statement",
    "is_structure_recipient",
    "key_statement",
    "open_grant",
    "open_structure_envelope",
    "sign_endorsement",
    "sign_structure_key",
    "structure_key_id",
    "structure_recipient",
    "verify_endorsement",
    "verify_structure_key",
    "wrap_grant",
]

RECIPIENT_PREFIX = "structure:"
_ID_LABEL = "cejchat/structure-key-id/v1"
_KEY_LABEL = "cejchat/structure-key/v1"
_GRANT_LABEL = "cejchat/structure-grant/v1"
_GRANT_SIG_LABEL = "cejchat/structure-grant-sig/v1"
_ENDORSEMENT_LABEL = "cejchat/structure-endorsement/v1"
_CT_LEN = KEY_LEN + 16


def structure_key_id(public_key: bytes) -> str:
    """The key's id: 16 bytes of a labelled SHA-256 of its public half, base64url (22 chars)."""
    if not isinstance(public_key, bytes) or len(public_key) != KEY_LEN:
        raise MalformedInput(f"structure public key must be {KEY_LEN} bytes")
    return b64encode(hashlib.sha256(lp(_ID_LABEL) + lp(public_key)).digest()[:16])


def structure_recipient(key_id: str) -> str:
    """The `recipient_device` of an epoch envelope sealed to the structure key."""
    return RECIPIENT_PREFIX + key_id


def is_structure_recipient(recipient_device: str) -> bool:
    """Whether an envelope's recipient is a structure key (not a device)."""
    return recipient_device.startswith(RECIPIENT_PREFIX)


def key_statement(structure: str, public_key: bytes, creator_device: str) -> bytes:
    """The bytes the creating device signs for a structure key."""
    return lp(_KEY_LABEL) + lp(structure) + lp(public_key) + lp(creator_device)


def sign_structure_key(
    creator: DeviceKeys, structure: str, public_key: bytes, creator_device: str
) -> bytes:
    """The creating device's signature over the structure key's public half."""
    return creator.sign(key_statement(structure, public_key, creator_device))


def verify_structure_key(
    creator_sig_pub: bytes, structure: str, public_key: bytes, creator_device: str, sig: bytes
) -> bool:
    """Whether `sig` is the creator device's signature of this structure key; never raises."""
    try:
        data = key_statement(structure, public_key, creator_device)
    except MalformedInput:
        return False
    return len(public_key) == KEY_LEN and verify_signature(creator_sig_pub, data, sig)


def endorsement_statement(
    structure: str, key_id: str, public_key: bytes, endorser_device: str
) -> bytes:
    """The bytes a staff device signs to endorse a structure key it verified and pinned."""
    return (
        lp(_ENDORSEMENT_LABEL) + lp(structure) + lp(key_id) + lp(public_key) + lp(endorser_device)
    )


def sign_endorsement(
    endorser: DeviceKeys, structure: str, public_key: bytes, endorser_device: str
) -> bytes:
    """The endorsing device's signature over the structure key (its id computed here)."""
    key_id = structure_key_id(public_key)
    return endorser.sign(endorsement_statement(structure, key_id, public_key, endorser_device))


def verify_endorsement(
    endorser_sig_pub: bytes,
    structure: str,
    key_id: str,
    public_key: bytes,
    endorser_device: str,
    sig: bytes,
) -> bool:
    """Whether `sig` is `endorser_device`'s endorsement of this structure key; never raises.

    False also when `key_id` is not the hash of `public_key`.
    """
    try:
        if structure_key_id(public_key) != key_id:
            return False
        data = endorsement_statement(structure, key_id, public_key, endorser_device)
    except MalformedInput:
        return False
    return verify_signature(endorser_sig_pub, data, sig)


def _grant_info(structure: str, key_id: str, recipient_device: str) -> bytes:
    return lp(_GRANT_LABEL) + lp(structure) + lp(key_id) + lp(recipient_device)


@dataclass(frozen=True)
class StructureGrant:
    """The structure's private key sealed to one staff device; the grant JSON's fields."""

    structure: str
    key_id: str
    recipient_device: str
    sender_device: str
    enc: bytes
    ct: bytes
    sig: bytes

    @property
    def info(self) -> bytes:
        """The HPKE info the grant was sealed with."""
        return _grant_info(self.structure, self.key_id, self.recipient_device)

    @property
    def aad(self) -> bytes:
        """The HPKE associated data: the sender device id."""
        return lp(self.sender_device)

    def signed_bytes(self) -> bytes:
        """The bytes `sig` covers."""
        return lp(_GRANT_SIG_LABEL) + lp(self.info) + lp(self.aad) + lp(self.enc) + lp(self.ct)

    def verify(self, sender_sig_pub: bytes) -> bool:
        """Whether the grant is signed by `sender_sig_pub`; never raises."""
        try:
            data = self.signed_bytes()
        except MalformedInput:
            return False
        return verify_signature(sender_sig_pub, data, self.sig)

    def to_json(self) -> dict[str, str]:
        """The JSON object (binary fields as unpadded base64url)."""
        return {
            "structure": self.structure,
            "key_id": self.key_id,
            "recipient_device": self.recipient_device,
            "sender_device": self.sender_device,
            "enc": b64encode(self.enc),
            "ct": b64encode(self.ct),
            "sig": b64encode(self.sig),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> StructureGrant:
        """Parse, checking types and lengths (not the signature); `MalformedInput` names it."""
        if not isinstance(doc, Mapping):
            raise MalformedInput("grant: expected a JSON object")
        w = "grant"
        return cls(
            structure=str_field(doc, "structure", w),
            key_id=str_field(doc, "key_id", w),
            recipient_device=str_field(doc, "recipient_device", w),
            sender_device=str_field(doc, "sender_device", w),
            enc=bytes_field(doc, "enc", w, length=KEY_LEN),
            ct=bytes_field(doc, "ct", w, length=_CT_LEN),
            sig=bytes_field(doc, "sig", w, length=SIG_LEN),
        )


def wrap_grant(
    private_key: X25519PrivateKey,
    *,
    structure: str,
    sender: DeviceKeys,
    sender_device: str,
    recipient_device: str,
    recipient_dh_pub: bytes,
    ephemeral: X25519PrivateKey | None = None,
) -> StructureGrant:
    """Seal the structure's private key to one staff device and sign it as `sender`."""
    key_id = structure_key_id(private_key.public_key().public_bytes_raw())
    info = _grant_info(structure, key_id, recipient_device)
    aad = lp(sender_device)
    enc, ct = hpke.seal_base(
        recipient_dh_pub, info, aad, private_key.private_bytes_raw(), ephemeral=ephemeral
    )
    unsigned = StructureGrant(structure, key_id, recipient_device, sender_device, enc, ct, b"")
    sig = sender.sign(unsigned.signed_bytes())
    return StructureGrant(structure, key_id, recipient_device, sender_device, enc, ct, sig)


def open_grant(
    grant: StructureGrant, recipient: DeviceKeys, sender_sig_pub: bytes, public_key: bytes
) -> X25519PrivateKey:
    """Check the sender's signature, open the grant, check it holds `public_key`'s private half.

    Raises `BadSignature` (signature), `DecryptError` (HPKE open, or a key
    that is not the announced one).
    """
    if grant.key_id != structure_key_id(public_key):
        raise DecryptError("the grant is for another structure key")
    if not grant.verify(sender_sig_pub):
        raise BadSignature("grant signature does not verify")
    raw = hpke.open_base(grant.enc, recipient.dh_private_key, grant.info, grant.aad, grant.ct)
    if len(raw) != KEY_LEN:
        raise DecryptError("the grant does not hold a 32-byte key")
    private = X25519PrivateKey.from_private_bytes(raw)
    if private.public_key().public_bytes_raw() != public_key:
        raise DecryptError("the grant holds another key than the structure key")
    return private


def open_structure_envelope(
    envelope: Envelope, private_key: X25519PrivateKey, sender_sig_pub: bytes
) -> bytes:
    """Open an epoch envelope sealed to the structure key; return the 32-byte epoch key.

    Raises `MalformedInput` if the envelope is not addressed to this key,
    `BadSignature`, `DecryptError` like `open_envelope`.
    """
    key_id = structure_key_id(private_key.public_key().public_bytes_raw())
    if envelope.recipient_device != structure_recipient(key_id):
        raise MalformedInput("the envelope is not addressed to this structure key")
    if not verify_envelope_signature(envelope, sender_sig_pub):
        raise BadSignature("envelope signature does not verify")
    key = hpke.open_base(envelope.enc, private_key, envelope.info, envelope.aad, envelope.ct)
    if len(key) != EPOCH_KEY_LEN:
        raise DecryptError("envelope does not hold a 32-byte epoch key")
    return key
