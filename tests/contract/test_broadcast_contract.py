"""The ``BroadcastStore`` contract (``chat_server/tools/broadcast.py``), against every adapter.

Same adapters as ``test_store_contract.py`` (the embedded engine, a real MongoDB when
``CHAT_TEST_MONGODB_URL`` is set, memory), through its ``_open``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from chat_server.storage.base import StoreUnavailable
from chat_server.tools.broadcast import Broadcast, BroadcastList, BroadcastStore, Copy
from tests.contract.test_store_contract import ADAPTERS, _open


@pytest.fixture(params=ADAPTERS)
async def store(
    request: pytest.FixtureRequest, embedded_mongo_url: str
) -> AsyncIterator[BroadcastStore]:
    s = await _open(request.param, embedded_mongo_url)
    try:
        store: BroadcastStore = cast(Any, s.db).broadcasts()
        yield store
    finally:
        await s.db.close()


def _record(rid: str, owner: str, at: float, convs: tuple[str, ...] = ("c1", "c2")) -> Broadcast:
    copies = tuple(Copy(c, "b-" + c, "cid-" + c) for c in convs)
    return Broadcast(rid, owner, None, None, at, copies)


async def test_lists(store: BroadcastStore) -> None:
    await store.add_list(BroadcastList("l2", "o1", "Deux", ("b1", "b2"), 2.0, 2.0))
    await store.add_list(BroadcastList("l1", "o1", "Un", ("b1",), 1.0, 1.0))
    await store.add_list(BroadcastList("l3", "o2", "Autre", ("b3",), 1.0, 1.0))
    assert [x.id for x in await store.lists_of("o1")] == ["l1", "l2"]
    assert await store.lists_of("nobody") == []
    changed = await store.update_list("l1", "Un bis", ["b2", "b1"], 5.0)
    assert changed == BroadcastList("l1", "o1", "Un bis", ("b2", "b1"), 1.0, 5.0)
    assert await store.get_list("l1") == changed
    assert await store.update_list("nope", "X", [], 5.0) is None
    assert await store.delete_list("l2") is True
    assert await store.delete_list("l2") is False
    assert await store.get_list("l2") is None


async def test_records_capped_newest_first(store: BroadcastStore) -> None:
    for i in range(5):
        await store.add_broadcast(_record(f"r{i}", "o1", float(i)), keep=3)
    await store.add_broadcast(_record("x", "o2", 1.0), keep=3)
    assert [r.id for r in await store.broadcasts_of("o1", 10)] == ["r4", "r3", "r2"]
    assert [r.id for r in await store.broadcasts_of("o1", 2)] == ["r4", "r3"]
    assert await store.get_broadcast("r0") is None
    assert [r.id for r in await store.broadcasts_of("o2", 10)] == ["x"]


async def test_a_failed_prune_still_reports_the_record_stored(
    store: BroadcastStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await store.add_broadcast(_record("r0", "o1", 0.0), keep=1)

    async def failing_prune(*args: Any) -> None:
        raise StoreUnavailable("injected: prune failed")

    monkeypatch.setattr(store, "_prune", failing_prune)
    with caplog.at_level(logging.WARNING):
        await store.add_broadcast(_record("r1", "o1", 1.0), keep=1)
    assert await store.get_broadcast("r1") is not None
    (line,) = [r for r in caplog.records if "not pruned" in r.getMessage()]
    assert "injected: prune failed" in line.getMessage()
    assert line.exc_info is None
    # The next record's prune catches up.
    monkeypatch.undo()
    await store.add_broadcast(_record("r2", "o1", 2.0), keep=1)
    assert [r.id for r in await store.broadcasts_of("o1", 10)] == ["r2"]


async def test_set_seqs(store: BroadcastStore) -> None:
    await store.add_broadcast(_record("r", "o1", 1.0, ("c1", "c2", "c3")), keep=10)
    await store.set_seqs("r", {"c1": 4})
    await store.set_seqs("r", {"c3": 7, "zz": 1})
    await store.set_seqs("missing", {"c1": 1})
    got = await store.get_broadcast("r")
    assert got is not None
    assert [(c.conversation_id, c.seq) for c in got.copies] == [
        ("c1", 4),
        ("c2", None),
        ("c3", 7),
    ]
    assert got.copies[0] == Copy("c1", "b-c1", "cid-c1", 4)


async def test_erase_user(store: BroadcastStore) -> None:
    await store.add_list(BroadcastList("l1", "o1", "Un", ("b1", "b2"), 1.0, 1.0))
    await store.add_list(BroadcastList("l2", "b1", "?", ("b2",), 1.0, 1.0))
    await store.add_broadcast(_record("r1", "o1", 1.0, ("c1", "c2")), keep=10)
    await store.add_broadcast(_record("r2", "o2", 1.0, ("c3",)), keep=10)
    assert await store.erase_user("b1", ["c1"]) == 3  # l2 gone, l1 changed, r1 changed
    l1 = await store.get_list("l1")
    assert l1 is not None
    assert l1.members == ("b2",)
    assert await store.get_list("l2") is None
    r1 = await store.get_broadcast("r1")
    assert r1 is not None
    assert [c.conversation_id for c in r1.copies] == ["c2"]
    assert await store.erase_user("b1", ["c1"]) == 0  # idempotent
    assert await store.erase_user("o1", []) == 2
    assert await store.lists_of("o1") == []
    assert await store.broadcasts_of("o1", 10) == []
    assert await store.get_broadcast("r2") is not None


async def test_drop_members_removes_only_those(store: BroadcastStore) -> None:
    await store.add_list(BroadcastList("l1", "o1", "Un", ("b1", "b2", "b3"), 1.0, 1.5))
    # An edit made after the caller read the list ("b4" added) is kept.
    await store.update_list("l1", "Un bis", ["b1", "b2", "b3", "b4"], 2.0)
    await store.drop_members("l1", ["b2", "b9"])
    assert await store.get_list("l1") == BroadcastList(
        "l1", "o1", "Un bis", ("b1", "b3", "b4"), 1.0, 2.0
    )
    await store.drop_members("l1", [])
    assert (await store.get_list("l1")) is not None
    await store.delete_list("l1")
    await store.drop_members("l1", ["b1"])
    assert await store.get_list("l1") is None
