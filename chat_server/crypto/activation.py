"""Activation carries the keys: what the activation code protects.

The counsellor's client makes the activation code (16 symbols of a 32-symbol
alphabet, ``XXXX-XXXX-XXXX-XXXX``: 80 bits; a code the server makes has 12)
and derives two values from it, so that the server never learns the code:

    code' = the code upper-cased, without spaces and dashes (``normalise_code``)
    out   = PBKDF2-HMAC-SHA256(password=code', salt="cejchat/activation/v1",
                               iterations=ITERATIONS, length=64)
    proof   = out[0:32]   sent to the server (it keeps SHA-256 of its base64url)
    box_key = out[32:64]  AES-256-GCM key of the activation box

The activation box holds the epoch keys written before activation:

    box = AES-256-GCM(box_key, nonce (12 random bytes), plaintext,
                      aad=lp("cejchat/activation/v1") lp(conversation_id))

with the plaintext UTF-8 JSON ``{"v":1,"keys":[{"epoch","key"}]}`` (``key``
base64url of 32 bytes) and the box JSON ``{"v":1,"nonce","box"}``. A key
taken from a box is used only if it matches its epoch's signed commitment.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chat_server.crypto.encoding import b64encode, bytes_field, epoch_field, lp
from chat_server.crypto.errors import DecryptError, MalformedInput
from chat_server.crypto.keys import KEY_LEN
from chat_server.crypto.tokens import CODE_ALPHABET, normalise_code

__all__ = [
    "CODE_LEN",
    "ITERATIONS",
    "ActivationSecrets",
    "derive",
    "is_client_code",
    "new_code",
    "open_box",
    "seal_box",
]

#: PBKDF2-HMAC-SHA256 iterations (OWASP's 2023 figure for this hash).
ITERATIONS = 600_000
BOX_VERSION = 1
_LABEL = "cejchat/activation/v1"
_NONCE_LEN = 12
#: Symbols of a client-made code (a server-made one has 12: that is how they differ).
CODE_LEN = 16


@dataclass(frozen=True)
class ActivationSecrets:
    """What a code gives: the proof the server checks, the key of the box."""

    proof: bytes
    box_key: bytes

    @property
    def proof_text(self) -> str:
        """The proof as sent in ``POST /api/activate`` and ``POST /api/beneficiaries``."""
        return b64encode(self.proof)


def new_code() -> str:
    """A fresh code, ``XXXX-XXXX-XXXX-XXXX`` (made by the counsellor's client)."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LEN))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LEN, 4))


def is_client_code(code: str) -> bool:
    """Whether ``code`` (as typed) is a client-made code: sent as its proof, never as is."""
    return len(normalise_code(code)) == CODE_LEN


def derive(code: str, iterations: int = ITERATIONS) -> ActivationSecrets:
    """The proof and the box key of ``code`` (typed loosely: case, spaces, dashes)."""
    cleaned = normalise_code(code)
    if len(cleaned) != CODE_LEN or any(c not in CODE_ALPHABET for c in cleaned):
        raise MalformedInput(f"a client-made activation code has {CODE_LEN} symbols")
    out = hashlib.pbkdf2_hmac("sha256", cleaned.encode("ascii"), _LABEL.encode(), iterations, 64)
    return ActivationSecrets(out[:32], out[32:])


def _aad(conversation_id: str) -> bytes:
    return lp(_LABEL) + lp(conversation_id)


def seal_box(
    box_key: bytes,
    conversation_id: str,
    keys: Mapping[int, bytes],
    nonce: bytes | None = None,
    structure_key: str | None = None,
) -> dict[str, object]:
    """The activation box of ``keys`` (epoch -> 32-byte key) for the conversation, and
    the id of the structure key the counsellor's device sealed to (the phone pins it)."""
    entries = [{"epoch": e, "key": b64encode(k)} for e, k in sorted(keys.items())]
    if any(len(k) != KEY_LEN for k in keys.values()):
        raise MalformedInput(f"epoch keys are {KEY_LEN} bytes")
    content: dict[str, object] = {"v": BOX_VERSION, "keys": entries}
    if structure_key is not None:
        content["structure_key"] = structure_key
    plaintext = json.dumps(content, separators=(",", ":")).encode()
    nonce = nonce or secrets.token_bytes(_NONCE_LEN)
    sealed = AESGCM(box_key).encrypt(nonce, plaintext, _aad(conversation_id))
    return {"v": BOX_VERSION, "nonce": b64encode(nonce), "box": b64encode(sealed)}


def open_box(box_key: bytes, conversation_id: str, doc: Mapping[str, object]) -> dict[int, bytes]:
    """Epoch -> key from an activation box; ``DecryptError`` if the code or box is wrong."""
    return open_box_contents(box_key, conversation_id, doc)[0]


def open_box_contents(
    box_key: bytes, conversation_id: str, doc: Mapping[str, object]
) -> tuple[dict[int, bytes], str | None]:
    """``(epoch -> key, structure key id or None)`` from an activation box."""
    if doc.get("v") != BOX_VERSION:
        raise MalformedInput("unknown activation box version")
    nonce = bytes_field(doc, "nonce", "box", length=_NONCE_LEN)
    sealed = bytes_field(doc, "box", "box")
    try:
        plaintext = AESGCM(box_key).decrypt(nonce, sealed, _aad(conversation_id))
    except InvalidTag:
        raise DecryptError("the activation box does not open with this code") from None
    data = json.loads(plaintext)
    if not isinstance(data, dict) or data.get("v") != BOX_VERSION:
        raise MalformedInput("unknown activation box contents")
    out: dict[int, bytes] = {}
    for entry in data.get("keys", []):
        out[epoch_field(entry, "epoch", "keys[]")] = bytes_field(
            entry, "key", "keys[]", length=KEY_LEN
        )
    structure_key = data.get("structure_key")
    if structure_key is not None and not isinstance(structure_key, str):
        raise MalformedInput("structure_key must be a string")
    return out, structure_key
