"""``docs/privacy.md`` stays true: every collection and field the server stores is listed.

Two checks, both against the inventory's sections (``### `name```) and their
tables' first column:

- the code: every collection a module of ``chat_server/`` or
  ``notifications/`` names (``db.<name>.<operation>``, ``get_collection("...")``,
  ``db["..."]``) has a section;
- the store: after every kind of record has been written through the real
  adapters on the embedded engine, every collection of the database has a
  section and every top-level field of its documents a row.

A new collection or field without its entry fails here, with the names to add.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chat_server import protocol as p
from chat_server.rooms.models import Device, EnvelopeRecord, KeyRequest, Role
from chat_server.services import Services, build_services
from chat_server.settings import Settings
from tests.helpers import PASSWORD

REPO = Path(__file__).resolve().parents[1]
PRIVACY = REPO / "docs" / "privacy.md"
SECTION = re.compile(r"^### `([a-z_.]+)`\s*$", re.M)
ROW = re.compile(r"^\|([^|]+)\|", re.M)
COLLECTION_OPS = (
    "find|find_one|find_one_and_update|insert_one|insert_many|update_one|update_many|"
    "delete_one|delete_many|replace_one|create_index|count_documents|bulk_write|aggregate"
)
CODE_PATTERNS = [
    re.compile(r"\b_?db\.([a-z_]+)\.(?:" + COLLECTION_OPS + r")\b"),
    re.compile(r"get_collection\(\s*\"([a-z_.]+)\""),
    re.compile(r"\bdb\[\"([a-z_.]+)\"\]"),
    re.compile(r"_finder\(\s*db\.([a-z_]+)\b"),
]


def inventory(text: str) -> dict[str, set[str]]:
    """``{collection: {field, ...}}`` as the inventory lists them."""
    out: dict[str, set[str]] = {}
    marks = list(SECTION.finditer(text))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        fields: set[str] = set()
        for row in ROW.finditer(text[m.end() : end]):
            fields.update(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", row.group(1)))
        out[m.group(1)] = fields
    return out


def collections_in_code(roots: Iterable[Path]) -> set[str]:
    """Collection names the code uses."""
    found: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            text = path.read_text("utf-8")
            for pattern in CODE_PATTERNS:
                found.update(pattern.findall(text))
    return found


def undocumented(
    stored: dict[str, set[str]], listed: dict[str, set[str]]
) -> tuple[set[str], dict[str, set[str]]]:
    """Collections missing from the inventory, and fields missing per listed collection."""
    missing = set(stored) - set(listed)
    fields = {
        name: extra
        for name, keys in stored.items()
        if name in listed and (extra := keys - listed[name])
    }
    return missing, fields


async def stored_shape(svc: Services) -> dict[str, set[str]]:
    """Every collection of the service's database with the top-level fields of its documents."""
    db = svc.database.db  # type: ignore[attr-defined]
    out: dict[str, set[str]] = {}
    for name in await db.list_collection_names():
        keys: set[str] = set()
        if name.endswith((".files", ".chunks", "_files", "_chunks")):
            # GridFS's own collections: the embedded engine serves them only through the
            # GridFS API (their fields are GridFS's, listed as such in the inventory).
            # The engine names them ``<bucket>_files``; MongoDB ``<bucket>.files``.
            out[re.sub(r"_(files|chunks)$", r".\1", name)] = set()
            continue
        async for doc in db[name].find().limit(500):
            keys.update(doc)
        out[name] = keys
    return out


