"""Password hashing with argon2id (argon2-cffi).

``verify`` never raises on a wrong or malformed hash; it returns whether the
password matched and, when the stored hash used older parameters, the new
hash to store in its place.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256


class PasswordPolicyError(ValueError):
    """The chosen password does not meet the policy."""


class Passwords:
    """argon2id hasher; parameters are fixed per instance."""

    def __init__(self, time_cost: int = 2, memory_cost: int = 19456, parallelism: int = 1) -> None:
        self._ph = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )

    @staticmethod
    def check_policy(password: str) -> None:
        """Raise ``PasswordPolicyError`` if ``password`` is too short or too long."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise PasswordPolicyError(
                f"password must have at least {MIN_PASSWORD_LENGTH} characters"
            )
        if len(password) > MAX_PASSWORD_LENGTH:
            raise PasswordPolicyError(
                f"password must have at most {MAX_PASSWORD_LENGTH} characters"
            )

    def hash(self, password: str) -> str:
        """Return an argon2id hash string of ``password``."""
        return self._ph.hash(password)

    def verify(self, stored: str, password: str) -> tuple[bool, str | None]:
        """Return (matched, new_hash_if_parameters_changed)."""
        try:
            self._ph.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, None
        if self._ph.check_needs_rehash(stored):
            return True, self._ph.hash(password)
        return True, None
