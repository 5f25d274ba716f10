"""Ends connections whose session was revoked or deleted, even if nobody told them.

A logout or a device removal reaches open connections through the broker
(``KIND_REVOKE``), which is best effort. Every ``SESSION_RECHECK_SECONDS``
this process re-reads the sessions of its connections (one batched read) and
ends those that are gone; expiry needs no read (each connection has a timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from chat_server.hub import Hub
from chat_server.rooms.models import Session
from chat_server.storage.base import AccountStore, StoreError

log = logging.getLogger(__name__)


@runtime_checkable
class Watched(Protocol):
    """A connection bound to a session."""

    session: Session

    def end(self, reason: str) -> None:
        """Close the connection because its session ended (4001 ``reason``)."""


async def sweep(hub: Hub, accounts: AccountStore, now: float) -> int:
    """End every local connection whose session no longer exists; return how many."""
    watched = [sub for sub in hub.subscribers() if isinstance(sub, Watched)]
    hashes = list({w.session.token_hash for w in watched})
    found = await asyncio.gather(*(accounts.get_session(h, now) for h in hashes))
    alive = {h for h, s in zip(hashes, found, strict=True) if s is not None}
    ended = 0
    for w in watched:
        if w.session.token_hash not in alive:
            w.end("session_revoked")
            ended += 1
    return ended


async def watch_sessions(
    hub: Hub,
    accounts: AccountStore,
    every: float,
    stopping: asyncio.Event,
    clock: Callable[[], float],
) -> None:
    """Run ``sweep`` every ``every`` seconds until ``stopping`` is set."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every)
        if stopping.is_set():
            return
        try:
            ended = await sweep(hub, accounts, clock())
        except StoreError as exc:
            log.warning("session sweep skipped: store unavailable", extra={"error": str(exc)})
            continue
        if ended:
            log.info("connections of ended sessions closed", extra={"count": ended})
