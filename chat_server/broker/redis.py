"""Redis pub/sub broker. Only this module imports ``redis``.

Publishes are batched: every publish queued during one loop turn goes out
in a single pipeline, in order, so one process sustains thousands of
messages per second on one connection. One dedicated connection receives.

When Redis goes away and comes back (a restart, a network cut), redis-py
reconnects and subscribes again; once the control channel's subscription is
confirmed again, every other one is too (they are one command), and the
resync handler runs so that subscribers read what was dropped meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chat_server.broker.base import BrokerUnavailable, Handler, ResyncHandler

log = logging.getLogger(__name__)


class RedisBroker:
    """``Broker`` on Redis PUBLISH/SUBSCRIBE; channels are ``prefix + topic``."""

    def __init__(self, url: str, prefix: str = "cejchat:") -> None:
        self._url = url
        self._prefix = prefix
        self._handler: Handler | None = None
        self._resync: ResyncHandler | None = None
        self._broken = False  # the receiving connection failed and is not back yet
        self._pub: aioredis.Redis | None = None
        self._sub: aioredis.Redis | None = None
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._queue: list[tuple[str, bytes]] = []
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self._ready = asyncio.Event()
        self._control = prefix + "proc:" + secrets.token_hex(8)
        self._closing = False

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    def set_resync_handler(self, handler: ResyncHandler) -> None:
        self._resync = handler

    async def start(self) -> None:
        self._pub = aioredis.from_url(self._url)
        self._sub = aioredis.from_url(self._url)
        self._pubsub = self._sub.pubsub()
        await self._pubsub.subscribe(self._control)
        self._reader = asyncio.create_task(self._read_loop(), name="redis-broker-reader")
        await asyncio.wait_for(self._ready.wait(), 10)

    async def _read_loop(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            raise RuntimeError("RedisBroker.start() was not called")
        plen = len(self._prefix)
        while not self._closing:
            try:
                msg = await pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                if not self._broken:
                    log.warning("redis broker receive failed, retrying: %s", type(exc).__name__)
                self._broken = True
                await asyncio.sleep(0.5)
                continue
            if msg is None:
                continue
            kind = msg["type"]
            channel = msg["channel"].decode()
            if kind == b"message" or kind == "message":
                if self._handler is not None and channel != self._control:
                    self._handler(channel[plen:], msg["data"])
            elif kind in ("subscribe", b"subscribe"):
                if channel == self._control:
                    self._ready.set()
                    if self._broken:
                        self._broken = False
                        log.warning("redis broker reconnected; catching up from the store")
                        if self._resync is not None:
                            self._resync()
                for fut in self._pending.pop(channel, []):
                    if not fut.done():
                        fut.set_result(None)

    async def publish(self, topic: str, payload: bytes) -> None:
        self._queue.append((self._prefix + topic, payload))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        if self._pub is None:
            raise RuntimeError("RedisBroker.start() was not called")
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                async with self._pub.pipeline(transaction=False) as pipe:
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning(
                    "redis publish of %d messages failed: %s", len(batch), type(exc).__name__
                )

    async def subscribe(self, topic: str) -> None:
        if self._pubsub is None:
            raise RuntimeError("RedisBroker.start() was not called")
        channel = self._prefix + topic
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(channel, []).append(fut)
        try:
            await self._pubsub.subscribe(channel)
            await asyncio.wait_for(fut, 5)
        except (RedisError, OSError, TimeoutError) as exc:
            waiting = self._pending.get(channel, [])
            if fut in waiting:
                waiting.remove(fut)
            raise BrokerUnavailable(f"redis subscribe failed: {type(exc).__name__}") from None

    async def unsubscribe(self, topic: str) -> None:
        if self._pubsub is None:
            return
        channel = self._prefix + topic
        try:
            await self._pubsub.unsubscribe(channel)
        except (RedisError, OSError):
            # Forget it, or redis-py would subscribe it again when it reconnects.
            for key in (channel, channel.encode()):
                self._pubsub.channels.pop(key, None)

    async def healthy(self) -> bool:
        # After close() a ping would quietly open a new connection: closed is not healthy.
        if self._pub is None or self._closing:
            return False
        try:
            return bool(await self._pub.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        self._closing = True
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        for client in (self._pub, self._sub):
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
