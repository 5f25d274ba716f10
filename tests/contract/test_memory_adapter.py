"""The in-memory store keeps the storage ports' contracts (storage/base.py).

A focused check of the rules benchmarks rely on; the shared contract suite,
when it runs against every adapter, covers the rest.
"""

from __future__ import annotations

import asyncio

import pytest

from chat_server.rooms.models import (
    Conversation,
    Device,
    EnvelopeRecord,
    NewMessage,
    Role,
    Session,
    User,
)
from chat_server.storage.base import Conflict, NonceReused
from chat_server.storage.memory import MemoryDatabase


def _msg(client_id: str, sender: str = "b", nonce: bytes = b"", conv: str = "c1") -> NewMessage:
    return NewMessage(conv, client_id, sender, "dev-" + sender, "text", b"x" * 20, nonce=nonce)


async def _world() -> MemoryDatabase:
    db = MemoryDatabase()
    for uid, role in (("b", Role.BENEFICIARY), ("k", Role.COUNSELLOR), ("k2", Role.COUNSELLOR)):
        await db.accounts().add_user(User(uid, role, uid.upper(), uid, "s"))
    await db.messages().add_conversation(Conversation("c1", "b", "k", "s"))
    return db


async def test_seq_contiguous_and_idempotent_under_concurrency() -> None:
    db = await _world()
    store = db.messages()
    results = await asyncio.gather(*(store.append(_msg(f"m{i % 50}"), 1.0) for i in range(100)))
    created = [m.seq for m, new in results if new]
    assert sorted(created) == list(range(1, 51))
    again, new = await store.append(_msg("m7"), 2.0)
    assert not new
    assert again.seq == next(m.seq for m, n in results if n and m.client_id == "m7")
    assert await store.last_seq("c1") == 50
    conv = await store.get_conversation("c1")
    assert conv is not None
    assert conv.last_seq == 50
    page = await store.messages_after("c1", 45, 10)
    assert [m.seq for m in page] == [46, 47, 48, 49, 50]
    older = await store.messages_before("c1", 10, 3)
    assert [m.seq for m in older] == [7, 8, 9]


async def test_nonce_reuse_by_a_device_is_refused_but_a_resend_is_not() -> None:
    db = await _world()
    store = db.messages()
    first, _ = await store.append(_msg("a", nonce=b"n" * 12), 1.0)
    resent, created = await store.append(_msg("a", nonce=b"n" * 12), 1.0)
    assert (resent.seq, created) == (first.seq, False)
    with pytest.raises(NonceReused):
        await store.append(_msg("b", nonce=b"n" * 12), 1.0)
    other_device, created = await store.append(_msg("c", sender="k", nonce=b"n" * 12), 1.0)
    assert created
    assert other_device.seq == first.seq + 1


async def test_read_markers_only_move_forward() -> None:
    db = await _world()
    store = db.messages()
    assert await store.set_read("c1", "b", 5) == 5
    assert await store.set_read("c1", "b", 3) == 5
    assert await store.read_markers(["c1", "c2"]) == {"c1": {"b": 5}, "c2": {}}


async def test_accounts_conflicts_activation_and_failures() -> None:
    db = await _world()
    acc = db.accounts()
    with pytest.raises(Conflict):
        await acc.add_user(User("x", Role.BENEFICIARY, "b", "x", "s"))
    await acc.set_activation("b", "h1", 100.0)
    await acc.set_activation("b", "h2", 100.0)
    assert await acc.consume_activation("h1", 10.0) is None
    user = await acc.consume_activation("h2", 10.0)
    assert user is not None
    assert user.id == "b"
    assert await acc.consume_activation("h2", 10.0) is None
    assert [await acc.record_login_failure("k", t, 10.0) for t in (0.0, 1.0, 5.0)] == [1, 2, 3]
    assert await acc.login_failures("k", 9.0, 10.0) == 3
    assert await acc.login_failures("k", 11.0, 10.0) == 0
    assert await acc.record_login_failure("k", 11.0, 10.0) == 1
    await acc.add_session(Session("t1", "b", "d1", 0.0, 50.0))
    await acc.add_session(Session("t2", "b", "d2", 0.0, 50.0))
    assert await acc.get_session("t1", 60.0) is None
    assert await acc.delete_user_sessions("b") == 2
    assert await acc.get_session("t2", 1.0) is None


async def test_counsellor_change_moves_the_conversation() -> None:
    db = await _world()
    store = db.messages()
    assert [c.id for c in await store.conversations_for("k")] == ["c1"]
    await store.set_counsellor("c1", "k2", "k", None)
    assert await store.conversations_for("k") == []
    assert [c.id for c in await store.conversations_for("k2")] == ["c1"]
    assert [c.id for c in await store.conversations_for("b")] == ["c1"]
    with pytest.raises(Conflict):
        await store.add_conversation(Conversation("c9", "b", "k", "s"))


async def test_epochs_are_atomic_and_raise_the_conversation_epoch() -> None:
    db = await _world()
    keys = db.keys()
    await keys.add_device(Device("dev-b", "b", b"d" * 32, b"s" * 32, b"r" * 64, 1.0))
    with pytest.raises(Conflict):
        await keys.add_device(Device("dev-b", "b", b"d" * 32, b"s" * 32, b"r" * 64, 1.0))
    await keys.require_rotation("c1")
    env = EnvelopeRecord("c1", 2, "dev-b", "dev-b", b"e" * 32, b"c" * 48, b"g" * 64)
    await keys.add_epoch("c1", 2, "dev-b", [env], 5.0, counsellor_id="k")
    with pytest.raises(Conflict):
        await keys.add_epoch("c1", 2, "dev-b", [], 6.0, counsellor_id="k")
    await keys.add_epoch("c1", 1, "dev-b", [], 7.0, counsellor_id="k")
    conv = await db.messages().get_conversation("c1")
    assert conv is not None
    assert (conv.epoch, conv.rotation_required) == (2, False)
    assert await keys.add_envelopes([env, env]) == 1
    # The epoch's own envelope and the re-wrap: every offer is kept.
    assert [e.epoch for e in await keys.envelopes_for("dev-b", "c1")] == [2, 2]
    assert await keys.epochs_held("c1", ["dev-b", "dev-x"]) == {"dev-b": {2}, "dev-x": set()}
