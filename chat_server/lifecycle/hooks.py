"""Ports other capabilities plug into the lifecycle (push subscriptions, attachments).

The eraser and the retention job call every registered hook; a capability
that stores something about a person (Web Push subscriptions, attachment
blobs) registers one in ``services.py`` so that an erasure removes it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from chat_server.rooms.models import User


class ErasureHook(Protocol):
    """Something else that holds a person's data and must forget it with the account."""

    async def erase_user(self, user_id: str, conversation_ids: Sequence[str]) -> int:
        """Delete what this capability holds about ``user_id`` and in ``conversation_ids``
        (the conversations being erased with the account). Idempotent; returns how many
        records were removed."""


class WarningHook(Protocol):
    """Another channel to warn a person that their inactive account will be deleted."""

    async def warn_inactive(self, user: User, deletion_at: float) -> None:
        """Warn ``user`` (for example by push) that the account goes at ``deletion_at``.

        Best effort: a failure is logged by the caller and never stops the job.
        """
