"""Presence for a server that runs as one process (the in-process broker).

Connection counts are ephemeral and only this process holds connections, so
they are counted in memory: a reconnect storm after a restart writes nothing
to the store for presence. Only ``last_seen`` outlives the process: it is
written to the underlying store (``seen``) and read back from it.

With several processes (Redis broker) the store's own ``PresenceStore`` is
used, with one counter per user and process and process liveness.
"""

from __future__ import annotations

from collections.abc import Sequence

from chat_server.rooms.models import Presence
from chat_server.storage.base import PresenceStore


class SingleProcessPresence:
    """``PresenceStore``: counts in this process's memory; ``last_seen`` in ``stored``."""

    def __init__(self, stored: PresenceStore) -> None:
        self._stored = stored
        self._counts: dict[str, int] = {}

    async def connected(self, user_id: str, process_id: str, delta: int, now: float) -> None:
        n = self._counts.get(user_id, 0) + delta
        if n > 0:
            self._counts[user_id] = n
        else:
            self._counts.pop(user_id, None)
        if delta < 0:
            await self._stored.seen(user_id, now)

    async def process_alive(self, process_id: str, until: float) -> None:
        return None  # nobody else reads this process's counts

    async def seen(self, user_id: str, at: float) -> None:
        await self._stored.seen(user_id, at)

    async def seen_at(self, user_ids: Sequence[str]) -> dict[str, float]:
        return await self._stored.seen_at(user_ids)

    async def presence(self, user_ids: Sequence[str], now: float) -> dict[str, Presence]:
        seen = await self._stored.seen_at(user_ids)
        return {u: Presence(u, u in self._counts, seen.get(u)) for u in user_ids}
