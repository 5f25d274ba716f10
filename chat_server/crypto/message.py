"""Message encryption and signatures (format versions 1 and 2).

Version 2, what every client writes:

    aad = lp("cejchat/msg/v2") lp(conversation) lp(epoch) lp(sender_device)
          lp(client_id) lp(msg_type) lp("2") lp(canonical_meta(meta))
    ciphertext = AES-256-GCM(epoch_key, nonce (12 random bytes), plaintext, aad), tag appended
    sig = Ed25519(sender device) over lp("cejchat/msg-sig/v2") lp(aad) lp(nonce) lp(ciphertext)

Version 1 (still read, never written by our clients) has no meta and the
labels "cejchat/msg/v1", "cejchat/msg-sig/v1" and the version string "1".

The server calls `verify_message_signature` before storing a message; it
is one Ed25519 verification and never raises. Recipients call
`decrypt_message`, which checks the signature before decrypting.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chat_server.crypto.encoding import epoch_bytes, lp
from chat_server.crypto.envelope import EPOCH_KEY_LEN
from chat_server.crypto.errors import BadSignature, DecryptError, MalformedInput
from chat_server.crypto.keys import DeviceKeys, verify_signature
from chat_server.crypto.meta import canonical_meta

__all__ = [
    "FORMAT_VERSION",
    "NONCE_LEN",
    "SUPPORTED_VERSIONS",
    "EncryptedMessage",
    "aad_head_v2",
    "decrypt_message",
    "encrypt_message",
    "message_aad",
    "message_signed_bytes",
    "read_text",
    "signed_bytes",
    "signed_bytes_v2",
    "text_plaintext",
    "verify_message_signature",
]

#: The version every new message is written in.
FORMAT_VERSION = 2
#: Versions a reader accepts: 1 only for messages stored before version 2.
SUPPORTED_VERSIONS = (1, 2)
NONCE_LEN = 12
_TAG_LEN = 16


@dataclass(frozen=True)
class EncryptedMessage:
    """What a client sends for one message: nonce, ciphertext (tag appended), signature."""

    nonce: bytes
    ciphertext: bytes
    sig: bytes


def _check_version(version: int) -> None:
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise MalformedInput(f"message format version must be one of {SUPPORTED_VERSIONS}")


def message_aad(
    conversation: str,
    epoch: int,
    sender_device: str,
    client_id: str,
    msg_type: str,
    *,
    version: int = FORMAT_VERSION,
    meta: Mapping[str, object] | None = None,
) -> bytes:
    """The AES-GCM associated data.

    Version 2 binds the canonical `meta` (empty when None); version 1 does
    not bind it (`meta` is ignored). Raises `MalformedInput` on a bad epoch,
    string, version or meta.
    """
    _check_version(version)
    head = (
        lp(f"cejchat/msg/v{version}")
        + lp(conversation)
        + lp(epoch_bytes(epoch))
        + lp(sender_device)
        + lp(client_id)
        + lp(msg_type)
        + lp(str(version))
    )
    if version == 1:
        return head
    return head + lp(canonical_meta({} if meta is None else meta))


def signed_bytes(
    aad: bytes, nonce: bytes, ciphertext: bytes, *, version: int = FORMAT_VERSION
) -> bytes:
    """The bytes the sender device signs for a message with associated data `aad`."""
    _check_version(version)
    return lp(f"cejchat/msg-sig/v{version}") + lp(aad) + lp(nonce) + lp(ciphertext)


_AAD_LABEL_V2 = lp("cejchat/msg/v2")
_SIG_LABEL_V2 = lp("cejchat/msg-sig/v2")
_VERSION_V2 = lp("2")


def aad_head_v2(conversation: str, epoch: int, sender_device: str) -> bytes:
    """The start of a version 2 associated data, the same for every message of a device
    in one epoch of a conversation (the server caches it). Raises `MalformedInput`."""
    return _AAD_LABEL_V2 + lp(conversation) + lp(epoch_bytes(epoch)) + lp(sender_device)


def signed_bytes_v2(
    head: bytes,
    client_id: str,
    msg_type: str,
    meta_canonical: bytes,
    nonce: bytes,
    ciphertext: bytes,
) -> bytes:
    """`signed_bytes(message_aad(...), nonce, ciphertext)` of a version 2 message, from
    `aad_head_v2` and the already canonical meta: equal byte for byte (tested), built
    without re-encoding what the server already has. Raises `MalformedInput`."""
    aad = head + lp(client_id) + lp(msg_type) + _VERSION_V2 + lp(meta_canonical)
    return _SIG_LABEL_V2 + lp(aad) + lp(nonce) + lp(ciphertext)


def _aesgcm(epoch_key: bytes) -> AESGCM:
    if not isinstance(epoch_key, bytes) or len(epoch_key) != EPOCH_KEY_LEN:
        raise MalformedInput(f"epoch key must be {EPOCH_KEY_LEN} bytes")
    return AESGCM(epoch_key)


def encrypt_message(
    epoch_key: bytes,
    sender: DeviceKeys,
    *,
    conversation: str,
    epoch: int,
    sender_device: str,
    client_id: str,
    msg_type: str,
    plaintext: bytes,
    meta: Mapping[str, object] | None = None,
    nonce: bytes | None = None,
    version: int = FORMAT_VERSION,
) -> EncryptedMessage:
    """Encrypt `plaintext` under the epoch key and sign it as `sender`.

    `meta` is the server-visible part, bound into the associated data and
    the signature (version 2). The nonce is 12 fresh random bytes; passing
    `nonce` (or `version=1`) is for test vectors only (reusing a nonce under
    one key breaks AES-GCM).
    """
    aad = message_aad(
        conversation, epoch, sender_device, client_id, msg_type, version=version, meta=meta
    )
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_LEN)
    elif len(nonce) != NONCE_LEN:
        raise MalformedInput(f"nonce must be {NONCE_LEN} bytes")
    ciphertext = _aesgcm(epoch_key).encrypt(nonce, plaintext, aad)
    signed = signed_bytes(aad, nonce, ciphertext, version=version)
    return EncryptedMessage(nonce, ciphertext, sender.sign(signed))


def message_signed_bytes(
    conversation: str,
    epoch: int,
    sender_device: str,
    client_id: str,
    msg_type: str,
    nonce: bytes,
    ciphertext: bytes,
    *,
    meta: Mapping[str, object] | None = None,
    version: int = FORMAT_VERSION,
) -> bytes | None:
    """The bytes the sender device signed for this message; None if any field is malformed.

    Never raises (wrong type or length, epoch out of range, unencodable
    string, meta without a canonical form, unknown version all give None).
    The server builds these on the event loop and verifies them elsewhere
    (`chat_server.crypto.verify_pool`).
    """
    if not (
        isinstance(nonce, bytes)
        and len(nonce) == NONCE_LEN
        and isinstance(ciphertext, bytes)
        and len(ciphertext) >= _TAG_LEN
    ):
        return None
    try:
        aad = message_aad(
            conversation, epoch, sender_device, client_id, msg_type, version=version, meta=meta
        )
        return signed_bytes(aad, nonce, ciphertext, version=version)
    except MalformedInput:
        return None


def verify_message_signature(
    sig_pub: bytes,
    conversation: str,
    epoch: int,
    sender_device: str,
    client_id: str,
    msg_type: str,
    nonce: bytes,
    ciphertext: bytes,
    sig: bytes,
    *,
    meta: Mapping[str, object] | None = None,
    version: int = FORMAT_VERSION,
) -> bool:
    """Return whether `sig` is the sender device's signature of this message.

    The server's check before storing: it rebuilds the associated data from
    the frame's fields, `meta` and `version` included. Never raises; any
    malformed argument (wrong type, length, epoch out of range, unencodable
    string, meta without a canonical form, unknown version) gives False.
    """
    signed = message_signed_bytes(
        conversation,
        epoch,
        sender_device,
        client_id,
        msg_type,
        nonce,
        ciphertext,
        meta=meta,
        version=version,
    )
    return signed is not None and verify_signature(sig_pub, signed, sig)


def decrypt_message(
    epoch_key: bytes,
    sig_pub: bytes,
    *,
    conversation: str,
    epoch: int,
    sender_device: str,
    client_id: str,
    msg_type: str,
    nonce: bytes,
    ciphertext: bytes,
    sig: bytes,
    meta: Mapping[str, object] | None = None,
    version: int = FORMAT_VERSION,
) -> bytes:
    """Check the signature under `sig_pub`, then decrypt; return the plaintext bytes.

    Raises `BadSignature` first if the signature does not verify (a `meta`
    other than the one signed included), then `DecryptError` if AES-GCM
    refuses (wrong key, tampered data, or any associated-data field not the
    one it was encrypted with). A version 1 message never signed its meta:
    it is ignored here, and callers show such a message as unauthenticated.
    """
    if not verify_message_signature(
        sig_pub,
        conversation,
        epoch,
        sender_device,
        client_id,
        msg_type,
        nonce,
        ciphertext,
        sig,
        meta=meta,
        version=version,
    ):
        raise BadSignature("message signature does not verify")
    aad = message_aad(
        conversation, epoch, sender_device, client_id, msg_type, version=version, meta=meta
    )
    try:
        return _aesgcm(epoch_key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise DecryptError("message does not decrypt under this epoch key") from exc


def text_plaintext(text: str) -> bytes:
    """The plaintext of a `text` message: compact UTF-8 JSON `{"text": ...}`."""
    try:
        doc = json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":"))
        return doc.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedInput("text is not valid Unicode") from exc


def read_text(plaintext: bytes) -> str:
    """Parse a `text` message's plaintext; raise `MalformedInput` if it is not one."""
    try:
        doc = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedInput("text message plaintext is not UTF-8 JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
        raise MalformedInput('text message plaintext must be {"text": string}')
    text: str = doc["text"]
    return text
