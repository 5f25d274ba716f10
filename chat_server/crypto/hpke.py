"""HPKE, RFC 9180 base mode, for the one suite the format uses.

DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM; built from the
`cryptography` primitives because its own HPKE API takes neither associated
data nor a fixed ephemeral key (needed for the RFC test vector).

`seal_base` / `open_base` are the single-shot calls (sequence number 0) the envelopes
use. `setup_sender` / `setup_recipient` return a `Context` for several
messages and for secret export, as in RFC 9180 section 5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from chat_server.crypto.errors import CryptoError, DecryptError, MalformedInput

__all__ = [
    "Context",
    "KeySchedule",
    "MessageLimitReached",
    "derive_key_pair",
    "key_schedule",
    "open_base",
    "seal_base",
    "setup_recipient",
    "setup_sender",
]

KEM_ID = 0x0020  # DHKEM(X25519, HKDF-SHA256)
KDF_ID = 0x0001  # HKDF-SHA256
AEAD_ID = 0x0001  # AES-128-GCM
MODE_BASE = 0x00

N_SECRET = 32
N_ENC = 32
N_PK = 32
N_K = 16
N_N = 12
N_H = 32

_KEM_SUITE_ID = b"KEM" + KEM_ID.to_bytes(2, "big")
_HPKE_SUITE_ID = (
    b"HPKE" + KEM_ID.to_bytes(2, "big") + KDF_ID.to_bytes(2, "big") + AEAD_ID.to_bytes(2, "big")
)
_SHA256 = hashes.SHA256()


class MessageLimitReached(CryptoError):
    """The context's sequence number is exhausted (RFC 9180 section 5.2)."""


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return HKDF.extract(_SHA256, salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled_info = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return HKDFExpand(_SHA256, length, labeled_info).derive(prk)


def derive_key_pair(ikm: bytes) -> X25519PrivateKey:
    """DeriveKeyPair(ikm) of RFC 9180 section 7.1.3 for X25519 (deterministic)."""
    dkp_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"dkp_prk", ikm)
    sk = _labeled_expand(_KEM_SUITE_ID, dkp_prk, b"sk", b"", N_SECRET)
    return X25519PrivateKey.from_private_bytes(sk)


def _public_key(pk_bytes: bytes) -> X25519PublicKey:
    if len(pk_bytes) != N_PK:
        raise MalformedInput(f"X25519 public key must be {N_PK} bytes, got {len(pk_bytes)}")
    return X25519PublicKey.from_public_bytes(pk_bytes)


def _dh(sk: X25519PrivateKey, pk: X25519PublicKey) -> bytes:
    try:
        return sk.exchange(pk)
    except ValueError as exc:  # all-zero output: a low-order public key (RFC 9180 7.1.4)
        raise DecryptError("X25519 key agreement failed (low-order public key)") from exc


def _extract_and_expand(dh: bytes, kem_context: bytes) -> bytes:
    eae_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    return _labeled_expand(_KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, N_SECRET)


def _encap(pk_r: bytes, ephemeral: X25519PrivateKey | None) -> tuple[bytes, bytes]:
    pk_rm = _public_key(pk_r)
    sk_e = ephemeral if ephemeral is not None else X25519PrivateKey.generate()
    enc = sk_e.public_key().public_bytes_raw()
    shared_secret = _extract_and_expand(_dh(sk_e, pk_rm), enc + pk_r)
    return shared_secret, enc


def _decap(enc: bytes, sk_r: X25519PrivateKey) -> bytes:
    pk_e = _public_key(enc)
    pk_rm = sk_r.public_key().public_bytes_raw()
    return _extract_and_expand(_dh(sk_r, pk_e), enc + pk_rm)


@dataclass(frozen=True)
class KeySchedule:
    """The values RFC 9180's KeySchedule derives (exposed for the test vector)."""

    shared_secret: bytes
    key_schedule_context: bytes
    secret: bytes
    key: bytes
    base_nonce: bytes
    exporter_secret: bytes


