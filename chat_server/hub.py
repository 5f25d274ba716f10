"""This process's fan-out: broker topics -> each local connection's bounded queue.

Every event is published on the topic of each user who should see it
(``u:<user_id>``); a process subscribes to a user's topic while it holds at
least one of their connections. An event on the wire is one header line,
``kind|origin|conversation|seq``, then the JSON frame, so the frame is encoded
once per event and never per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from chat_server.broker.base import Broker

log = logging.getLogger(__name__)

KIND_MESSAGE = "M"
KIND_EVENT = "E"
KIND_REVOKE = "R"  # origin: a session's token hash, "device:<id>", or "*" (every session)
# Origin of a revocation because the account is being erased: every session, and the
# connection leaves no presence record behind (the erasure deletes them).
REVOKE_ERASED = "erased"


@dataclass(frozen=True, slots=True)
class Event:
    """One event for a connection. For messages, ``conversation``/``seq`` drive dedup."""

    kind: str
    origin: str
    conversation: str
    seq: int
    frame: str


class Subscriber(Protocol):
    """A local connection as the hub sees it."""

    @property
    def user_id(self) -> str:
        """The authenticated user."""

    def deliver(self, event: Event) -> None:
        """Queue ``event`` without blocking; the connection handles its own overflow."""

    def catch_up(self) -> None:
        """Read from the store what the broker may have dropped, and send it."""


def _topic(user_id: str) -> str:
    return "u:" + user_id


class Hub:
    """Routes broker traffic to local subscribers; publishes events for users."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._local: dict[str, set[Subscriber]] = {}
        self._subscribed: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_payload: bytes | None = None
        self._last_event = Event("", "", "", 0, "")
        broker.set_handler(self._on_message)
        broker.set_resync_handler(self._on_resync)

    def local_count(self, user_id: str) -> int:
        """How many of the user's connections this process holds."""
        return len(self._local.get(user_id, ()))

    def user_count(self) -> int:
        """How many users have at least one connection on this process."""
        return len(self._local)

    def subscribers(self) -> list[Subscriber]:
        """Every local connection."""
        return [sub for subs in self._local.values() for sub in subs]

    def _on_resync(self) -> None:
        # The broker was down: what was published meanwhile may be lost. The store has it.
        for sub in self.subscribers():
            sub.catch_up()

    async def attach(self, sub: Subscriber) -> None:
        """Start routing the user's events to ``sub``; returns once subscribed."""
        self._local.setdefault(sub.user_id, set()).add(sub)
        await self._sync_subscription(sub.user_id)

    async def detach(self, sub: Subscriber) -> None:
        """Stop routing to ``sub``."""
        subs = self._local.get(sub.user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._local[sub.user_id]
        await self._sync_subscription(sub.user_id)

    async def _sync_subscription(self, user_id: str) -> None:
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            want = user_id in self._local
            have = user_id in self._subscribed
            if want and not have:
                await self._broker.subscribe(_topic(user_id))
                self._subscribed.add(user_id)
            elif have and not want:
                self._subscribed.discard(user_id)
                await self._broker.unsubscribe(_topic(user_id))
        if user_id not in self._local and not lock.locked():
            self._locks.pop(user_id, None)

    async def revoke(self, user_id: str, what: str) -> None:
        """Close the user's connections matching ``what`` in every process (see KIND_REVOKE)."""
        await self.publish([user_id], "", kind=KIND_REVOKE, origin=what)

    async def publish(
        self,
        user_ids: Iterable[str],
        frame: str,
        *,
        kind: str = KIND_EVENT,
        origin: str = "",
        conversation: str = "",
        seq: int = 0,
    ) -> None:
        """Publish one frame to every connection of every user in ``user_ids``."""
        payload = f"{kind}|{origin}|{conversation}|{seq}\n{frame}".encode()
        for user_id in dict.fromkeys(user_ids):
            await self._broker.publish(_topic(user_id), payload)

    def _on_message(self, topic: str, payload: bytes) -> None:
        subs = self._local.get(topic[2:])
        if not subs:
            return
        if payload is self._last_payload:
            # The in-process broker hands every member's topic the same bytes: parse once.
            event = self._last_event
        else:
            try:
                head, frame = payload.decode().split("\n", 1)
                kind, origin, conversation, seq = head.split("|", 3)
                event = Event(kind, origin, conversation, int(seq), frame)
            except ValueError:
                log.warning("dropped a malformed broker payload on %s", topic)
                return
            self._last_payload, self._last_event = payload, event
        for sub in tuple(subs):
            try:
                sub.deliver(event)
            except Exception:  # one connection's failure must not cost the others, nor
                # stop the broker's reader (the Redis broker calls this from its read loop)
                log.exception("delivery to one connection failed", extra={"user_id": sub.user_id})