@pytest.fixture
async def busy(settings: Settings) -> AsyncIterator[Services]:
    """Services on the embedded engine after writing every kind of record."""
    svc = await build_services(replace(settings, retention_job="off", push_worker="off"))
    try:
        acc = svc.accounts
        st = await acc.create_structure("ML", "mission_locale", ("CEJ",))
        c1 = await acc.create_user(Role.COUNSELLOR, "c1", "Claire Un", st.id, PASSWORD)
        c2 = await acc.create_user(Role.COUNSELLOR, "c2", "Cédric Deux", st.id, PASSWORD)
        sup = await acc.create_user(Role.SUPERVISOR, "sup", "Sophie Sup", st.id, PASSWORD)
        nb = await acc.create_beneficiary(c1, "b1", "Inès Moreau", "CEJ")
        await acc.create_beneficiary(c1, "b2", "Lucas Petit", "CEJ")  # an unused code
        await acc.set_password(nb.user.id, PASSWORD)
        await acc.login("b1", PASSWORD, "phone-1")
        with pytest.raises(Exception, match="wrong"):
            await acc.login("b1", "not the password", None)
        conv = nb.conversation.id
        for user, dev in ((nb.user, "phone-1"), (c1, "desk-1")):
            frame = p.MessageSend(
                id="f",
                conversation=conv,
                client_id=secrets.token_hex(8),
                msg_type="text",
                body=b"x",
                nonce=secrets.token_bytes(12),
            )
            await svc.conversations.send(user, dev, frame, "")
        await svc.conversations.mark_read(nb.user, conv, 2)
        await _attachment(svc, nb.user, conv)
        keys = svc.key_store
        await keys.add_device(Device("phone-1", nb.user.id, b"1" * 32, b"2" * 32, b"3", 1.0))
        env = EnvelopeRecord(conv, 1, "phone-1", "desk-1", b"e", b"c", b"s")
        await keys.add_epoch(conv, 1, "desk-1", [env], 2.0, c1.id)
        await keys.add_envelopes([replace(env, recipient_device="phone-2")])
        await keys.put_key_request(KeyRequest(conv, "phone-2", nb.user.id, "new", False, 3.0))
        await keys.put_backup(nb.user.id, {"ct": "x"}, 4.0)
        await svc.keys.transfer(sup, conv, c2.id, "temporary", 10**10)
        await svc.lifecycle.archive(c2, conv, "emploi")
        presence = svc.database.presence()
        await presence.connected(nb.user.id, svc.process_id, 1, 5.0)
        await presence.seen(nb.user.id, 6.0)
        # A tombstone and a marked erasure.
        other = await acc.create_beneficiary(c1, "b3", "Yasmine Haddad", "BRSA")
        await svc.lifecycle.eraser.erase(other.user, "retention", "inactivity")
        await svc.lifecycle_store.begin_erasure(c2.id, "deleted-0")
        await svc.lifecycle_store.mark_warned(sup.id, 7.0)

        await presence.process_alive(svc.process_id, 99.0)  # what several processes write
        # A push subscription and a job that waits (the worker is not running here).
        from notifications.models import JobKind, PushJob, Subscription, Target

        push = svc.push.store
        await push.put_subscription(
            Subscription("s1", nb.user.id, "phone-1", "https://push.example/x", "p", "a", 8.0)
        )
        job = PushJob("m:x:1", JobKind.MESSAGE, (nb.user.id,), 9.0, 10**10, conv, 1)
        await push.add_job(job)
        await push.update_job(job.id, {"s1": Target(1, 10**10)}, 10**10)
        # A broadcast list and a broadcast record with a linked copy.
        from chat_server.tools.broadcast import Broadcast, BroadcastList, Copy

        casts = svc.database.broadcasts()
        await casts.add_list(BroadcastList("l1", c1.id, "Atelier", (nb.user.id,), 1.0, 1.0))
        copy = Copy(conv, nb.user.id, "cid-1", 3)
        await casts.add_broadcast(Broadcast("r1", c1.id, "l1", "Atelier", 2.0, (copy,)), 100)
        yield svc
    finally:
        await svc.close()


async def _attachment(svc: Services, user: Any, conv: str) -> None:
    """An uploaded blob, sent in a message (GridFS collections and the blob records)."""

    async def content() -> AsyncIterator[bytes]:
        yield b"x" * 300_000

    blob = await svc.attachments.upload(user, conv, content())
    frame = p.MessageSend(
        id="f",
        conversation=conv,
        client_id=secrets.token_hex(8),
        msg_type="attachment",
        body=b"x",
        nonce=secrets.token_bytes(12),
        meta={"blob": blob.id, "size": blob.size},
    )
    await svc.conversations.send(user, "phone-1", frame, "")


def test_every_collection_the_code_names_is_in_the_inventory() -> None:
    listed = inventory(PRIVACY.read_text("utf-8"))
    used = collections_in_code([REPO / "chat_server", REPO / "notifications"])
    assert {"users", "messages", "audit", "epochs"} <= used  # the scan sees the adapters
    missing = used - set(listed)
    assert not missing, f"add a section to docs/privacy.md for: {sorted(missing)}"


async def test_every_stored_collection_and_field_is_in_the_inventory(busy: Services) -> None:
    listed = inventory(PRIVACY.read_text("utf-8"))
    stored = await stored_shape(busy)
    assert {"attachment_blobs", "attachments.files", "attachments.chunks"} <= set(stored)
    assert len(stored) >= 15
    assert {"backups", "rewraps", "key_requests", "last_seen", "processes"} <= set(stored)
    assert {"archived_at", "deleted_at"} <= stored["conversations"]
    assert {"erasing", "notice_at", "active_at", "activation_hash"} <= stored["users"]
    missing, fields = undocumented(stored, listed)
    assert not missing, f"add a section to docs/privacy.md for: {sorted(missing)}"
    assert not fields, (
        f"add rows to docs/privacy.md for: { {k: sorted(v) for k, v in fields.items()} }"
    )


async def test_the_check_fails_for_a_collection_or_field_it_does_not_know(
    busy: Services,
) -> None:
    db: Any = busy.database.db  # type: ignore[attr-defined]
    await db.surprise.insert_one({"_id": "x", "anything": 1})
    await db.users.update_one({}, {"$set": {"favourite_colour": "bleu"}})
    missing, fields = undocumented(await stored_shape(busy), inventory(PRIVACY.read_text()))
    assert missing == {"surprise"}
    assert fields == {"users": {"favourite_colour"}}
    # The code scan sees a collection a module starts using.
    assert collections_in_code([]) == set()
    assert CODE_PATTERNS[0].findall("await self._db.outbox.insert_one(doc)") == ["outbox"]
    assert CODE_PATTERNS[1].findall('db.get_collection("push_subscriptions")') == [
        "push_subscriptions"
    ]
