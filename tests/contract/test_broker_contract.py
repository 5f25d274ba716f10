"""The broker port's contract (``chat_server/broker/base.py``) against every adapter.

``LocalBroker`` always; ``RedisBroker`` against the ``redis-server`` the session fixture
starts on a loopback port. ``make()`` builds a started broker; for Redis two of them
stand for two processes sharing one Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from chat_server.broker.base import Broker
from chat_server.broker.local import LocalBroker


class Collector:
    """The broker's handler: records every ``(topic, payload)`` in arrival order."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.got.append((topic, payload))

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p in self.got if t == topic]

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"timed out; got {len(self.got)} messages")
            await asyncio.sleep(0.005)


Make = Callable[[], Awaitable[tuple[Broker, Collector]]]


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """A factory of started brokers of one adapter; all are closed after the test."""
    opened: list[Broker] = []
    redis_url: str | None = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")

    async def factory() -> tuple[Broker, Collector]:
        broker: Broker
        if redis_url is not None:
            from chat_server.broker.redis import RedisBroker

            # A fresh prefix per test: channels never mix with another test's.
            broker = RedisBroker(redis_url, prefix=f"t{id(opened)}:")
        else:
            broker = LocalBroker()
        sink = Collector()
        broker.set_handler(sink)
        await broker.start()
        opened.append(broker)
        return broker, sink

    factory.kind = request.param  # type: ignore[attr-defined]
    try:
        yield factory
    finally:
        for b in opened:
            await b.close()


async def test_subscribe_then_publish_delivers(make: Make) -> None:
    broker, sink = await make()
    await broker.subscribe("u:alice")
    await broker.publish("u:bob", b"not subscribed")
    await broker.publish("u:alice", b"hello")
    await sink.until(lambda: len(sink.got) >= 1)
    # Sentinel on the subscribed topic: anything published before it has arrived.
    await broker.publish("u:alice", b"sentinel")
    await sink.until(lambda: b"sentinel" in sink.on("u:alice"))
    assert sink.got == [("u:alice", b"hello"), ("u:alice", b"sentinel")]


async def test_order_is_kept_per_topic_over_1000_messages(make: Make) -> None:
    broker, sink = await make()
    await broker.subscribe("a")
    await broker.subscribe("b")
    for i in range(1000):
        await broker.publish("a", f"a{i}".encode())
        if i % 3 == 0:
            await broker.publish("b", f"b{i}".encode())
    await sink.until(lambda: len(sink.on("a")) == 1000 and len(sink.on("b")) == 334)
    assert sink.on("a") == [f"a{i}".encode() for i in range(1000)]
    assert sink.on("b") == [f"b{i}".encode() for i in range(0, 1000, 3)]


async def test_unsubscribe_stops_delivery(make: Make) -> None:
    broker, sink = await make()
    await broker.subscribe("gone")
    await broker.subscribe("kept")
    await broker.publish("gone", b"before")
    await sink.until(lambda: sink.on("gone") == [b"before"])
    await broker.unsubscribe("gone")
    await broker.unsubscribe("never-subscribed")  # ignored
    for i in range(20):
        await broker.publish("gone", f"after{i}".encode())
    await broker.publish("kept", b"sentinel")
    await sink.until(lambda: sink.on("kept") == [b"sentinel"])
    assert sink.on("gone") == [b"before"]
    # Subscribing again works.
    await broker.subscribe("gone")
    await broker.publish("gone", b"back")
    await sink.until(lambda: sink.on("gone") == [b"before", b"back"])


async def test_two_processes_see_each_others_publishes(make: Make) -> None:
    if getattr(make, "kind", "") != "redis":
        pytest.skip("an in-process broker does not span processes")
    first, first_sink = await make()
    second, second_sink = await make()
    await first.subscribe("u:x")
    await second.subscribe("u:x")
    await second.subscribe("u:y")
    await second.publish("u:x", b"from second")
    await first.publish("u:y", b"from first")
    await first_sink.until(lambda: first_sink.on("u:x") == [b"from second"])
    await second_sink.until(
        lambda: (
            second_sink.on("u:x") == [b"from second"] and second_sink.on("u:y") == [b"from first"]
        )
    )
    assert first_sink.on("u:y") == []


async def test_healthy_until_closed(make: Make) -> None:
    broker, sink = await make()
    assert await broker.healthy() is True
    await broker.subscribe("t")
    await broker.close()
    assert await broker.healthy() is False
    await broker.publish("t", b"after close")  # best effort: no error, no delivery
    assert sink.got == []


async def test_handler_receives_bytes_payloads_unchanged(make: Make) -> None:
    broker, sink = await make()
    await broker.subscribe("bin")
    payload = bytes(range(256)) + "é|\n".encode()
    await broker.publish("bin", payload)
    await sink.until(lambda: len(sink.got) == 1)
    assert sink.got == [("bin", payload)]


async def test_a_failing_connection_never_stops_the_others_delivery(make: Make) -> None:
    """Through the hub: a subscriber whose ``deliver`` raises costs neither the other
    subscribers of the topic nor later events (the Redis broker's read loop lives on)."""
    from chat_server.hub import Event, Hub

    broker, sink = await make()
    hub = Hub(broker)
    got: list[str] = []

    class Sub:
        user_id = "alice"

        def __init__(self, fails: bool) -> None:
            self.fails = fails

        def deliver(self, event: Event) -> None:
            if self.fails:
                raise RuntimeError("injected: this connection's delivery fails")
            got.append(event.frame)

        def catch_up(self) -> None:
            pass

    await hub.attach(Sub(True))
    await hub.attach(Sub(False))
    for frame in ("one", "two", "three"):
        await hub.publish(["alice"], frame)
    await sink.until(lambda: len(got) >= 3)
    assert got == ["one", "two", "three"]
