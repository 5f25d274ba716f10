"""Seed benchmark accounts straight through the server's stores (no argon2 logins).

Pair ``i``: beneficiary ``b<i>`` and counsellor ``c<i>`` of structure
``bench``, each with a 30-day session whose token is ``token_of(user)`` (only
its hash is stored, as the server does), and conversation ``conv<i>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.workload import conversation_id, device_of, token_of, user_ids
from chat_server.crypto.tokens import token_hash
from chat_server.rooms.models import Conversation, Role, Session, Structure, User
from chat_server.storage.base import AccountStore, Conflict, MessageStore

STRUCTURE = "bench"
SESSION_TTL = 30 * 86400.0


async def seed_pair(accounts: AccountStore, messages: MessageStore, pair: int, now: float) -> None:
    """Create one pair's users, sessions and conversation."""
    b, c = user_ids(pair)
    for uid, role in ((b, Role.BENEFICIARY), (c, Role.COUNSELLOR)):
        await accounts.add_user(User(uid, role, uid, uid.upper(), STRUCTURE, "CEJ", None, now))
        await accounts.add_session(
            Session(token_hash(token_of(uid)), uid, device_of(uid), now, now + SESSION_TTL)
        )
    await messages.add_conversation(
        Conversation(conversation_id(pair), b, c, STRUCTURE, created_at=now, last_at=now)
    )


async def seed(
    accounts: AccountStore, messages: MessageStore, first: int, count: int, concurrency: int = 1
) -> None:
    """Seed pairs ``first .. first+count-1`` (``concurrency`` pairs at a time)."""
    now = time.time()
    with contextlib.suppress(Conflict):
        await accounts.add_structure(Structure(STRUCTURE, "Bench", "mission_locale", ("CEJ",)))
    pairs = range(first, first + count)
    for i in range(0, len(pairs), concurrency):
        chunk = pairs[i : i + concurrency]
        await asyncio.gather(*(seed_pair(accounts, messages, p, now) for p in chunk))
