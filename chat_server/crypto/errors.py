"""Exceptions raised by the end-to-end scheme.

Every failure of this package is a `CryptoError`. Callers that only need a
yes/no answer (the server checking a message signature) use the `verify_*`
functions, which return False instead of raising.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by `chat_server.crypto`."""


class MalformedInput(CryptoError, ValueError):
    """Input that does not follow the format: bad base64, wrong key length, bad field.

    Also a `ValueError`, so code that validates untrusted input can catch either.
    """


class BadSignature(CryptoError):
    """An Ed25519 signature did not verify against the expected key and bytes."""


class DecryptError(CryptoError):
    """An AEAD or HPKE open failed: wrong key, wrong associated data or tampered data."""


class VectorMismatch(CryptoError):
    """A cross-implementation vector file does not check (see `vectors.check_vectors`)."""
