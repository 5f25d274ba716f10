"""The Mongo adapter's internals: batching of concurrent round trips, seq conflicts."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from chat_server.rooms.models import NewMessage
from chat_server.storage.mongo import MongoDatabase, _pager


async def test_pages_far_apart_are_read_separately_and_each_caller_gets_its_range(
    mongo_url: str,
) -> None:
    db = MongoDatabase(mongo_url, "batching_" + secrets.token_hex(4))
    try:
        await db.create_indexes()
        store = db.messages()
        for conv in ("a", "b"):
            for n in range(1, 101):
                await store.append(NewMessage(conv, f"m{n}", "u", "d", "text", b"x"), float(n))
        queries: list[Any] = []
        collection = store._messages

        class Spy:
            def find(self, query: Any) -> Any:
                queries.append(query)
                return collection.find(query)

        pager = _pager(Spy(), span=10)  # type: ignore[arg-type]
        asks = [("a", 0, 3), ("b", 2, 6), ("a", 50, 52), ("b", 95, 200), ("a", 5, 9)]
        pages = await asyncio.gather(*(pager.submit(r) for r in asks))
        for (conv, after, upto), page in zip(asks, pages, strict=True):
            assert [(d["conversation_id"], d["seq"]) for d in page] == [
                (conv, s) for s in range(after + 1, min(upto, 100) + 1)
            ]
        # One batch, four finds, each on one conversation (an equality): (0, 9] of a for both
        # of its near ranges, (2, 6] of b, (50, 52] of a, (95, 200] of b.
        assert len(queries) == 4
        assert all(isinstance(q["conversation_id"], str) for q in queries)
    finally:
        await db.close()


def test_a_taken_seq_is_told_apart_from_a_resend_on_both_engines() -> None:
    from pymongo.errors import DuplicateKeyError  # noqa: TID251 (the error the adapter reads)

    from chat_server.storage.mongo import _seq_taken

    def dup(details: dict[str, Any]) -> DuplicateKeyError:
        return DuplicateKeyError("duplicate", 11000, details)

    engine = "UNIQUE constraint failed: index 'idx_messages_conversation_id_{}'"
    assert _seq_taken(dup({"errmsg": engine.format("seq")}))
    assert not _seq_taken(dup({"errmsg": engine.format("sender_id_client_id")}))
    mongodb = "E11000 duplicate key error collection: chat.messages index: {} dup key: {{ }}"
    assert _seq_taken(dup({"errmsg": mongodb.format("conversation_id_1_seq_1")}))
    assert _seq_taken(dup({"keyPattern": {"conversation_id": 1, "seq": 1}}))
    assert not _seq_taken(
        dup({"keyPattern": {"conversation_id": 1, "sender_id": 1, "client_id": 1}})
    )
    assert not _seq_taken(dup({"keyPattern": {"nonce_key": 1}}))
    assert not _seq_taken(dup({}))
