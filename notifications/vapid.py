"""The server's VAPID key pair (RFC 8292): configured, or generated once and kept in the store.

``VAPID_PRIVATE_KEY`` (a PEM, or the base64url of the raw 32-byte scalar)
wins; otherwise the first process to start generates a P-256 key and stores it
(``PushStore.vapid_key``: the first stored key wins a race), so every web
process and worker of a deployment signs with the same key and browsers'
subscriptions stay valid across restarts.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


class VapidKeyError(ValueError):
    """The configured VAPID key cannot be read."""


def b64url(data: bytes) -> str:
    """Unpadded base64url, as Web Push uses everywhere."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode unpadded (or padded) base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class VapidKeys:
    """The private key (PEM) and the public key clients subscribe with."""

    private_pem: str

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The key as a ``cryptography`` object."""
        return load_private_key(self.private_pem)

    @property
    def public_key(self) -> str:
        """The uncompressed public point, base64url: ``applicationServerKey`` in browsers."""
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)


def generate_pem() -> str:
    """A fresh P-256 private key as PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """Read a PEM or a base64url raw scalar; raise ``VapidKeyError``."""
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            text = text.strip()
            if not re.fullmatch(r"[A-Za-z0-9_\-]{43}=?", text):
                raise ValueError("expected 43 base64url characters (32 bytes)")
            raw = b64url_decode(text)
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (ValueError, TypeError) as exc:
        raise VapidKeyError(f"not a P-256 private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise VapidKeyError("VAPID keys are P-256 (prime256v1) keys")
    return key


def normalise(text: str) -> str:
    """The configured key as PEM (checks it on the way)."""
    key = load_private_key(text)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
