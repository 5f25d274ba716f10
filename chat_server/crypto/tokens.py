"""Opaque random tokens (sessions, activation codes); only their hashes are stored."""

from __future__ import annotations

import hashlib
import secrets

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def new_token() -> str:
    """A 256-bit URL-safe session token, shown to the client once."""
    return secrets.token_urlsafe(32)


def new_activation_code() -> str:
    """A one-time activation code, easy to read aloud: ``XXXX-XXXX-XXXX``."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def normalise_code(code: str) -> str:
    """Uppercase, drop spaces and dashes, so a code typed loosely still matches."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def token_hash(token: str) -> str:
    """SHA-256 hex of a token: what the store keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_id() -> str:
    """A random 128-bit id, hex."""
    return secrets.token_hex(16)
