"""Structure key endorsements (issue #10, point 6): the server cannot add a reader
to a young person's first pin.

Real server, real SDK clients. A counsellor's or supervisor's device signs the
structure key it pinned (``POST /api/structure-key/endorsements``); a young
person's client pins a key for the first time only if a device of her
counsellor (the other member, whose devices the safety number covers) endorsed
it. The dishonest store swaps in a key signed by a "supervisor" device it
registered, before the young person's client ever saw a key: refused
(``structure_key_unendorsed``), no epoch; forged endorsements do not help it;
with the real key, endorsed by the counsellor's device, the same flow works.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chat_server.crypto import sign_registration
from chat_server.crypto.encoding import b64encode
from chat_server.crypto.keys import DeviceKeys
from chat_server.crypto.structure_key import (
    sign_endorsement,
    sign_structure_key,
    structure_key_id,
)
from chat_server.rooms.structure_keys import MAX_ENDORSEMENTS
from chat_server.sdk import Client, ClientError
from chat_server.storage.structure_keys import EndorsementRecord, StructureKey
from tests.helpers import PASSWORD, ServerInfo, seed_world

PATH = "/api/structure-key/endorsements"


def _body(client: Client, structure: str, pub: bytes, **changes: Any) -> dict[str, Any]:
    body = {
        "structure": structure,
        "key_id": structure_key_id(pub),
        "device_id": client.device_id,
        "sig": b64encode(sign_endorsement(client.keys, structure, pub, client.device_id)),
    }
    return {**body, **changes}


async def _conversation_epoch(server: ServerInfo, conv: str) -> int:
    found = await server.services.messages.get_conversation(conv)
    assert found is not None
    return found.epoch


async def test_a_ghost_key_not_endorsed_by_the_counsellor_is_never_first_pinned(
    e2ee_server: ServerInfo,
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    ghost = await Client.login(e2ee_server.http, "sup", PASSWORD)  # a device the server adds
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        real_id = await sup.structure.create()
        await c1.structure.load()  # Claire's console pins and endorses the key at login
        store = e2ee_server.services.database.structure_keys()
        real = await store.current_key(w.structure_id)
        assert real is not None
        endorsed = await store.endorsements_for(real_id, [c1.device_id, sup.device_id])
        assert [e.device_id for e in endorsed] == [c1.device_id]  # sup pinned nothing yet

        # The dishonest store: a key it holds, really signed by the ghost "supervisor"
        # device, swapped in before the young person's client ever saw a key.
        ghost_pub = X25519PrivateKey.generate().public_key().public_bytes_raw()
        ghost_id = structure_key_id(ghost_pub)
        await store.delete_structure(w.structure_id)
        await store.create_key(
            StructureKey(
                w.structure_id,
                ghost_id,
                ghost_pub,
                ghost.device_id,
                ghost.user_id,
                sign_structure_key(ghost.keys, w.structure_id, ghost_pub, ghost.device_id),
                time.time(),
            )
        )
        with pytest.raises(ClientError) as err:
            await b.ensure_epoch(conv)
        assert err.value.code == "structure_key_unendorsed"
        assert await _conversation_epoch(e2ee_server, conv) == 0
        assert b.state.structure_pins == {}

        # A forged endorsement in Claire's name (signed by another key) is no endorsement.
        forged = sign_endorsement(DeviceKeys.generate(), w.structure_id, ghost_pub, c1.device_id)
        assert await store.add_endorsement(
            EndorsementRecord(w.structure_id, ghost_id, c1.device_id, c1.user_id, forged, 1.0)
        )
        listing = await b.devices(conv)
        assert [e["device_id"] for e in listing["structure_key"]["endorsements"]] == [c1.device_id]
        with pytest.raises(ClientError) as err:
            await b.ensure_epoch(conv)
        assert err.value.code == "structure_key_unendorsed"
        # Nor is one that really verifies, by a device that is not the counsellor's (the
        # ghost device itself, listed by the server with the key).
        by_ghost = {
            "device_id": ghost.device_id,
            "user_id": ghost.user_id,
            "sig": b64encode(
                sign_endorsement(ghost.keys, w.structure_id, ghost_pub, ghost.device_id)
            ),
        }
        key = {**listing["structure_key"], "endorsements": [by_ghost]}
        with pytest.raises(ClientError) as err:
            await b.structure.verified_public(key, conv)
        assert err.value.code == "structure_key_unendorsed"
        # Nor Claire's real endorsement of the real key, moved onto the ghost key.
        moved = {
            "device_id": endorsed[0].device_id,
            "user_id": endorsed[0].user_id,
            "sig": b64encode(endorsed[0].sig),
        }
        key = {**listing["structure_key"], "endorsements": [moved]}
        with pytest.raises(ClientError) as err:
            await b.structure.verified_public(key, conv)
        assert err.value.code == "structure_key_unendorsed"
        assert b.state.structure_pins == {}
        assert await _conversation_epoch(e2ee_server, conv) == 0

        # The honest store again: the real key, endorsed by Claire's device. Same flow.
        await store.delete_structure(w.structure_id)
        await store.create_key(real)
        assert await store.add_endorsement(endorsed[0])
        epoch, _ = await b.ensure_epoch(conv)
        assert epoch == 1
        assert b.state.structure_pins == {w.structure_id: real_id}
        await b.connect()
        await b.send_text(conv, "bonjour Claire")
        assert (await c1.fetch_envelopes(conv)) >= 1
    finally:
        for c in (sup, c1, ghost, b):
            await c.close()


async def test_a_staff_device_endorses_once_when_it_pins(e2ee_server: ServerInfo) -> None:
    """The counsellor's device endorses the key when it first seals to it (a new
    beneficiary's first epoch) and again never; the listing then carries it, and a
    young person's client of that counsellor pins the key."""
    w = await seed_world(e2ee_server)
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b2 = await Client.login(e2ee_server.http, "b2", PASSWORD)
    try:
        key_id = await sup.structure.create()
        view = await sup.request("GET", "/api/structure-key")
        assert view["key"]["endorsed"] is False
        await sup.structure.load()
        assert (await sup.request("GET", "/api/structure-key"))["key"]["endorsed"] is True
        # Claire seals b1's first epoch: she pins, and endorses in passing.
        await c1.ensure_epoch(w.conv["b1"])
        assert c1.structure.endorsed == {key_id}
        listing = await c1.devices(w.conv["b2"])
        assert [e["device_id"] for e in listing["structure_key"]["endorsements"]] == [
            c1.device_id
        ]
        # The supervisor is no member of b2's conversation: her endorsement is not listed.
        store = e2ee_server.services.database.structure_keys()
        assert await store.count_endorsements(key_id) == 2
        assert not await c1.structure.endorse(listing["structure_key"], b"")
        epoch, _ = await b2.ensure_epoch(w.conv["b2"])
        assert epoch == 1
        assert b2.state.structure_pins == {w.structure_id: key_id}
        # The answer of the envelopes listing carries them too.
        data = await b2.request("GET", f"/api/keys/envelopes?conversation={w.conv['b2']}")
        assert [e["device_id"] for e in data["structure"]["key"]["endorsements"]] == [
            c1.device_id
        ]
    finally:
        for c in (sup, c1, b2):
            await c.close()


