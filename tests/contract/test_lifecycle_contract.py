"""The ``LifecycleStore`` contract (``chat_server/storage/base.py``), against every adapter.

Same adapters as ``test_store_contract.py`` (the embedded engine, a real MongoDB when
``CHAT_TEST_MONGODB_URL`` is set, memory), through its ``_open``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, cast

import pytest

from chat_server.rooms.models import (
    AuditRecord,
    Conversation,
    Device,
    EnvelopeRecord,
    KeyRequest,
    NewMessage,
    Role,
    Session,
    User,
)
from chat_server.storage.base import (
    AccountStore,
    KeyStore,
    LifecycleStore,
    MessageStore,
    PresenceStore,
)
from tests.contract.test_store_contract import ADAPTERS, _open


class Backend(Protocol):
    def accounts(self) -> AccountStore: ...
    def messages(self) -> MessageStore: ...
    def presence(self) -> PresenceStore: ...
    def keys(self) -> KeyStore: ...
    def lifecycle(self) -> LifecycleStore: ...
    async def close(self) -> None: ...


@pytest.fixture(params=ADAPTERS)
async def db(request: pytest.FixtureRequest, embedded_mongo_url: str) -> AsyncIterator[Backend]:
    s = await _open(request.param, embedded_mongo_url)
    try:
        yield cast(Backend, s.db)
    finally:
        await s.db.close()


def _user(uid: str, role: Role = Role.BENEFICIARY, created: float = 100.0) -> User:
    return User(uid, role, uid, uid.upper(), "st", created_at=created, active_at=created)


async def _world(db: Backend) -> str:
    """Users ben (beneficiary), cou (counsellor); ben's conversation with messages, reads,
    an epoch, a re-wrap, a key request, a device, a backup, sessions, presence."""
    acc, msgs, keys = db.accounts(), db.messages(), db.keys()
    await acc.add_user(_user("ben"))
    await acc.add_user(_user("cou", Role.COUNSELLOR))
    await msgs.add_conversation(Conversation("conv", "ben", "cou", "st", created_at=1.0))
    await msgs.add_conversation(Conversation("other", "ben2", "cou", "st", created_at=1.0))
    for i, sender in enumerate(("ben", "cou", "ben")):
        await msgs.append(
            NewMessage("conv", f"m{i}", sender, "d-" + sender, "text", b"x", nonce=bytes([i]) * 12),
            10.0 + i,
        )
    await msgs.append(NewMessage("other", "o1", "cou", "d-cou", "text", b"y"), 20.0)
    await msgs.set_read("conv", "ben", 3)
    await msgs.set_read("other", "cou", 1)
    env = EnvelopeRecord("conv", 1, "d-ben", "d-cou", b"e", b"c", b"s")
    await keys.add_device(Device("d-ben", "ben", b"1" * 32, b"2" * 32, b"3", 5.0))
    await keys.add_epoch("conv", 1, "d-cou", [env], 6.0, "cou")
    await keys.add_envelopes([EnvelopeRecord("conv", 1, "d-ben2", "d-cou", b"e", b"c", b"s")])
    await keys.add_epoch(
        "other",
        1,
        "d-cou",
        [EnvelopeRecord("other", 1, "d-cou", "d-cou", b"e", b"c", b"s")],
        6.0,
        "cou",
    )
    await keys.put_key_request(KeyRequest("conv", "d-ben2", "ben", "new_device", False, 7.0))
    await keys.put_backup("ben", {"ct": "x"}, 8.0)
    await acc.add_session(Session("tok-ben", "ben", "d-ben", 9.0, 1000.0))
    await acc.add_session(Session("tok-cou", "cou", "d-cou", 9.0, 1000.0))
    await db.presence().connected("ben", "proc", 1, 9.0)
    await db.presence().seen("ben", 9.0)
    return "conv"


async def test_record_login_and_inactive_users(db: Backend) -> None:
    lc, acc = db.lifecycle(), db.accounts()
    await acc.add_user(_user("old", created=100.0))
    await acc.add_user(_user("new", created=500.0))
    await acc.add_user(_user("staff", Role.COUNSELLOR, created=50.0))
    found = await lc.inactive_users(300.0, 10, unwarned_only=False)
    assert [u.id for u in found] == ["staff", "old"]  # oldest activity first
    assert [u.id for u in await lc.inactive_users(300.0, 1, unwarned_only=False)] == ["staff"]
    await lc.record_login("old", 400.0)
    assert [u.id for u in await lc.inactive_users(300.0, 10, unwarned_only=False)] == ["staff"]
    u = await acc.get_user("old")
    assert u is not None
    assert u.active_at == 400.0
    # Warned once; a login clears the warning.
    assert await lc.mark_warned("staff", 600.0) is True
    assert await lc.mark_warned("staff", 700.0) is False
    assert await lc.mark_warned("nobody", 700.0) is False
    assert await lc.inactive_users(300.0, 10, unwarned_only=True) == []
    warned = await lc.inactive_users(300.0, 10, unwarned_only=False)
    assert [(w.id, w.notice_at) for w in warned] == [("staff", 600.0)]
    await lc.record_login("staff", 800.0)
    s = await acc.get_user("staff")
    assert s is not None
    assert s.notice_at is None
    assert s.active_at == 800.0
    # A login never moves the clock back.
    await lc.record_login("staff", 10.0)
    s = await acc.get_user("staff")
    assert s is not None
    assert s.active_at == 800.0


async def test_erasure_removes_everything_of_the_account(db: Backend) -> None:
    conv = await _world(db)
    lc, acc, msgs, keys = db.lifecycle(), db.accounts(), db.messages(), db.keys()
    assert await lc.begin_erasure("nobody", "deleted-x") is None
    assert await lc.begin_erasure("ben", "deleted-a") == "deleted-a"
    assert await lc.begin_erasure("ben", "deleted-b") == "deleted-a"
    assert await acc.get_session("tok-ben", 0.0) is None  # sessions end at once
    assert await acc.get_session("tok-cou", 0.0) is not None
    assert [u.id for u in await lc.pending_erasures(10)] == ["ben"]
    assert await lc.inactive_users(10**9, 10, unwarned_only=False) != []
    assert "ben" not in [u.id for u in await lc.inactive_users(10**9, 10, unwarned_only=False)]

    removed = await lc.erase_conversation(conv, "deleted-a", 50.0)
    assert removed >= 3 + 1 + 1 + 1 + 1  # messages, read marker, epoch, re-wrap, key request
    assert await lc.erase_conversation(conv, "deleted-a", 60.0) == 0
    tomb = await msgs.get_conversation(conv)
    assert tomb is not None
    assert (tomb.beneficiary_id, tomb.deleted_at, tomb.last_seq) == ("deleted-a", 50.0, 0)
    assert await msgs.messages_after(conv, 0, 10) == []
    assert await msgs.read_markers([conv]) == {conv: {}}
    assert await keys.envelopes_for("d-ben", conv) == []
    assert await keys.envelopes_for("d-ben2", conv) == []
    assert await keys.key_requests([conv]) == []
    # The counsellor keeps the tombstone (their list shows "compte supprimé").
    assert {c.id for c in await msgs.conversations_for("cou")} == {"conv", "other"}
    assert await msgs.conversations_for("ben") == []
    # Another conversation is untouched.
    assert len(await msgs.messages_after("other", 0, 10)) == 1
    assert await msgs.read_markers(["other"]) == {"other": {"cou": 1}}
    assert len(await keys.envelopes_for("d-cou", "other")) == 1

    assert await lc.erase_account("ben") >= 4  # device, backup, presence, the account
    assert await lc.erase_account("ben") == 0
    assert await acc.get_user("ben") is None
    assert await acc.find_user_by_login("ben") is None
    assert await keys.get_device("d-ben") is None
    assert await keys.get_backup("ben") is None
    assert await db.presence().seen_at(["ben"]) == {}
    assert await lc.pending_erasures(10) == []
    assert await acc.get_user("cou") is not None


async def test_audit_is_pseudonymised_and_found_by_person(db: Backend) -> None:
    lc, keys = db.lifecycle(), db.keys()
    await keys.add_audit(
        AuditRecord("c1", "sup", "transfer.permanent", {"from": "a", "to": "b"}, 1)
    )
    await keys.add_audit(AuditRecord("c1", "a", "conversation.archived", {"reason": "emploi"}, 2))
    await keys.add_audit(
        AuditRecord("c2", "sup", "transfer.temporary", {"from": "x", "to": "y"}, 3)
    )
    found = await lc.audit_involving("a")
    assert [r.action for r in found] == ["transfer.permanent", "conversation.archived"]
    assert await lc.pseudonymise_audit("a", "deleted-1") == 2
    assert await lc.pseudonymise_audit("a", "deleted-1") == 0
    assert await lc.audit_involving("a") == []
    renamed = await lc.audit_involving("deleted-1")
    assert renamed[0].details == {"from": "deleted-1", "to": "b"}
    assert renamed[0].actor_id == "sup"
    assert renamed[1].actor_id == "deleted-1"
    assert [r.action for r in await lc.audit_involving("b")] == ["transfer.permanent"]
    assert len(await lc.audit_involving("sup")) == 2
    # Retention: oldest first, bounded.
    assert await lc.purge_audit(2.5, 1) == 1
    assert await lc.purge_audit(2.5, 10) == 1
    assert await lc.purge_audit(2.5, 10) == 0
    assert [r.action for r in await keys.audit_for("c2")] == ["transfer.temporary"]


async def test_sessions_of_and_purges(db: Backend) -> None:
    lc, acc = db.lifecycle(), db.accounts()
    await acc.add_user(_user("u"))
    for i in range(5):
        await acc.add_session(Session(f"t{i}", "u", "d", float(i), 100.0 + i))
    assert [s.token_hash for s in await lc.sessions_of("u")] == [f"t{i}" for i in range(5)]
    assert await lc.purge_sessions(102.0, 2) == 2  # expired: t0, t1, t2; two at most
    assert await lc.purge_sessions(102.0, 10) == 1
    assert await lc.purge_sessions(102.0, 10) == 0
    assert [s.token_hash for s in await lc.sessions_of("u")] == ["t3", "t4"]
    await acc.add_user(_user("v"))
    await acc.set_activation("u", "code-u", 50.0)
    await acc.set_activation("v", "code-v", 500.0)
    assert await lc.purge_activations(100.0, 10) == 1
    assert await lc.purge_activations(100.0, 10) == 0
    assert await acc.consume_activation("code-u", 0.0) is None
    consumed = await acc.consume_activation("code-v", 0.0)
    assert consumed is not None
    assert consumed.id == "v"


async def test_archive_restore_and_tombstones(db: Backend) -> None:
    lc, msgs = db.lifecycle(), db.messages()
    for name in ("a", "b", "c"):
        await msgs.add_conversation(Conversation(name, "ben-" + name, "cou", "st"))
    archived = await lc.archive("a", "cou", "emploi", 10.0)
    assert archived is not None
    assert (archived.archived_at, archived.archived_by, archived.archive_reason) == (
        10.0,
        "cou",
        "emploi",
    )
    assert await lc.archive("a", "cou", "autre", 11.0) is None  # already archived
    assert await lc.archive("nope", "cou", "autre", 11.0) is None
    await lc.archive("b", "cou", "formation", 20.0)
    assert [c.id for c in await lc.archived_before(15.0, 10)] == ["a"]
    assert [c.id for c in await lc.archived_before(25.0, 10)] == ["a", "b"]
    assert [c.id for c in await lc.archived_before(25.0, 1)] == ["a"]
    restored = await lc.restore("a")
    assert restored is not None
    assert restored.archived_at is None
    assert restored.archive_reason is None
    assert await lc.restore("a") is None
    assert await lc.restore("c") is None
    stored = await msgs.get_conversation("a")
    assert stored is not None
    assert stored.archived_at is None
    # A tombstone cannot be archived; tombstones go after their period.
    await lc.erase_conversation("b", "deleted-b", 30.0)
    tomb = await msgs.get_conversation("b")
    assert tomb is not None
    assert tomb.archived_at is None  # the archive is cleared with the account
    assert await lc.archive("b", "cou", "autre", 31.0) is None
    assert await lc.archived_before(10**9, 10) == []
    assert await lc.purge_tombstones(30.0, 10) == 0
    assert await lc.purge_tombstones(31.0, 10) == 1
    assert await lc.purge_tombstones(31.0, 10) == 0
    assert await msgs.get_conversation("b") is None
    assert {c.id for c in await msgs.conversations_for("cou")} == {"a", "c"}


async def test_dead_processes_go_with_their_connection_counters(db: Backend) -> None:
    lc, presence = db.lifecycle(), db.presence()
    await presence.process_alive("old", 100.0)
    await presence.process_alive("live", 10_000.0)
    await presence.connected("u1", "old", 1, 50.0)
    await presence.connected("u2", "old", 1, 50.0)
    await presence.connected("u1", "live", 1, 50.0)
    await presence.seen("u2", 60.0)
    assert await lc.purge_dead_processes(100.0, 10) == 0  # still alive at 100
    assert await lc.purge_dead_processes(5_000.0, 10) == 3  # the process and two counters
    assert await lc.purge_dead_processes(5_000.0, 10) == 0
    now = await presence.presence(["u1", "u2"], 200.0)
    assert now["u1"].online is True  # its connection in the live process counts
    assert now["u2"].online is False
    assert await presence.seen_at(["u2"]) == {"u2": 60.0}  # "vu à" is not a counter


async def test_swap_backup_is_a_compare_and_set(db: Backend) -> None:
    keys = db.keys()
    first = {"v": "1", "nonce": "n1", "blob": "a"}
    assert await keys.swap_backup("sw", {"v": "1", "nonce": "n0", "blob": "z"}, first, 1.0) is False
    assert await keys.get_backup("sw") is None
    assert await keys.swap_backup("sw", None, first, 1.0) is True
    assert await keys.swap_backup("sw", None, {"v": "1", "nonce": "nx", "blob": "x"}, 1.0) is False
    # Two renewals that both read ``first``: the second to write finds it gone.
    second = {"v": "1", "nonce": "n2", "blob": "b", "device_id": "d2"}
    third = {"v": "1", "nonce": "n3", "blob": "c", "device_id": "d3"}
    assert await keys.swap_backup("sw", first, second, 2.0) is True
    assert await keys.swap_backup("sw", first, third, 2.0) is False
    assert await keys.get_backup("sw") == second
