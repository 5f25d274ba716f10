"""The broker port: best-effort publish/subscribe of opaque payloads on topics.

The broker never stores anything: a message published while nobody in a
process is subscribed is not seen there, and a broken connection can drop
messages. Durability and gap-filling are the store's and the hub's job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Handler = Callable[[str, bytes], None]
ResyncHandler = Callable[[], None]


class BrokerUnavailable(Exception):
    """The broker cannot be reached: a subscription could not be made."""


class Broker(Protocol):
    """Publish/subscribe across every process of a deployment."""

    def set_handler(self, handler: Handler) -> None:
        """Set the one callback that receives ``(topic, payload)`` for subscribed topics.

        Called on the event loop; it must not block.
        """

    def set_resync_handler(self, handler: ResyncHandler) -> None:
        """Set the callback run after the broker recovered from a failure.

        Messages published during the failure may never have arrived; when the
        handler runs, every subscription is in place again, so what subscribers
        read from the store after it misses nothing. Called on the event loop.
        """

    async def start(self) -> None:
        """Connect. After this, ``publish`` and ``subscribe`` may be called."""

    async def publish(self, topic: str, payload: bytes) -> None:
        """Send ``payload`` to every process subscribed to ``topic``, this one included.

        Best effort: may drop on failure (it logs, it does not raise). Messages
        published by one process on one topic arrive in publish order.
        """

    async def subscribe(self, topic: str) -> None:
        """Start receiving ``topic``. Returns once messages published after the
        return are guaranteed to reach the handler (the subscription is confirmed).
        Raises ``BrokerUnavailable`` if the broker cannot be reached.
        """

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``; unknown topics are ignored. Never raises: while
        the broker is down the topic is forgotten and not subscribed again."""

    async def healthy(self) -> bool:
        """True if the broker can deliver now."""

    async def close(self) -> None:
        """Disconnect and stop delivering."""
