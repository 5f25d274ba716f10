"""In-process broker: the single-process default and the reference for the contract."""

from __future__ import annotations

import asyncio
import logging

from chat_server.broker.base import Handler, ResyncHandler

log = logging.getLogger(__name__)


class LocalBroker:
    """``Broker`` for one process: delivery is a scheduled callback, in order."""

    def __init__(self) -> None:
        self._handler: Handler | None = None
        self._topics: set[str] = set()
        self._open = False
        # Published this loop turn, delivered in order by one callback on the next turn.
        self._pending: list[tuple[str, bytes]] = []

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    def set_resync_handler(self, handler: ResyncHandler) -> None:
        return None  # in one process nothing is ever dropped

    async def start(self) -> None:
        self._open = True

    async def publish(self, topic: str, payload: bytes) -> None:
        if self._open and topic in self._topics and self._handler is not None:
            # Deliver on the next loop turn, as a network broker would: the
            # publisher never runs subscriber code inside its own call. One
            # callback per turn for everything published in it, in order.
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._deliver)
            self._pending.append((topic, payload))

    def _deliver(self) -> None:
        pending, self._pending = self._pending, []
        handler = self._handler
        if handler is None:
            return
        for topic, payload in pending:
            try:
                handler(topic, payload)
            except Exception:  # one subscriber's failure must not lose the others' events
                log.exception("broker handler failed", extra={"topic": topic})

    async def subscribe(self, topic: str) -> None:
        self._topics.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)

    async def healthy(self) -> bool:
        return self._open

    async def close(self) -> None:
        self._open = False
        self._topics.clear()