async def test_endorsement_api_refusals_store_nothing(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    c2 = await Client.login(e2ee_server.http, "c2", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    osup = await Client.login(e2ee_server.http, "osup", PASSWORD)
    store = e2ee_server.services.database.structure_keys()
    try:
        key_id = await sup.structure.create()
        key = await store.current_key(w.structure_id)
        assert key is not None
        pub = key.public_key

        async def refused(client: Client, body: dict[str, Any]) -> tuple[int | None, str]:
            with pytest.raises(ClientError) as err:
                await client.request("POST", PATH, body)
            assert await store.count_endorsements(key_id) == 0, "nothing stored on refusal"
            return err.value.status, err.value.code

        # A young person endorses nothing.
        assert await refused(b, _body(b, w.structure_id, pub)) == (403, "forbidden")
        # Another structure's supervisor, naming this structure's key.
        assert await refused(osup, _body(osup, w.structure_id, pub)) == (403, "forbidden")
        # Naming another structure than the caller's.
        other = _body(c1, w.other_structure_id, pub)
        assert await refused(c1, other) == (403, "forbidden")
        # Another device than the session's (a colleague's, or another of her own).
        assert await refused(c1, _body(c2, w.structure_id, pub)) == (422, "bad_endorsement")
        mine = _body(c1, w.structure_id, pub, device_id=c1.device_id + "-other")
        assert await refused(c1, mine) == (422, "bad_endorsement")
        # A signature by another key, or over another key.
        bad = sign_endorsement(DeviceKeys.generate(), w.structure_id, pub, c1.device_id)
        body = _body(c1, w.structure_id, pub, sig=b64encode(bad))
        assert await refused(c1, body) == (422, "bad_endorsement_signature")
        elsewhere = X25519PrivateKey.generate().public_key().public_bytes_raw()
        body = _body(c1, w.structure_id, elsewhere, key_id=key_id)
        assert await refused(c1, body) == (422, "bad_endorsement_signature")
        # A key id that is not the structure's current key.
        assert await refused(c1, _body(c1, w.structure_id, elsewhere)) == (
            422,
            "unknown_structure_key",
        )
        # Malformed input.
        body = _body(c1, w.structure_id, pub, sig="AAAA")
        assert await refused(c1, body) == (422, "invalid_input")
        assert (await refused(c1, {"structure": w.structure_id}))[0] == 400
        # A device not registered for this session.
        bare = await Client.login(e2ee_server.http, "c1", PASSWORD, register=False)
        try:
            assert await refused(bare, _body(bare, w.structure_id, pub)) == (
                422,
                "unknown_device",
            )
        finally:
            await bare.close()

        # Accepted once; a second time adds nothing.
        assert await c1.request("POST", PATH, _body(c1, w.structure_id, pub)) == {"added": 1}
        assert await c1.request("POST", PATH, _body(c1, w.structure_id, pub)) == {"added": 0}
        assert await store.count_endorsements(key_id) == 1
        # Bounded: a key keeps at most MAX_ENDORSEMENTS (the store filled directly).
        for i in range(MAX_ENDORSEMENTS - 1):
            rec = EndorsementRecord(w.structure_id, key_id, f"dev-{i}", "u", b"s" * 64, 1.0)
            assert await store.add_endorsement(rec)
        with pytest.raises(ClientError) as err:
            await c2.request("POST", PATH, _body(c2, w.structure_id, pub))
        assert (err.value.status, err.value.code) == (409, "too_many_endorsements")
        assert await store.count_endorsements(key_id) == MAX_ENDORSEMENTS
        # A refused endorsement does not stop the counsellor's client from sealing.
        epoch, _ = await c2.ensure_epoch(w.conv["b3"])
        assert epoch >= 1
        assert key_id not in c2.structure.endorsed
        # An endorsement already there is still an idempotent success.
        assert await c1.request("POST", PATH, _body(c1, w.structure_id, pub)) == {"added": 0}
        # A removed device's endorsement goes with it: the cap counts devices that exist.
        await c1.request("DELETE", f"/api/devices/{c1.device_id}")
        assert await store.endorsements_for(key_id, [c1.device_id]) == []
        assert await store.count_endorsements(key_id) == MAX_ENDORSEMENTS - 1
        assert await c2.request("POST", PATH, _body(c2, w.structure_id, pub)) == {"added": 1}
    finally:
        for c in (sup, c1, c2, b, osup):
            await c.close()


async def test_after_a_transfer_the_previous_counsellors_endorsement_counts(
    e2ee_server: ServerInfo,
) -> None:
    """A young person who never pinned the key is transferred to a counsellor whose
    devices never saw it: the endorsement by her previous counsellor's device, which her
    client saw listed as her counsellor's, lets her first pin through. A device she never
    saw listed as her counsellor's does not."""
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        await b.ensure_epoch(conv)  # before the structure key: Claire's device listed
        key_id = await sup.structure.create()
        await c1.structure.load()
        until = time.time() + 86_400
        await sup.request(
            "POST",
            f"/api/conversations/{conv}/transfer",
            {"to": w.c2.user.id, "mode": "temporary", "until": until},
        )
        listing = await b.devices(conv)
        listed = {d["device_id"] for g in listing["members"] for d in g["devices"]}
        assert c1.device_id not in listed
        assert [e["device_id"] for e in listing["structure_key"]["endorsements"]] == [
            c1.device_id
        ]
        # A fresh client of hers (state without the devices it saw) refuses the key...
        fresh = Client.from_state({**b.to_state(), "peer_devices": {}})
        try:
            with pytest.raises(ClientError) as err:
                await fresh.ensure_epoch(conv)
            assert err.value.code == "structure_key_unendorsed"
        finally:
            await fresh.close()
        # ...the client that knew Claire's device as her counsellor's takes it.
        epoch, _ = await b.ensure_epoch(conv)
        assert epoch == 2
        assert b.state.structure_pins == {w.structure_id: key_id}
    finally:
        for c in (sup, c1, b):
            await c.close()


async def test_a_removed_counsellor_device_no_longer_vouches_for_a_key(
    e2ee_server: ServerInfo,
) -> None:
    """A young person's client forgets a remembered device of her *current* counsellor
    once the listing no longer shows it (removed: lost or stolen), so a thief holding that
    device's key cannot, with a dishonest server, endorse a ghost key for her first pin.
    A device id also keeps the keys first seen for it."""
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    stolen = await Client.login(e2ee_server.http, "c1", PASSWORD)  # Claire's lost laptop
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        await sup.structure.create()
        await b.devices(conv)
        assert stolen.device_id in b.state.peer_devices[conv]
        ghost_pub = X25519PrivateKey.generate().public_key().public_bytes_raw()
        listing = await b.devices(conv)
        by_stolen = {
            "device_id": stolen.device_id,
            "user_id": stolen.user_id,
            "sig": b64encode(
                sign_endorsement(stolen.keys, w.structure_id, ghost_pub, stolen.device_id)
            ),
        }
        ghost = {
            **listing["structure_key"],
            "key_id": structure_key_id(ghost_pub),
            "public_key": b64encode(ghost_pub),
            "endorsements": [by_stolen],
        }
        # While the laptop is Claire's, its endorsement would count.
        assert b.structure._endorsed_by_peer(ghost, ghost_pub, conv)
        await c1.request("DELETE", f"/api/devices/{stolen.device_id}")
        await b.devices(conv)
        assert stolen.device_id not in b.state.peer_devices[conv]
        assert c1.device_id in b.state.peer_devices[conv]
        assert not b.structure._endorsed_by_peer(ghost, ghost_pub, conv)
        # A listing that names Claire's device with other keys is not believed.
        other = DeviceKeys.generate()
        assert not b._remember(
            {
                "device_id": c1.device_id,
                "user_id": c1.user_id,
                "dh_pub": b64encode(other.public.dh_pub),
                "sig_pub": b64encode(other.public.sig_pub),
                "registration_sig": b64encode(
                    sign_registration(other, c1.user_id, c1.device_id)
                ),
            }
        )
        assert b.state.device_keys[c1.device_id] == (c1.user_id, c1.keys.public.sig_pub)
    finally:
        for c in (sup, c1, stolen, b):
            await c.close()
