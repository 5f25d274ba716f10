"""Onboarding and account help: a counsellor re-issues a beneficiary's activation code.

One operation covers both cases of issue #15: a code that was never used (lost,
expired) is *re-issued*, and a beneficiary who forgot their password gets a code
that *resets* it (``POST /api/activate`` sets the new password). Either way the
previous code stops working at once, an audit record is written and the thread
gets a ``system.activation_issued`` event, so the beneficiary sees that someone
asked for access to their account.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from chat_server.accounts import AccountService
from chat_server.rooms.errors import Forbidden, NotFound
from chat_server.rooms.models import AuditRecord, Role, User
from chat_server.rooms.service import ConversationService, writable
from chat_server.storage.base import AccountStore, KeyStore

log = logging.getLogger(__name__)

IssueKind = Literal["reissue", "password_reset"]


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A new one-time code for ``beneficiary``; shown to the counsellor once, never stored."""

    beneficiary: User
    #: None when the counsellor's client made the code (the server saw its proof only).
    code: str | None
    expires_at: float
    kind: IssueKind


class OnboardingService:
    """Activation codes issued again by the beneficiary's counsellor."""

    def __init__(
        self,
        accounts: AccountService,
        account_store: AccountStore,
        conversations: ConversationService,
        audit: KeyStore,
        clock: Callable[[], float],
    ) -> None:
        self._accounts = accounts
        self._account_store = account_store
        self._conversations = conversations
        self._audit = audit
        self._clock = clock

    async def issue_code(
        self, counsellor: User, conversation_id: str, proof: str | None = None
    ) -> IssuedCode:
        """Give the beneficiary of ``conversation_id`` a new activation code.

        With ``proof`` the counsellor's client made the code, as at creation
        (``chat_server.crypto.activation``): the server keeps the proof's hash and
        never sees the code, and the client can leave a new activation box.

        Only the conversation's current counsellor may (others: ``not_member`` or
        ``forbidden``); not for an archived conversation or a deleted account. The
        kind is ``password_reset`` when the account already has a password, else
        ``reissue``. The old code is replaced before the audit record and the
        system event are written, so a failure after it never leaves two codes.
        """
        conv = await self._conversations.member_conversation(counsellor.id, conversation_id)
        if counsellor.role is not Role.COUNSELLOR or conv.counsellor_id != counsellor.id:
            raise Forbidden("only the beneficiary's counsellor can issue an activation code")
        writable(conv)
        beneficiary = await self._account_store.get_user(conv.beneficiary_id)
        if beneficiary is None or beneficiary.erasing is not None:
            raise NotFound("this beneficiary's account no longer exists")
        kind: IssueKind = "password_reset" if beneficiary.password_hash else "reissue"
        code: str | None
        if proof is not None:
            code, expires = None, await self._accounts.set_activation_proof(beneficiary.id, proof)
        else:
            code, expires = await self._accounts.reset_activation(beneficiary.id)
        now = self._clock()
        action = "activation.password_reset" if kind == "password_reset" else "activation.reissued"
        await self._audit.add_audit(
            AuditRecord(
                conv.id,
                counsellor.id,
                action,
                {"beneficiary": beneficiary.id, "expires_at": expires},
                now,
            )
        )
        await self._conversations.post_system(
            conv,
            "system.activation_issued",
            {"by": counsellor.id, "kind": kind, "expires_at": int(expires)},
            client_id=f"activation-{secrets.token_hex(8)}",
            actor=counsellor.id,
        )
        log.info(
            f"activation code issued ({kind})",
            extra={"user_id": beneficiary.id, "conversation_id": conv.id},
        )
        return IssuedCode(beneficiary, code, expires, kind)
