"""The storage ports' contracts (``chat_server/storage/base.py``), run against every adapter.

Adapters, through one factory fixture (``store``):

- ``embedded``: the session's embedded ``nx-27017`` engine, always;
- ``mongodb``: a real MongoDB when ``CHAT_TEST_MONGODB_URL`` is set (skipped otherwise);
- ``memory``: ``chat_server.storage.memory.MemoryDatabase``, only if that module imports
  when the tests run (it is written separately; a missing module skips the parameter).

To add an adapter: add a name to ``ADAPTERS`` and a branch to ``_open``. ``second()``
opens another client on the same data (a second process) where the adapter has one.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import pytest

from chat_server.rooms.models import Conversation, NewMessage, Role, Session, User
from chat_server.storage.base import (
    AccountStore,
    Conflict,
    LifecycleStore,
    MessageStore,
    NonceReused,
    PresenceStore,
)


class Backend(Protocol):
    """What the suite needs of a store backend."""

    def accounts(self) -> AccountStore: ...
    def messages(self) -> MessageStore: ...
    def presence(self) -> PresenceStore: ...
    def lifecycle(self) -> LifecycleStore: ...
    async def close(self) -> None: ...


@dataclass
class Store:
    """An adapter under test, and a way to open a second client on the same data."""

    name: str
    db: Backend
    second: Callable[[], Awaitable[Backend]] | None = None
    _opened: list[Backend] = field(default_factory=list)


ADAPTERS = [
    "embedded",
    pytest.param("mongodb", marks=pytest.mark.mongodb),
    "memory",
]


async def _mongo(url: str, db_name: str) -> Backend:
    from chat_server.storage.mongo import MongoDatabase

    db = MongoDatabase(url, db_name)
    await db.wait_ready(15)
    await db.create_indexes()
    return db


async def _open(name: str, embedded_url: str) -> Store:
    if name in ("embedded", "mongodb"):
        if name == "embedded":
            url = embedded_url
        else:
            env_url = os.environ.get("CHAT_TEST_MONGODB_URL")
            if not env_url:
                pytest.skip("CHAT_TEST_MONGODB_URL is not set")
            url = env_url
        db_name = "contract_" + secrets.token_hex(6)
        store = Store(name, await _mongo(url, db_name))

        async def second() -> Backend:
            other = await _mongo(url, db_name)
            store._opened.append(other)
            return other

        store.second = second
        return store
    if name == "memory":
        try:
            memory = importlib.import_module("chat_server.storage.memory")
        except ImportError:
            pytest.skip("chat_server.storage.memory is not available")
        backend: Backend = memory.MemoryDatabase()
        return Store(name, backend)
    raise AssertionError(f"unknown adapter {name}")


@pytest.fixture(params=ADAPTERS)
async def store(request: pytest.FixtureRequest, embedded_mongo_url: str) -> AsyncIterator[Store]:
    """A fresh, empty store of each adapter."""
    s = await _open(request.param, embedded_mongo_url)
    try:
        yield s
    finally:
        for db in s._opened:
            await db.close()
        await s.db.close()


def _msg(
    conv: str, client_id: str, sender: str = "ben", *, nonce: bytes = b"", device: str = ""
) -> NewMessage:
    return NewMessage(
        conv,
        client_id,
        sender,
        device or "dev-" + sender,
        "text",
        b"body " + client_id.encode(),
        nonce=nonce,
    )


async def _conversation(s: Store, beneficiary: str = "ben", counsellor: str = "cou") -> str:
    conv_id = "conv-" + secrets.token_hex(4)
    await s.db.messages().add_conversation(
        Conversation(conv_id, beneficiary, counsellor, "st", created_at=1.0, last_at=1.0)
    )
    return conv_id


async def _seqs(store: MessageStore, conv: str) -> list[int]:
    return [m.seq for m in await store.messages_after(conv, 0, 10_000)]


# ---------------------------------------------------------------- messages and seq


async def test_seq_is_contiguous_under_concurrent_appends(store: Store) -> None:
    conv = await _conversation(store)
    stores = [store.db.messages(), store.db.messages()]  # two adapters on one backend

    async def writer(n: int) -> list[int]:
        st = stores[n % 2]
        out = []
        for i in range(15):
            stored, created = await st.append(_msg(conv, f"w{n}-{i}"), time.time())
            assert created
            out.append(stored.seq)
        return out

    results = await asyncio.gather(*(writer(n) for n in range(6)))
    every = sorted(s for r in results for s in r)
    assert every == list(range(1, 91))
    for r in results:
        assert r == sorted(r)  # one writer's messages keep its order
    assert await _seqs(stores[0], conv) == list(range(1, 91))
    assert await stores[1].last_seq(conv) == 90
    c = await stores[0].get_conversation(conv)
    assert c is not None
    assert c.last_seq == 90


async def test_seq_is_contiguous_across_two_clients(store: Store) -> None:
    if store.second is None:
        pytest.skip(f"{store.name} has no second client (single process only)")
    conv = await _conversation(store)
    other = await store.second()
    clients = [store.db.messages(), other.messages()]
    # A stale view in one client must not make it skip or reuse a seq.
    await clients[1].append(_msg(conv, "warm-up"), time.time())

    async def writer(n: int) -> None:
        for i in range(12):
            _, created = await clients[n % 2].append(_msg(conv, f"p{n}-{i}"), time.time())
            assert created

    await asyncio.gather(*(writer(n) for n in range(6)))
    assert await _seqs(clients[0], conv) == list(range(1, 74))
    assert await _seqs(clients[1], conv) == list(range(1, 74))


async def test_client_id_is_idempotent(store: Store) -> None:
    conv = await _conversation(store)
    st = store.db.messages()
    first, created = await st.append(_msg(conv, "same"), 100.0)
    assert created
    assert first.seq == 1
    again, created = await st.append(
        NewMessage(conv, "same", "ben", "dev-ben", "text", b"another body"), 200.0
    )
    assert created is False
    assert again == first
    # Another sender may use the same client id.
    theirs, created = await st.append(_msg(conv, "same", sender="cou"), 300.0)
    assert created
    assert theirs.seq == 2
    # Concurrent resends: exactly one is created.
    results = await asyncio.gather(*(st.append(_msg(conv, "burst"), 400.0) for _ in range(5)))
    assert sum(created for _, created in results) == 1
    assert {m.seq for m, _ in results} == {3}
    assert await _seqs(st, conv) == [1, 2, 3]


async def test_nonce_reused_by_a_device_is_refused(store: Store) -> None:
    conv = await _conversation(store)
    st = store.db.messages()
    nonce = secrets.token_bytes(12)
    a, _ = await st.append(_msg(conv, "a", nonce=nonce, device="d1"), 1.0)
    with pytest.raises(NonceReused):
        await st.append(_msg(conv, "b", nonce=nonce, device="d1"), 2.0)
    assert await st.last_seq(conv) == 1
    # The resend of the same message is a duplicate, not a nonce reuse.
    again, created = await st.append(_msg(conv, "a", nonce=nonce, device="d1"), 3.0)
    assert created is False
    assert again.seq == a.seq
    # Another device may draw the same nonce; messages without a nonce never collide.
    _, created = await st.append(_msg(conv, "c", sender="cou", nonce=nonce, device="d2"), 4.0)
    assert created
    for cid in ("e1", "e2"):
        _, created = await st.append(_msg(conv, cid), 5.0)
        assert created
    # The refused message left no hole.
    assert await _seqs(st, conv) == [1, 2, 3, 4]
    stored = await st.messages_after(conv, 0, 10)
    assert stored[0].nonce == nonce
    assert stored[0].device_id == "d1"


async def test_messages_after_and_before(store: Store) -> None:
    conv = await _conversation(store)
    other = await _conversation(store, beneficiary="ben2")
    st = store.db.messages()
    for i in range(10):
        await st.append(_msg(conv, f"m{i}"), 10.0 + i)
    await st.append(_msg(other, "elsewhere", sender="ben2"), 50.0)
    assert [m.seq for m in await st.messages_after(conv, 3, 4)] == [4, 5, 6, 7]
    assert [m.seq for m in await st.messages_after(conv, 8, 10)] == [9, 10]
    assert await st.messages_after(conv, 10, 10) == []
    assert [m.seq for m in await st.messages_before(conv, 5, 2)] == [3, 4]
    assert [m.seq for m in await st.messages_before(conv, 100, 3)] == [8, 9, 10]
    assert await st.messages_before(conv, 1, 5) == []
    page = await st.messages_after(conv, 0, 1)
    assert page[0].client_id == "m0"
    assert page[0].body == b"body m0"
    assert page[0].created_at == 10.0
    assert page[0].conversation_id == conv
    assert await st.last_seq(conv) == 10
    assert await st.last_seq(other) == 1
    assert await st.last_seq("nothing-here") == 0
    c = await st.get_conversation(conv)
    assert c is not None
    assert c.last_seq == 10
    assert c.last_at == 19.0


async def test_messages_by_meta_and_of_types(store: Store) -> None:
    conv = await _conversation(store)
    other = await _conversation(store, beneficiary="ben2")
    st = store.db.messages()

    def typed(
        c: str, cid: str, msg_type: str, meta: dict[str, object], sender: str = "ben"
    ) -> NewMessage:
        return replace(_msg(c, cid, sender), msg_type=msg_type, meta=meta)

    await st.append(typed(conv, "a1", "action", {"item": "act-1", "event": "created"}), 1.0)
    await st.append(_msg(conv, "t1"), 2.0)
    await st.append(typed(conv, "a2", "action", {"item": "act-2", "event": "created"}), 3.0)
    await st.append(typed(conv, "a3", "action", {"item": "act-1", "event": "commented"}), 4.0)
    await st.append(typed(conv, "e1", "edit", {"target_seq": 2}), 5.0)
    await st.append(typed(conv, "n1", "notice", {"starts_at": 1, "ends_at": 2}), 6.0)
    await st.append(
        typed(other, "x1", "action", {"item": "act-1", "event": "created"}, sender="ben2"), 7.0
    )
    events = await st.messages_by_meta(conv, "item", "act-1", 10)
    assert [(m.seq, m.client_id) for m in events] == [(1, "a1"), (4, "a3")]
    assert [m.seq for m in await st.messages_by_meta(conv, "item", "act-1", 1)] == [1]
    assert [m.seq for m in await st.messages_by_meta(conv, "target_seq", 2, 10)] == [5]
    assert await st.messages_by_meta(conv, "target_seq", 3, 10) == []
    assert await st.messages_by_meta(conv, "item", "act-9", 10) == []
    found = await st.messages_of_types(conv, ("action", "notice"), 10)
    assert [m.seq for m in found] == [1, 3, 4, 6]
    assert [m.seq for m in await st.messages_of_types(conv, ("action",), 2)] == [3, 4]
    assert await st.messages_of_types(conv, ("appointment",), 10) == []
    assert found[0].meta == {"item": "act-1", "event": "created"}


async def test_quiet_messages_keep_last_at_and_are_counted_apart(store: Store) -> None:
    conv = await _conversation(store)
    st = store.db.messages()

    def quiet(cid: str) -> NewMessage:
        return replace(_msg(conv, cid, "system"), msg_type="system.device_changed", quiet=True)

    await st.append(_msg(conv, "t1"), 10.0)
    await st.append(quiet("q1"), 20.0)
    await st.append(_msg(conv, "t2"), 30.0)
    await st.append(quiet("q2"), 40.0)
    await st.append(quiet("q3"), 50.0)
    await st.append(quiet("q3"), 60.0)  # a resend: still quiet
    c = await st.get_conversation(conv)
    assert c is not None
    assert (c.last_seq, c.last_at) == (5, 30.0)
    quiet_types = ("system.device_changed", "system.epoch_rotated")
    assert await st.count_types_after(conv, 0, quiet_types) == 3
    assert await st.count_types_after(conv, 2, quiet_types) == 2
    assert await st.count_types_after(conv, 5, quiet_types) == 0
    assert await st.count_types_after(conv, 0, ("text",)) == 2


async def test_read_markers_only_move_forward(store: Store) -> None:
    conv = await _conversation(store)
    other = await _conversation(store, beneficiary="ben2")
    st = store.db.messages()
    assert await st.set_read(conv, "cou", 5) == 5
    assert await st.set_read(conv, "cou", 3) == 5
    assert await st.set_read(conv, "cou", 7) == 7
    assert await st.set_read(conv, "ben", 2) == 2
    assert await st.read_markers([conv, other]) == {conv: {"cou": 7, "ben": 2}, other: {}}


async def test_conversations_and_flags(store: Store) -> None:
    st = store.db.messages()
    a = await _conversation(store, "b1", "c1")
    b = await _conversation(store, "b2", "c1")
    with pytest.raises(Conflict):
        await _conversation(store, "b1", "c2")
    assert {c.id for c in await st.conversations_for("c1")} == {a, b}
    assert [c.id for c in await st.conversations_for("b2")] == [b]
    assert await st.conversations_for("nobody") == []
    await st.set_flag(a, True)
    ca = await st.get_conversation(a)
    assert ca is not None
    assert ca.flagged is True
    moved = await st.set_counsellor(a, "c2", "c1", None)
    assert moved is not None
    assert moved.members == ("b1", "c2")
    assert [c.id for c in await st.conversations_for("c2")] == [a]
    assert await st.get_conversation("missing") is None


# ---------------------------------------------------------------- accounts


def _user(uid: str, login: str, role: Role = Role.COUNSELLOR) -> User:
    return User(uid, role, login, login.title(), "st", created_at=1.0)


async def test_users_and_logins(store: Store) -> None:
    acc = store.db.accounts()
    await acc.add_user(_user("u1", "Claire.M"))
    with pytest.raises(Conflict):
        await acc.add_user(_user("u2", "claire.m"))
    found = await acc.find_user_by_login("CLAIRE.M")
    assert found is not None
    assert found.id == "u1"
    assert found.login == "Claire.M"
    await acc.add_user(_user("u3", "other", Role.BENEFICIARY))
    assert set(await acc.get_users(["u1", "u3", "ghost"])) == {"u1", "u3"}
    await acc.set_password_hash("u1", "$argon2id$fake")
    u1 = await acc.get_user("u1")
    assert u1 is not None
    assert u1.password_hash == "$argon2id$fake"
    assert await acc.get_user("ghost") is None


async def test_activation_is_consumed_once(store: Store) -> None:
    acc = store.db.accounts()
    for uid in ("u1", "u2", "u3"):
        await acc.add_user(_user(uid, "login-" + uid, Role.BENEFICIARY))
    now = 1000.0
    await acc.set_activation("u1", "hash-1", now + 100)
    user = await acc.consume_activation("hash-1", now)
    assert user is not None
    assert user.id == "u1"
    assert await acc.consume_activation("hash-1", now) is None
    # Expired.
    await acc.set_activation("u2", "hash-2", now - 1)
    assert await acc.consume_activation("hash-2", now) is None
    # A new code replaces the previous one.
    await acc.set_activation("u3", "old", now + 100)
    await acc.set_activation("u3", "new", now + 100)
    assert await acc.consume_activation("old", now) is None
    # Concurrent attempts: exactly one wins.
    results = await asyncio.gather(*(acc.consume_activation("new", now) for _ in range(5)))
    assert [r.id for r in results if r is not None] == ["u3"]


async def test_sessions_expire_and_are_deleted(store: Store) -> None:
    acc = store.db.accounts()
    now = 1000.0
    await acc.add_session(Session("h1", "u1", "dev1", now, now + 10))
    await acc.add_session(Session("h2", "u1", "dev2", now, now + 10))
    await acc.add_session(Session("h3", "u2", "dev3", now, now + 10))
    s = await acc.get_session("h1", now + 5)
    assert s == Session("h1", "u1", "dev1", now, now + 10)
    assert await acc.get_session("h1", now + 11) is None
    assert await acc.get_session("unknown", now) is None
    await acc.delete_session("h1")
    await acc.delete_session("h1")  # not an error
    assert await acc.get_session("h1", now) is None
    assert await acc.delete_user_sessions("u1") == 1
    assert await acc.get_session("h2", now) is None
    assert await acc.get_session("h3", now) is not None
    assert await acc.delete_user_sessions("u1") == 0


async def test_login_failure_windows(store: Store) -> None:
    acc = store.db.accounts()
    t0 = 10_000.0
    assert await acc.login_failures("k", t0, 60) == 0
    assert await acc.record_login_failure("k", t0, 60) == 1
    assert await acc.record_login_failure("k", t0 + 1, 60) == 2
    assert await acc.record_login_failure("k", t0 + 2, 60) == 3
    assert await acc.login_failures("k", t0 + 3, 60) == 3
    assert await acc.login_failures("other", t0 + 3, 60) == 0
    # The window starts at the first failure; once it has passed it restarts at 1.
    assert await acc.login_failures("k", t0 + 61, 60) == 0
    assert await acc.record_login_failure("k", t0 + 61, 60) == 1
    assert await acc.record_login_failure("k", t0 + 62, 60) == 2
    await acc.clear_login_failures("k")
    assert await acc.login_failures("k", t0 + 63, 60) == 0
    await acc.clear_login_failures("never-failed")


# ---------------------------------------------------------------- presence


async def test_presence_ignores_dead_processes(store: Store) -> None:
    pres = store.db.presence()
    now = 5000.0
    await pres.process_alive("p1", now + 30)
    await pres.connected("u1", "p1", +1, now)
    await pres.connected("u1", "p1", +1, now)
    # p2 never declared itself alive (or crashed long ago): its counts do not count.
    await pres.connected("u2", "p2", +1, now)
    got = await pres.presence(["u1", "u2", "u3"], now + 1)
    assert got["u1"].online is True
    assert got["u2"].online is False
    assert got["u3"].online is False
    assert got["u3"].last_seen is None
    await pres.connected("u1", "p1", -1, now + 2)
    assert (await pres.presence(["u1"], now + 3))["u1"].online is True  # one left
    await pres.connected("u1", "p1", -1, now + 4)
    gone = (await pres.presence(["u1"], now + 5))["u1"]
    assert gone.online is False
    assert gone.last_seen == now + 4
    # A process that stops renewing its liveness takes its users offline with it.
    await pres.connected("u1", "p1", +1, now + 6)
    assert (await pres.presence(["u1"], now + 7))["u1"].online is True
    assert (await pres.presence(["u1"], now + 31))["u1"].online is False
    # Connections counted in two processes: online while either is alive.
    await pres.process_alive("p3", now + 100)
    await pres.connected("u1", "p3", +1, now + 8)
    assert (await pres.presence(["u1"], now + 31))["u1"].online is True


# ---------------------------------------------------------------- concurrency (batched round trips)


async def test_concurrent_reads_each_get_their_own_answer(store: Store) -> None:
    """Many callers at once (a reconnect storm): each gets exactly its own data."""
    acc, msgs, pres = store.db.accounts(), store.db.messages(), store.db.presence()
    now = 20_000.0
    n = 40
    await pres.process_alive("p1", now + 60)
    convs = []
    for i in range(n):
        await acc.add_user(User(f"cu{i}", Role.BENEFICIARY, f"cu{i}", f"U {i}", "st"))
        await acc.add_session(
            Session(f"ch{i}", f"cu{i}", f"cd{i}", now, now + (5 if i % 4 else 100))
        )
        convs.append(await _conversation(store, beneficiary=f"cu{i}", counsellor=f"cc{i % 3}"))
        await msgs.set_read(convs[i], f"cu{i}", i)
        if i % 2:
            await pres.connected(f"cu{i}", "p1", +1, now)

    async def one(i: int) -> None:
        user, session, mine, markers, online = await asyncio.gather(
            acc.get_user(f"cu{i}"),
            acc.get_session(f"ch{i}", now + 10),
            msgs.conversations_for(f"cu{i}"),
            msgs.read_markers([convs[i]]),
            pres.presence([f"cu{i}", "nobody"], now + 1),
        )
        assert user is not None
        assert user.id == f"cu{i}"
        assert (session is not None) == (i % 4 == 0)
        assert [c.id for c in mine] == [convs[i]]
        assert markers == {convs[i]: {f"cu{i}": i}}
        assert online[f"cu{i}"].online is bool(i % 2)
        assert online["nobody"].online is False

    await asyncio.gather(*(one(i) for i in range(n)))
    counsellor = await msgs.conversations_for("cc1")
    assert sorted(c.id for c in counsellor) == sorted(convs[i] for i in range(1, n, 3))
    users = await acc.get_users([f"cu{i}" for i in range(n)] + ["missing"])
    assert sorted(users) == sorted(f"cu{i}" for i in range(n))
    assert await acc.get_users([]) == {}
    assert await msgs.read_markers([]) == {}


async def test_a_refused_message_does_not_fail_the_others_written_with_it(store: Store) -> None:
    """Appends gathered into one write: a nonce reuse refuses that message only."""
    nonce = secrets.token_bytes(12)
    convs = [await _conversation(store, beneficiary=f"nb{i}") for i in range(10)]
    st = store.db.messages()
    await st.append(_msg(convs[0], "first", nonce=nonce, device="dx"), 1.0)

    async def send(i: int) -> bool:
        reuse = i == 5
        m = _msg(convs[i], f"m{i}", nonce=nonce if reuse else secrets.token_bytes(12), device="dx")
        try:
            _, created = await st.append(m, 2.0)
        except NonceReused:
            return False
        return created

    results = await asyncio.gather(*(send(i) for i in range(10)))
    assert results == [i != 5 for i in range(10)]
    for i, conv in enumerate(convs):
        expected = [1, 2] if i == 0 else ([] if i == 5 else [1])
        assert await _seqs(st, conv) == expected
        c = await st.get_conversation(conv)
        assert c is not None
        assert c.last_seq == len(expected)


async def test_seen_is_kept_exactly_and_the_latest_wins(store: Store) -> None:
    pres = store.db.presence()
    at = 1795727024.700651  # 16 significant digits: a rounding store would change it
    await pres.seen("s1", at)
    assert (await pres.presence(["s1"], at))["s1"].last_seen == at
    await pres.seen("s1", at + 1.000001)
    assert (await pres.presence(["s1"], at))["s1"].last_seen == at + 1.000001
    assert await pres.seen_at(["s1", "never"]) == {"s1": at + 1.000001}
    assert await pres.seen_at([]) == {}


async def test_single_process_presence_counts_in_memory(store: Store) -> None:
    from chat_server.storage.presence import SingleProcessPresence

    stored = store.db.presence()
    pres = SingleProcessPresence(stored)
    now = 7000.0
    await pres.connected("sp1", "p", +1, now)
    await pres.connected("sp1", "p", +1, now)
    await pres.connected("sp1", "p", -1, now + 1)
    got = await pres.presence(["sp1", "sp2"], now + 2)
    assert got["sp1"].online is True  # one connection left
    assert got["sp2"].online is False
    assert (await stored.presence(["sp1"], now + 2))["sp1"].online is False  # nothing counted there
    await pres.connected("sp1", "p", -1, now + 3)
    gone = (await pres.presence(["sp1"], now + 4))["sp1"]
    assert gone.online is False
    assert gone.last_seen == now + 3
    # last_seen outlives the process: a new one reads it from the store.
    assert (await SingleProcessPresence(stored).presence(["sp1"], now + 5))["sp1"].last_seen == (
        now + 3
    )


async def test_concurrent_pages_each_get_their_own_range(store: Store) -> None:
    """Pages read at once (near and far apart, same and other conversations)."""
    st = store.db.messages()
    convs = [await _conversation(store, beneficiary=f"pg{i}") for i in range(3)]
    for n in range(1, 31):
        await asyncio.gather(*(st.append(_msg(c, f"p{n}"), float(n)) for c in convs))
    asks = [
        (c, after, limit) for c in convs for after, limit in ((0, 5), (3, 4), (25, 10), (29, 1))
    ]
    asks.append((convs[0], 30, 5))  # nothing after the head
    asks.append(("no-such-conversation", 0, 5))
    pages = await asyncio.gather(*(st.messages_after(c, after, limit) for c, after, limit in asks))
    for (conv, after, limit), page in zip(asks, pages, strict=True):
        expected = list(range(after + 1, min(after + limit, 30) + 1))
        if conv == "no-such-conversation":
            expected = []
        assert [m.seq for m in page] == expected
        assert all(m.conversation_id == conv for m in page)


async def test_message_by_client_id(store: Store) -> None:
    conv = await _conversation(store)
    other = await _conversation(store, beneficiary="ben2")
    st = store.db.messages()
    first, _ = await st.append(_msg(conv, "c-1", "cou"), 1.0)
    await st.append(_msg(conv, "c-2", "ben"), 2.0)
    found = await st.message_by_client_id(conv, "cou", "c-1")
    assert found is not None
    assert (found.seq, found.client_id, found.sender_id) == (first.seq, "c-1", "cou")
    # The key is (conversation, sender, client id): any other part differing finds nothing.
    assert await st.message_by_client_id(conv, "ben", "c-1") is None
    assert await st.message_by_client_id(other, "cou", "c-1") is None
    assert await st.message_by_client_id(conv, "cou", "c-9") is None


# The lease of ``LifecycleStore`` (``take_lease``/``release_lease``): one holder at a time,
# also with a second client (two processes racing for one lease).


async def test_one_holder_at_a_time_renewal_expiry_and_release(store: Store) -> None:
    lc = store.db.lifecycle()
    assert await lc.take_lease("retention", "a", 100.0, 60.0) is True
    assert await lc.take_lease("retention", "b", 110.0, 60.0) is False
    assert await lc.take_lease("other-job", "b", 110.0, 60.0) is True  # leases are per name
    assert await lc.take_lease("retention", "a", 150.0, 60.0) is True  # renewed: until 210
    assert await lc.take_lease("retention", "b", 200.0, 60.0) is False
    # Expired (a died without releasing): the next one takes it over.
    assert await lc.take_lease("retention", "b", 210.0, 60.0) is True
    assert await lc.take_lease("retention", "a", 220.0, 60.0) is False
    await lc.release_lease("retention", "a")  # not a's any more: nothing changes
    assert await lc.take_lease("retention", "a", 221.0, 60.0) is False
    await lc.release_lease("retention", "b")
    assert await lc.take_lease("retention", "a", 222.0, 60.0) is True


async def test_racing_holders_get_it_once(store: Store) -> None:
    dbs = [store.db]
    if store.second is not None:
        dbs.append(await store.second())
    stores = [db.lifecycle() for db in dbs]
    for rnd in range(5):
        name = f"race-{rnd}"
        got = await asyncio.gather(
            *(stores[i % len(stores)].take_lease(name, f"h{i}", 1000.0, 60.0) for i in range(8))
        )
        assert sum(got) == 1, got
        # Expired for everyone at once: again exactly one takes it over.
        again = await asyncio.gather(
            *(stores[i % len(stores)].take_lease(name, f"h{i}", 2000.0, 60.0) for i in range(8))
        )
        assert sum(again) == 1, again
