"""The ``StructureKeyStore`` contract (``chat_server/storage/structure_keys.py``), against
every adapter (the embedded engine, a real MongoDB when ``CHAT_TEST_MONGODB_URL`` is set,
memory), through ``test_store_contract._open``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from chat_server.storage.base import Conflict
from chat_server.storage.structure_keys import (
    EndorsementRecord,
    GrantRecord,
    StructureKey,
    StructureKeyStore,
)
from tests.contract.test_store_contract import ADAPTERS, _open


@pytest.fixture(params=ADAPTERS)
async def store(
    request: pytest.FixtureRequest, embedded_mongo_url: str
) -> AsyncIterator[StructureKeyStore]:
    s = await _open(request.param, embedded_mongo_url)
    try:
        yield cast(Any, s.db).structure_keys()
    finally:
        await s.db.close()


def _key(structure: str, key_id: str, at: float = 1.0) -> StructureKey:
    return StructureKey(structure, key_id, b"p" * 32, "dev-sup", "sup", b"s" * 64, at)


def _grant(key_id: str, device: str, sender: str = "dev-sup", structure: str = "st") -> GrantRecord:
    return GrantRecord(structure, key_id, device, sender, b"e" * 32, b"c" * 48, b"s" * 64, 2.0)


def _endorsement(
    key_id: str, device: str, sig: bytes = b"s" * 64, structure: str = "st"
) -> EndorsementRecord:
    return EndorsementRecord(structure, key_id, device, "user-" + device, sig, 3.0)


async def test_one_key_per_structure_even_when_created_at_once(store: StructureKeyStore) -> None:
    assert await store.current_key("st") is None
    results = await asyncio.gather(
        *(store.create_key(_key("st", f"k{i}", float(i))) for i in range(6)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if r is not None)
    won = await store.current_key("st")
    assert won is not None
    assert won.key_id == f"k{results.index(None)}"
    assert won.public_key == b"p" * 32
    assert won.sig == b"s" * 64
    assert await store.current_key("other") is None


async def test_one_grant_per_device_and_key(store: StructureKeyStore) -> None:
    await store.create_key(_key("st", "k1"))
    assert await store.add_grants([]) == 0
    assert await store.add_grants([_grant("k1", "d1"), _grant("k1", "d2")]) == 2
    # A second grant for a device keeps the first; the others are still stored.
    assert await store.add_grants([_grant("k1", "d1", sender="dev-x"), _grant("k1", "d3")]) == 1
    got = {g.recipient_device: g for g in await store.grants_for("k1", ["d1", "d3", "d9"])}
    assert sorted(got) == ["d1", "d3"]
    assert got["d1"].sender_device == "dev-sup"
    assert got["d1"].ct == b"c" * 48
    assert await store.grants_for("k2", ["d1"]) == []
    assert await store.grants_for("k1", []) == []


async def test_delete_structure_removes_its_key_and_grants_only(store: StructureKeyStore) -> None:
    await store.create_key(_key("st", "k1"))
    await store.create_key(_key("st2", "k2"))
    await store.add_grants(
        [_grant("k1", "d1"), _grant("k1", "d2"), _grant("k2", "d1", structure="st2")]
    )
    assert await store.delete_structure("st") == 3
    assert await store.current_key("st") is None
    assert await store.grants_for("k1", ["d1", "d2"]) == []
    assert len(await store.grants_for("k2", ["d1"])) == 1
    assert await store.delete_structure("st") == 0


async def test_one_endorsement_per_device_and_key(store: StructureKeyStore) -> None:
    await store.create_key(_key("st", "k1"))
    assert await store.add_endorsement(_endorsement("k1", "d2"))
    assert await store.add_endorsement(_endorsement("k1", "d1"))
    # A second one for a device keeps the first.
    assert not await store.add_endorsement(_endorsement("k1", "d1", sig=b"t" * 64))
    got = await store.endorsements_for("k1", ["d2", "d1", "d9", "d1"])
    assert [(e.device_id, e.user_id, e.sig) for e in got] == [
        ("d1", "user-d1", b"s" * 64),
        ("d2", "user-d2", b"s" * 64),
    ]
    assert await store.count_endorsements("k1") == 2
    assert await store.count_endorsements("k2") == 0
    assert await store.endorsements_for("k2", ["d1"]) == []
    assert await store.endorsements_for("k1", []) == []


async def test_delete_structure_removes_its_endorsements_only(store: StructureKeyStore) -> None:
    await store.create_key(_key("st", "k1"))
    await store.create_key(_key("st2", "k2"))
    await store.add_endorsement(_endorsement("k1", "d1"))
    await store.add_endorsement(_endorsement("k2", "d1", structure="st2"))
    assert await store.delete_structure("st") == 2
    assert await store.endorsements_for("k1", ["d1"]) == []
    assert await store.count_endorsements("k2") == 1


async def test_remove_endorsements_of_one_device(store: StructureKeyStore) -> None:
    await store.create_key(_key("st", "k1"))
    await store.create_key(_key("st2", "k2"))
    assert await store.add_endorsement(_endorsement("k1", "d1"))
    assert await store.add_endorsement(_endorsement("k1", "d2"))
    assert await store.add_endorsement(_endorsement("k2", "d1", structure="st2"))
    assert await store.remove_endorsements("d1") == 2
    assert [e.device_id for e in await store.endorsements_for("k1", ["d1", "d2"])] == ["d2"]
    assert await store.count_endorsements("k2") == 0
    assert await store.remove_endorsements("d1") == 0
    # The device may endorse again (a device id is never reused, but the slot is free).
    assert await store.add_endorsement(_endorsement("k1", "d1"))