def key_schedule(shared_secret: bytes, info: bytes) -> KeySchedule:
    """KeySchedule(mode_base, shared_secret, info, psk="", psk_id="") of RFC 9180 5.1."""
    psk_id_hash = _labeled_extract(_HPKE_SUITE_ID, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(_HPKE_SUITE_ID, b"", b"info_hash", info)
    context = bytes([MODE_BASE]) + psk_id_hash + info_hash
    secret = _labeled_extract(_HPKE_SUITE_ID, shared_secret, b"secret", b"")
    return KeySchedule(
        shared_secret=shared_secret,
        key_schedule_context=context,
        secret=secret,
        key=_labeled_expand(_HPKE_SUITE_ID, secret, b"key", context, N_K),
        base_nonce=_labeled_expand(_HPKE_SUITE_ID, secret, b"base_nonce", context, N_N),
        exporter_secret=_labeled_expand(_HPKE_SUITE_ID, secret, b"exp", context, N_H),
    )


@dataclass
class Context:
    """An HPKE encryption context (RFC 9180 5.2): AEAD key, base nonce, sequence number.

    A sender context only seals and a recipient context only opens; each call
    uses the current sequence number, then increments it. A failed `open`
    leaves the sequence number unchanged.
    """

    schedule: KeySchedule
    is_sender: bool
    seq: int = 0
    _aead: AESGCM = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._aead = AESGCM(self.schedule.key)

    def _nonce(self) -> bytes:
        if self.seq >= (1 << (8 * N_N)) - 1:
            raise MessageLimitReached("HPKE sequence number exhausted")
        seq_bytes = self.seq.to_bytes(N_N, "big")
        return bytes(a ^ b for a, b in zip(self.schedule.base_nonce, seq_bytes, strict=True))

    def seal(self, aad: bytes, pt: bytes) -> bytes:
        """Encrypt `pt` with `aad` at the current sequence number, then increment it."""
        if not self.is_sender:
            raise CryptoError("a recipient context cannot seal")
        ct = self._aead.encrypt(self._nonce(), pt, aad)
        self.seq += 1
        return ct

    def open(self, aad: bytes, ct: bytes) -> bytes:
        """Decrypt `ct` with `aad` at the current sequence number; raise `DecryptError`."""
        if self.is_sender:
            raise CryptoError("a sender context cannot open")
        try:
            pt = self._aead.decrypt(self._nonce(), ct, aad)
        except InvalidTag as exc:
            raise DecryptError("HPKE open failed") from exc
        self.seq += 1
        return pt

    def export(self, exporter_context: bytes, length: int) -> bytes:
        """Secret export of RFC 9180 5.3: `length` bytes bound to `exporter_context`."""
        if not 0 < length <= 255 * N_H:
            raise MalformedInput("export length out of range")
        return _labeled_expand(
            _HPKE_SUITE_ID, self.schedule.exporter_secret, b"sec", exporter_context, length
        )


def setup_sender(
    pk_r: bytes, info: bytes, *, ephemeral: X25519PrivateKey | None = None
) -> tuple[bytes, Context]:
    """SetupBaseS: return (enc, sender context) for the recipient's raw X25519 key.

    `ephemeral` fixes the ephemeral key; only test vectors pass it.
    """
    shared_secret, enc = _encap(pk_r, ephemeral)
    return enc, Context(key_schedule(shared_secret, info), is_sender=True)


def setup_recipient(enc: bytes, sk_r: X25519PrivateKey, info: bytes) -> Context:
    """SetupBaseR: return the recipient context for `enc`; bad `enc` raises a CryptoError."""
    return Context(key_schedule(_decap(enc, sk_r), info), is_sender=False)


def seal_base(
    pk_r: bytes,
    info: bytes,
    aad: bytes,
    pt: bytes,
    *,
    ephemeral: X25519PrivateKey | None = None,
) -> tuple[bytes, bytes]:
    """Single-shot SealBase (sequence number 0): return (enc, ct)."""
    enc, ctx = setup_sender(pk_r, info, ephemeral=ephemeral)
    return enc, ctx.seal(aad, pt)


def open_base(enc: bytes, sk_r: X25519PrivateKey, info: bytes, aad: bytes, ct: bytes) -> bytes:
    """Single-shot OpenBase (sequence number 0); raise `DecryptError` on any failure."""
    return setup_recipient(enc, sk_r, info).open(aad, ct)
