"""The ``BlobStore`` contract (``chat_server/storage/blobs.py``), against every adapter:
GridFS on the embedded engine, on a real MongoDB when ``CHAT_TEST_MONGODB_URL`` is set,
and memory."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest

from chat_server.storage.blobs import Blob, BlobStore, BlobTooLarge

ADAPTERS = ["embedded", pytest.param("mongodb", marks=pytest.mark.mongodb), "memory"]


@pytest.fixture(params=ADAPTERS)
async def blobs(
    request: pytest.FixtureRequest, embedded_mongo_url: str
) -> AsyncIterator[BlobStore]:
    if request.param == "memory":
        from chat_server.storage.memory import MemoryDatabase

        yield MemoryDatabase().blobs()
        return
    from chat_server.storage.mongo import MongoDatabase

    url = embedded_mongo_url
    if request.param == "mongodb":
        env_url = os.environ.get("CHAT_TEST_MONGODB_URL")
        if not env_url:
            pytest.skip("CHAT_TEST_MONGODB_URL is not set")
        url = env_url
    db = MongoDatabase(url, "blobs_" + secrets.token_hex(6))
    await db.wait_ready(15)
    await db.create_indexes()
    try:
        yield db.blobs()
    finally:
        await db.close()


async def pieces(data: bytes, size: int = 70_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(store: BlobStore, blob_id: str) -> bytes | None:
    content = await store.open(blob_id)
    if content is None:
        return None
    return b"".join([piece async for piece in content])


def new(blob_id: str, owner: str = "u1", conv: str = "c1", at: float = 100.0) -> Blob:
    return Blob(blob_id, owner, conv, 0, at)


async def test_put_streams_and_reads_back_in_order(blobs: BlobStore) -> None:
    data = secrets.token_bytes(600_000)
    stored = await blobs.put(new("blob-aaaaaaaaaaaa01"), pieces(data), 1_000_000)
    assert (stored.size, stored.owner_id, stored.conversation_id) == (600_000, "u1", "c1")
    assert await read_all(blobs, stored.id) == data
    assert await blobs.get(stored.id) == stored
    one = await blobs.put(new("blob-aaaaaaaaaaaa02"), pieces(b"x"), 1)
    assert one.size == 1
    assert await read_all(blobs, one.id) == b"x"


async def test_too_large_keeps_nothing(blobs: BlobStore) -> None:
    data = secrets.token_bytes(300_001)
    with pytest.raises(BlobTooLarge):
        await blobs.put(new("blob-toolarge000001"), pieces(data), 300_000)
    assert await blobs.get("blob-toolarge000001") is None
    assert await blobs.open("blob-toolarge000001") is None
    assert await blobs.usage("u1", 0) == (0, 0)
    assert await blobs.unbound_before(10**12, 10) == []


async def test_a_failing_upload_keeps_nothing_visible(blobs: BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * 300_000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await blobs.put(new("blob-broken00000001"), broken(), 10**6)
    assert await blobs.get("blob-broken00000001") is None
    assert await blobs.open("blob-broken00000001") is None


async def test_bind_once(blobs: BlobStore) -> None:
    await blobs.put(new("blob-bind0000000001"), pieces(b"abc"), 10)
    assert await blobs.bind("blob-bind0000000001", 7)
    assert await blobs.bind("blob-bind0000000001", 7)
    assert not await blobs.bind("blob-bind0000000001", 8)
    assert not await blobs.bind("blob-missing0000001", 1)
    got = await blobs.get("blob-bind0000000001")
    assert got is not None
    assert got.seq == 7


async def test_sweep_queries(blobs: BlobStore) -> None:
    await blobs.put(new("blob-old00000000001", at=10.0), pieces(b"o"), 10)
    await blobs.put(new("blob-new00000000001", at=500.0), pieces(b"n"), 10)
    await blobs.put(new("blob-sent0000000001", at=20.0), pieces(b"s"), 10)
    await blobs.bind("blob-sent0000000001", 3)
    assert [b.id for b in await blobs.unbound_before(100.0, 10)] == ["blob-old00000000001"]
    assert [b.id for b in await blobs.live_before(100.0, 10)] == [
        "blob-old00000000001",
        "blob-sent0000000001",
    ]
    assert [b.id for b in await blobs.live_before(100.0, 1)] == ["blob-old00000000001"]


async def test_expire_deletes_content_keeps_record(blobs: BlobStore) -> None:
    await blobs.put(new("blob-expire00000001"), pieces(b"secret"), 10)
    assert await blobs.expire("blob-expire00000001", 999.0)
    assert not await blobs.expire("blob-expire00000001", 1000.0)
    got = await blobs.get("blob-expire00000001")
    assert got is not None
    assert got.expired_at == 999.0
    assert await blobs.open("blob-expire00000001") is None
    assert await blobs.live_before(10**12, 10) == []
    assert await blobs.usage("u1", 0) == (0, 1)


async def test_delete_and_ownership_queries(blobs: BlobStore) -> None:
    await blobs.put(new("blob-c1u10000000001"), pieces(b"12345"), 10)
    await blobs.put(new("blob-c2u10000000001", conv="c2", at=200.0), pieces(b"12"), 10)
    await blobs.put(new("blob-c1u20000000001", owner="u2"), pieces(b"1"), 10)
    assert sorted(await blobs.of_conversations(["c1"])) == [
        "blob-c1u10000000001",
        "blob-c1u20000000001",
    ]
    assert await blobs.of_conversations([]) == []
    assert sorted(await blobs.of_owner("u1")) == ["blob-c1u10000000001", "blob-c2u10000000001"]
    assert await blobs.usage("u1", 150.0) == (7, 1)
    assert await blobs.delete(["blob-c1u10000000001", "blob-nothere00000001"]) == 1
    assert await blobs.delete(["blob-c1u10000000001"]) == 0
    assert await blobs.get("blob-c1u10000000001") is None
    assert await blobs.open("blob-c1u10000000001") is None
    assert await blobs.usage("u1", 0) == (2, 1)


async def test_one_grant_at_a_time(blobs: BlobStore) -> None:
    await blobs.put(new("blob-grant000000001"), pieces(b"g"), 10)
    assert await blobs.set_grant("blob-grant000000001", "h1", 50.0)
    assert await blobs.set_grant("blob-grant000000001", "h2", 60.0)
    got = await blobs.get("blob-grant000000001")
    assert got is not None
    assert (got.grant_hash, got.grant_expires) == ("h2", 60.0)
    assert not await blobs.set_grant("blob-missing0000001", "h", 1.0)
