"""Ed25519 verification: libsodium first, OpenSSL decides what libsodium refuses.

`verify` accepts exactly the signatures that OpenSSL (through
``cryptography``) accepts, and costs libsodium's price for every valid one:

- libsodium (PyNaCl, ``crypto_sign_open``) is about twice as fast here as
  OpenSSL for one verification (``python -m bench.ed25519 --speed``);
- everything libsodium accepts, OpenSSL accepts: both require S < L, both
  hash the raw bytes R ‖ A ‖ M, both compute [S]B - [k]A and compare its
  encoding with the signature's R byte for byte (the cofactorless
  equation); libsodium only refuses more (a small-order R, a small-order or
  non-canonically encoded A). docs/crypto-format.md, "Ed25519 validation
  rules", states the argument and tests/vectors/ed25519-edge.json checks it
  case by case;
- so "libsodium accepts, or else OpenSSL accepts" is OpenSSL's accept set by
  construction. A refused signature pays both (about 1.5 times OpenSSL alone).

Both release the GIL while they compute, so a pool thread verifies while the
event loop runs. Neither function here checks lengths or the small-order key
rule: `chat_server.crypto.keys.verify_signature` does, before calling `verify`.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["libsodium_verifies", "openssl_verifies", "verify"]


def libsodium_verifies(sig_pub: bytes, data: bytes, sig: bytes) -> bool:
    """Whether libsodium accepts ``sig`` (64 bytes) by ``sig_pub`` (32 bytes) over ``data``."""
    try:
        nacl.bindings.crypto_sign_open(sig + data, sig_pub)
    except nacl.exceptions.CryptoError:
        return False
    return True


def openssl_verifies(sig_pub: bytes, data: bytes, sig: bytes) -> bool:
    """Whether OpenSSL (``cryptography``) accepts ``sig`` by ``sig_pub`` over ``data``."""
    try:
        Ed25519PublicKey.from_public_bytes(sig_pub).verify(sig, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(sig_pub: bytes, data: bytes, sig: bytes) -> bool:
    """OpenSSL's decision, at libsodium's price when the signature is valid (see the module)."""
    return libsodium_verifies(sig_pub, data, sig) or openssl_verifies(sig_pub, data, sig)
