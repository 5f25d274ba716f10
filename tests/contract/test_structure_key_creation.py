"""Creating the structure key writes the key and its creator's grant safely, on every
adapter (the embedded engine, a real MongoDB when ``CHAT_TEST_MONGODB_URL`` is set,
memory): ``StructureKeyService.create`` over the adapter's real stores.

The grant is written first: a store fault before the key is stored leaves no key (and a
retry makes one, with its grant); of two concurrent creations one key is stored with its
creator's grant, and the loser's grant is removed again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chat_server.broker.local import LocalBroker
from chat_server.crypto.encoding import b64encode
from chat_server.crypto.keys import DeviceKeys
from chat_server.crypto.structure_key import sign_structure_key, structure_key_id, wrap_grant
from chat_server.hub import Hub
from chat_server.rooms.models import Device, Role, Structure, User
from chat_server.rooms.structure_keys import StructureKeyExists, StructureKeyService
from chat_server.storage.base import StoreUnavailable
from chat_server.storage.structure_keys import StructureKeyStore
from tests.contract.test_store_contract import ADAPTERS, _open

STRUCTURE = "st-1"


@dataclass
class World:
    service: StructureKeyService
    store: StructureKeyStore
    sups: list[tuple[User, str, DeviceKeys]]


@pytest.fixture(params=ADAPTERS)
async def world(request: pytest.FixtureRequest, embedded_mongo_url: str) -> AsyncIterator[World]:
    s = await _open(request.param, embedded_mongo_url)
    db = cast(Any, s.db)
    try:
        accounts, keys, store = db.accounts(), db.keys(), db.structure_keys()
        await accounts.add_structure(Structure(STRUCTURE, "ML", "mission_locale", ("CEJ",)))
        sups = []
        for i in (1, 2):
            user = User(f"sup{i}", Role.SUPERVISOR, f"sup{i}", f"Sup {i}", STRUCTURE)
            await accounts.add_user(user)
            device_keys = DeviceKeys.generate()
            pub = device_keys.public
            await keys.add_device(
                Device(f"dev-sup{i}", user.id, pub.dh_pub, pub.sig_pub, b"r" * 64, 1.0)
            )
            sups.append((user, f"dev-sup{i}", device_keys))
        service = StructureKeyService(store, keys, accounts, Hub(LocalBroker()), time.time)
        yield World(service, store, sups)
    finally:
        await s.db.close()


def _creation(device: str, keys: DeviceKeys) -> tuple[str, dict[str, Any]]:
    """A new key made by this device: its id, and the fields of ``create``."""
    private = X25519PrivateKey.generate()
    pub = private.public_key().public_bytes_raw()
    grant = wrap_grant(
        private,
        structure=STRUCTURE,
        sender=keys,
        sender_device=device,
        recipient_device=device,
        recipient_dh_pub=keys.public.dh_pub,
    )
    fields = {
        "public_key": b64encode(pub),
        "sig": b64encode(sign_structure_key(keys, STRUCTURE, pub, device)),
        "grant": grant.to_json(),
    }
    return structure_key_id(pub), fields


@pytest.mark.parametrize("failing", ["add_grants", "create_key"])
async def test_a_store_fault_during_creation_never_leaves_a_key_without_its_grant(
    world: World, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    user, device, keys = world.sups[0]
    key_id, fields = _creation(device, keys)

    async def fault(*args: Any) -> None:
        raise StoreUnavailable(f"injected: {failing} failed")

    # Either write fails (a fault between the two is the second one failing): no key
    # is left without its creator's grant; here, no key at all.
    monkeypatch.setattr(world.store, failing, fault)
    with pytest.raises(StoreUnavailable):
        await world.service.create(user, device, **fields)
    monkeypatch.undo()
    assert await world.store.current_key(STRUCTURE) is None
    # What is left is a grant of a key id no structure has: nobody is served it.
    view = await world.service.view(user, device)
    assert view["key"] is None
    assert view["grant"] is None

    retry_id, retry = _creation(device, keys)
    key = await world.service.create(user, device, **retry)
    assert key.key_id == retry_id != key_id
    stored = await world.store.current_key(STRUCTURE)
    assert stored is not None
    assert stored.key_id == retry_id
    assert await world.service.holds(stored, device)
    view = await world.service.view(user, device)
    assert view["grant"]["key_id"] == retry_id


async def test_two_concurrent_creations_leave_one_key_with_its_grant_and_no_orphan(
    world: World,
) -> None:
    made = [(user, device, *_creation(device, keys)) for user, device, keys in world.sups]
    results = await asyncio.gather(
        *(world.service.create(user, device, **fields) for user, device, _, fields in made),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert [type(r) for r in results if isinstance(r, BaseException)] == [StructureKeyExists]
    stored = await world.store.current_key(STRUCTURE)
    assert stored is not None
    assert stored.key_id == winners[0].key_id
    for _, device, key_id, _ in made:
        grants = await world.store.grants_for(key_id, [device])
        if key_id == stored.key_id:
            assert [g.recipient_device for g in grants] == [device]
        else:
            assert grants == []  # the loser's grant was removed
    assert await world.service.holds(stored, stored.creator_device)


async def test_a_retried_creation_of_the_stored_key_keeps_its_grant(world: World) -> None:
    # The first call stored key and grant but its answer was lost; the same call again
    # is told the key exists, and must not remove the grant of the stored key.
    user, device, keys = world.sups[0]
    key_id, fields = _creation(device, keys)
    await world.service.create(user, device, **fields)
    with pytest.raises(StructureKeyExists):
        await world.service.create(user, device, **fields)
    stored = await world.store.current_key(STRUCTURE)
    assert stored is not None
    assert stored.key_id == key_id
    assert await world.service.holds(stored, device)


async def test_remove_grant_removes_that_grant_only(world: World) -> None:
    _, device, keys = world.sups[0]
    key_id, fields = _creation(device, keys)
    user = world.sups[0][0]
    await world.service.create(user, device, **fields)
    other_device = world.sups[1][1]
    assert await world.store.remove_grant("no-such-key", device) is False
    assert await world.store.remove_grant(key_id, other_device) is False
    assert len(await world.store.grants_for(key_id, [device])) == 1
    assert await world.store.remove_grant(key_id, device) is True
    assert await world.store.grants_for(key_id, [device]) == []
