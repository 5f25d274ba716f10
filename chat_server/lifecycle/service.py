"""What people do with the lifecycle from their apps: delete one's account, archive, restore.

- A beneficiary deletes their own account after confirming their password:
  the erasure (``AccountEraser``) runs at once, their connections close, and
  the counsellor's list turns the conversation into "compte supprimé".
- The current counsellor archives a beneficiary's conversation with a reason
  (``ARCHIVE_REASONS``): it becomes read-only for both (sends are refused
  with ``conversation_archived``), both see a ``system.archived`` event, and
  the retention job erases the account after ``ARCHIVE_RETENTION_DAYS``.
- A supervisor of the conversation's structure restores it within that period.

Each action writes an audit record.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from chat_server import protocol as p
from chat_server.accounts import AccountService
from chat_server.hub import Hub
from chat_server.lifecycle.eraser import AccountEraser
from chat_server.rooms.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    NotMember,
)
from chat_server.rooms.models import AuditRecord, Conversation, Role, User
from chat_server.rooms.service import ConversationService, archive_json, writable
from chat_server.storage.base import KeyStore, LifecycleStore, MessageStore

#: Reason codes of an archive (the apps show them in French).
ARCHIVE_REASONS = {
    "emploi": "sortie en emploi",
    "formation": "sortie en formation",
    "fin_accompagnement": "fin d'accompagnement",
    "demenagement": "déménagement",
    "autre": "autre",
}


class NotArchived(DomainError):
    """A restore of a conversation that is not archived."""

    code = "not_archived"
    status = 409


class ArchiveExpired(DomainError):
    """The archive period is over: the account is being deleted and cannot be restored."""

    code = "archive_expired"
    status = 410


class LifecycleService:
    """Deletion, archiving and restoring (see the module docstring)."""

    def __init__(
        self,
        lifecycle: LifecycleStore,
        messages: MessageStore,
        keys: KeyStore,
        accounts: AccountService,
        conversations: ConversationService,
        eraser: AccountEraser,
        hub: Hub,
        clock: Callable[[], float],
        archive_kept_seconds: float,
    ) -> None:
        self._lifecycle = lifecycle
        self._messages = messages
        self._keys = keys
        self._accounts = accounts
        self._conversations = conversations
        self.eraser = eraser
        self._hub = hub
        self._clock = clock
        self._archive_kept = archive_kept_seconds

    async def delete_own_account(self, user: User, password: str) -> None:
        """A beneficiary erases their account, confirmed by their password (``wrong_password``).

        Counsellors and supervisors cannot: their accounts are closed by an administrator.
        """
        if user.role is not Role.BENEFICIARY:
            raise Forbidden("only a beneficiary can delete their own account from the app")
        await self._accounts.confirm_password(user, password)
        convs = list(await self._messages.conversations_for(user.id))
        erasure = await self.eraser.erase(user, user.id, "self")  # its connections close
        if erasure is None:
            return
        for c in convs:
            if c.beneficiary_id != user.id:
                continue
            # Every field the summary had about the person goes (clients merge updates).
            update = {
                "id": c.id,
                "beneficiary_id": erasure.pseudonym,
                "peer": {"id": erasure.pseudonym},
                "peer_online": False,
                "peer_last_seen": None,
                "deleted_at": self._clock(),
                "archived": None,
                "flagged": False,
                "last_seq": 0,
                "read": 0,
                "peer_read": 0,
                "unread": 0,
                "last_message": None,
            }
            await self._hub.publish(
                [c.counsellor_id], p.encode_text(p.ConversationUpdated(update))
            )

    async def archive(self, user: User, conversation_id: str, reason: str) -> Conversation:
        """The current counsellor archives the conversation with a reason code."""
        if reason not in ARCHIVE_REASONS:
            raise InvalidInput("reason must be one of " + ", ".join(ARCHIVE_REASONS))
        conv = await self._conversations.member_conversation(user.id, conversation_id)
        if user.id != conv.counsellor_id:
            raise Forbidden("only the beneficiary's counsellor can archive the conversation")
        writable(conv)  # already archived or deleted: said so
        now = self._clock()
        updated = await self._lifecycle.archive(conv.id, user.id, reason, now)
        if updated is None:
            writable(await self._conversations.member_conversation(user.id, conv.id))
            raise InvalidInput("the conversation could not be archived")
        await self._keys.add_audit(
            AuditRecord(conv.id, user.id, "conversation.archived", {"reason": reason}, now)
        )
        await self._conversations.post_system(
            updated,
            "system.archived",
            {"reason": reason, "by": user.id, "delete_at": now + self._archive_kept},
            client_id=f"archive-{secrets.token_hex(8)}",
            actor=user.id,
        )
        await self._announce(updated)
        return updated

    async def restore(self, user: User, conversation_id: str) -> Conversation:
        """A supervisor of the conversation's structure restores an archived conversation."""
        if user.role is not Role.SUPERVISOR:
            raise Forbidden("only a supervisor can restore an archived conversation")
        conv = await self._messages.get_conversation(conversation_id)
        if conv is None or user.structure_id is None or conv.structure_id != user.structure_id:
            raise NotMember("this conversation is not in your structure")
        if conv.archived_at is None:
            raise NotArchived("this conversation is not archived")
        if conv.archived_at + self._archive_kept <= self._clock():
            raise ArchiveExpired("the archive period is over; the account is being deleted")
        updated = await self._lifecycle.restore(conv.id)
        if updated is None:
            raise NotArchived("this conversation is not archived")
        now = self._clock()
        await self._keys.add_audit(
            AuditRecord(
                conv.id, user.id, "conversation.restored", {"reason": conv.archive_reason}, now
            )
        )
        await self._conversations.post_system(
            updated,
            "system.restored",
            {"by": user.id},
            client_id=f"restore-{secrets.token_hex(8)}",
        )
        await self._announce(updated)
        return updated

    async def _announce(self, conv: Conversation) -> None:
        update: dict[str, Any] = {"id": conv.id, "archived": archive_json(conv)}
        await self._hub.publish(conv.members, p.encode_text(p.ConversationUpdated(update)))
