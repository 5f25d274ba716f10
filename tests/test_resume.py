"""Resume after being offline: every message exactly once, no gap, no duplicate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from chat_server.rooms.models import NewMessage
from chat_server.settings import Settings
from tests.conftest import serve
from tests.helpers import (
    ServerInfo,
    World,
    WsClient,
    barrier,
    body_text,
    fast_world,
    of_type,
    send_frame,
)


@pytest.fixture
async def fast_server(settings: Settings) -> AsyncIterator[ServerInfo]:
    """A server that lets one connection pipeline hundreds of frames."""
    async with serve(replace(settings, rate_burst=100_000, rate_per_second=100_000)) as server:
        yield server


async def _burst(client: WsClient, conv: str, texts: list[str]) -> list[dict[str, Any]]:
    """Send every frame at once, then collect the acks (in order of seq)."""
    frames = [send_frame(conv, t) for t in texts]
    await asyncio.gather(*(client.send(f) for f in frames))
    ids = {f["id"] for f in frames}
    acks: list[dict[str, Any]] = []
    while len(acks) < len(frames):
        f = await client.read(timeout=20)
        assert f["type"] != "error", f
        if f["type"] == "ack" and f["id"] in ids:
            acks.append(f)
        else:
            client.buffer.append(f)
    return sorted(acks, key=lambda a: int(a["seq"]))


async def _collect(client: WsClient, conv: str, want: int, timeout: float = 20) -> list[int]:
    """Every seq of ``conv`` this client receives, in arrival order, until it has ``want``."""
    seen: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(set(seen)) < want:
        assert loop.time() < deadline, f"only {len(set(seen))} of {want}: {seen[-5:]}"
        f = await client.recv(timeout=max(0.1, deadline - loop.time()))
        if f["type"] == "sync" and f["conversation"] == conv:
            assert f["recovered"] is True, f
            seen.extend(m["seq"] for m in f["messages"])
        elif f["type"] == "message.created" and f["message"]["conversation"] == conv:
            seen.append(f["message"]["seq"])
    # Nothing more is on its way.
    for f in await barrier(client):
        if f["type"] == "message.created":
            seen.append(f["message"]["seq"])
        if f["type"] == "sync":
            seen.extend(m["seq"] for m in f["messages"])
    return seen


async def test_resume_after_200_messages(fast_server: ServerInfo) -> None:
    server = fast_server
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    b = await WsClient.connect(server, w.b1.token)
    await b.close()
    c = await WsClient.connect(server, w.c1.token)
    texts = [f"m{i}" for i in range(1, 201)]
    acks = await _burst(c, conv, texts)
    assert [a["seq"] for a in acks] == list(range(1, 201))

    b = await WsClient.connect(server, w.b1.token, resume={conv: 0})
    summary = next(s for s in b.auth["conversations"] if s["id"] == conv)
    assert summary["last_seq"] == 200
    sync = await b.expect("sync")
    assert sync["recovered"] is True
    assert sync["seq"] == 200
    assert [m["seq"] for m in sync["messages"]] == list(range(1, 201))
    assert [body_text({"message": m}) for m in sync["messages"]] == texts
    assert of_type(await barrier(b), "message.created") == []

    # Resuming from the middle gives the rest only.
    await b.close()
    b = await WsClient.connect(server, w.b1.token, resume={conv: 150})
    sync = await b.expect("sync")
    assert [m["seq"] for m in sync["messages"]] == list(range(151, 201))
    # Up to date: an empty, recovered sync.
    await b.close()
    b = await WsClient.connect(server, w.b1.token, resume={conv: 200})
    sync = await b.expect("sync")
    assert sync["recovered"] is True
    assert sync["messages"] == []
    assert sync["seq"] == 200
    await b.close()
    await c.close()


async def test_too_far_behind_says_not_recovered_then_pages(settings: Settings) -> None:
    async with serve(
        replace(settings, resume_max_messages=50, rate_burst=100_000, rate_per_second=1e5)
    ) as server:
        w = await fast_world(server.services)
        conv = w.conv["b1"]
        c = await WsClient.connect(server, w.c1.token)
        await _burst(c, conv, [f"m{i}" for i in range(120)])
        b = await WsClient.connect(server, w.b1.token, resume={conv: 0})
        sync = await b.expect("sync")
        assert sync["recovered"] is False
        assert sync["messages"] == []
        assert sync["seq"] == 120
        got: list[int] = []
        more = True
        for _ in range(10):  # bounded: 120 / 50 pages
            if not more:
                break
            after = got[-1] if got else 0
            await b.send(
                {
                    "type": "history.get",
                    "id": "p",
                    "conversation": conv,
                    "after": after,
                    "limit": 50,
                }
            )
            page = await b.expect("history", id="p")
            got.extend(m["seq"] for m in page["messages"])
            more = page["has_more"]
        assert got == list(range(1, 121))
        # conversation.sync obeys the same limit.
        await b.send({"type": "conversation.sync", "id": "s", "conversation": conv, "after": 60})
        sync = await b.expect("sync", id="s")
        assert sync["recovered"] is False
        assert sync["seq"] == 120
        await b.send({"type": "conversation.sync", "id": "t", "conversation": conv, "after": 70})
        sync = await b.expect("sync", id="t")
        assert sync["recovered"] is True
        assert [m["seq"] for m in sync["messages"]] == list(range(71, 121))
        await b.close()
        await c.close()


@pytest.mark.parametrize("round_", range(3))
async def test_resume_while_messages_keep_coming(fast_server: ServerInfo, round_: int) -> None:
    server = fast_server
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    c = await WsClient.connect(server, w.c1.token)
    await _burst(c, conv, [f"before {i}" for i in range(60)])

    async def keep_sending() -> None:
        for i in range(60):
            ack = await c.send_text(conv, f"during {i}")
            assert ack["type"] == "ack"
            if i % (round_ + 2) == 0:
                await asyncio.sleep(0)

    sender = asyncio.create_task(keep_sending())
    # Each round reconnects at a different point of the concurrent stream.
    for _ in range(round_ * 15):
        await asyncio.sleep(0)
    b = await WsClient.connect(server, w.b1.token, resume={conv: 0})
    try:
        seen = await _collect(b, conv, 120)
    finally:
        await sender
    assert sorted(seen) == list(range(1, 121)), "a gap or a duplicate"
    assert seen == sorted(seen), "out of order"
    await b.close()
    await c.close()


async def test_conversation_sync_frame(fast_server: ServerInfo) -> None:
    server = fast_server
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    b = await WsClient.connect(server, w.b1.token)
    await _burst(b, conv, [f"m{i}" for i in range(10)])
    await b.send({"type": "conversation.sync", "id": "s1", "conversation": conv, "after": 7})
    sync = await b.expect("sync", id="s1")
    assert sync["recovered"] is True
    assert [m["seq"] for m in sync["messages"]] == [8, 9, 10]
    assert sync["seq"] == 10
    await b.close()


async def test_a_hole_left_by_the_broker_is_filled_from_the_store(server: ServerInfo) -> None:
    """A message stored but never published (a lost broker message) still reaches clients."""
    svc = server.services
    w: World = await fast_world(svc)
    conv = w.conv["b1"]
    c = await WsClient.connect(server, w.c1.token)
    b = await WsClient.connect(server, w.b1.token)
    assert (await b.send_text(conv, "one"))["seq"] == 1
    # Written straight to the store, as if its broker message had been dropped.
    lost = NewMessage(conv, "lost-1", w.b1.user.id, w.b1.device_id, "text", b"lost in transit")
    stored, created = await svc.messages.append(lost, time.time())
    assert created
    assert stored.seq == 2
    assert (await b.send_text(conv, "three"))["seq"] == 3
    got = of_type(await barrier(c), "message.created")
    assert [f["message"]["seq"] for f in got] == [1, 2, 3]
    assert body_text(got[1]) == "lost in transit"
    await b.close()
    await c.close()
