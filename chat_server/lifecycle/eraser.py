"""Erasing an account with everything that belongs to it.

An erasure is resumable: it first marks the account (``begin_erasure``: no
more logins, sessions ended, a random pseudonym chosen once), closes its open
connections in every process (``disconnect``), then deletes
the beneficiary's conversation content, whatever the hooks hold (push
subscriptions, attachments), the throttling counters, rewrites the audit
records with the pseudonym, and deletes the account record last. If the
process stops in between, the retention job finds the marked account
(``pending_erasures``) and runs the same steps again; each is idempotent.

What stays: audit records, pseudonymised (``deleted-<random>``: nothing
links it back to the person), and the conversation's tombstone (the
counsellor's list shows "compte supprimé"), until their own retention ends.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from chat_server.lifecycle.hooks import ErasureHook
from chat_server.rooms.models import AuditRecord, Role, User
from chat_server.storage.base import AccountStore, KeyStore, LifecycleStore, MessageStore
from chat_server.throttle import device_key, login_key

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def new_pseudonym() -> str:
    """A random stand-in for a deleted person's id in the records that outlive them."""
    return "deleted-" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Erasure:
    """What one erasure did."""

    user_id: str
    pseudonym: str
    conversation_ids: tuple[str, ...]
    removed: int


class AccountEraser:
    """Erases accounts (see the module docstring)."""

    def __init__(
        self,
        lifecycle: LifecycleStore,
        accounts: AccountStore,
        messages: MessageStore,
        keys: KeyStore,
        clock: Clock,
        hooks: Sequence[ErasureHook] = (),
        disconnect: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._accounts = accounts
        self._messages = messages
        self._keys = keys
        self._clock = clock
        self.hooks: list[ErasureHook] = list(hooks)
        self._disconnect = disconnect

    async def erase(self, user: User, actor: str, cause: str) -> Erasure | None:
        """Erase ``user``; ``actor`` (a user id, ``retention`` or ``admin``) and ``cause``
        (``self``, ``inactivity``, ``archive_expired``, ``request``) go into the audit
        record. None if the account no longer exists."""
        fresh = new_pseudonym()
        pseudonym = await self._lifecycle.begin_erasure(user.id, fresh)
        if pseudonym is None:
            return None
        await self._close_connections(user.id)
        own = list(await self._messages.conversations_for(user.id))
        own = [c for c in own if c.beneficiary_id == user.id]
        if pseudonym == fresh:
            # Written once, before anything is deleted; pseudonymised with the rest below.
            await self._keys.add_audit(
                AuditRecord(
                    own[0].id if own else "",
                    actor,
                    "account.deleted",
                    {"account": user.id, "role": user.role.value, "cause": cause},
                    self._clock(),
                )
            )
        return await self._finish(user, pseudonym, [c.id for c in own])

    async def resume(self, user: User) -> Erasure | None:
        """Finish an erasure that began earlier (``user.erasing`` is set)."""
        if user.erasing is None:
            return None
        await self._close_connections(user.id)
        convs = await self._messages.conversations_for(user.id)
        own = [c.id for c in convs if c.beneficiary_id == user.id]
        return await self._finish(user, user.erasing, own)

    async def _close_connections(self, user_id: str) -> None:
        # Sessions are gone already; open connections close now, before their presence
        # records are deleted, and write none on the way out (transport: REVOKE_ERASED).
        if self._disconnect is not None:
            await self._disconnect(user_id)

    async def _finish(self, user: User, pseudonym: str, conv_ids: list[str]) -> Erasure:
        now = self._clock()
        removed = 0
        for conv_id in conv_ids:
            removed += await self._lifecycle.erase_conversation(conv_id, pseudonym, now)
        for hook in self.hooks:
            removed += await hook.erase_user(user.id, conv_ids)
        # Throttling counters are keyed by hashes of the login (and device): forget them too.
        devices = await self._keys.devices_of([user.id])
        await self._accounts.clear_login_failures(login_key(user.login))
        for d in devices:
            await self._accounts.clear_login_failures(device_key(user.login, d.id))
        await self._lifecycle.pseudonymise_audit(user.id, pseudonym)
        removed += await self._lifecycle.erase_account(user.id)
        log.info(
            "account erased",
            extra={"pseudonym": pseudonym, "role": user.role.value, "removed": removed},
        )
        return Erasure(user.id, pseudonym, tuple(conv_ids), removed)


def is_staff(user: User) -> bool:
    """Counsellors, supervisors and admins (their conversations belong to beneficiaries)."""
    return user.role is not Role.BENEFICIARY
