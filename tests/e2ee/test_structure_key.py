"""The structure key (issue #10, point 2): a transfer's history with nobody else online.

Real server, real SDK clients. The previous counsellor and the beneficiary
close their clients before the transfer; the new counsellor reads every
message from the structure envelopes, with the key a supervisor's device handed
to its device. Plus the refusals of the structure-key API and epochs.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chat_server.crypto.commitment import epoch_commitment, sign_commitment
from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.envelope import generate_epoch_key, wrap_epoch_key
from chat_server.crypto.keys import DeviceKeys
from chat_server.crypto.structure_key import (
    sign_structure_key,
    structure_key_id,
    structure_recipient,
    wrap_grant,
)
from chat_server.rooms.models import Role
from chat_server.sdk import Client, ClientError
from tests.helpers import PASSWORD, ServerInfo, seed_world

N = 30


async def _history_texts(client: Client, conv: str) -> tuple[list[str], list[str]]:
    if client.ws is None:
        await client.connect()
    history = await client.all_history(conv)
    texts = [m for m in history if m.msg_type == "text"]
    return [m.text or "" for m in texts], [str(m.error) for m in texts if m.error]


async def _endorse_as(server: ServerInfo, login: str) -> str:
    """A staff member's device (a new one) pins and endorses the structure key, as the
    console does at login; its device id."""
    staff = await Client.login(server.http, login, PASSWORD)
    try:
        await staff.structure.load()
        assert staff.structure.endorsed
        return staff.device_id
    finally:
        await staff.close()


async def test_new_counsellor_reads_all_with_previous_and_beneficiary_offline(
    e2ee_server: ServerInfo,
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c2 = await Client.login(e2ee_server.http, "c2", PASSWORD)
    try:
        key_id = await sup.structure.create()
        assert await sup.structure.hand_out() >= 1  # c2's device (and the others waiting)
        c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
        b = await Client.login(e2ee_server.http, "b1", PASSWORD)
        await b.connect()
        await c1.connect()
        sent = []
        for i in range(N):
            writer = b if i % 2 else c1
            text = f"message {i} de {'la jeune' if i % 2 else 'Claire'}"
            await writer.send_text(conv, text)
            sent.append(text)
        # Every epoch has its structure envelope.
        listing = await c1.devices(conv)
        assert listing["structure_key"]["key_id"] == key_id
        b_state = b.to_state()
        await c1.close()
        await b.close()

        await sup.request(
            "POST", f"/api/conversations/{conv}/transfer", {"to": w.c2.user.id, "mode": "permanent"}
        )
        texts, errors = await _history_texts(c2, conv)
        assert errors == []
        assert texts == sent
        # Its own device holds no envelope of those epochs: the structure key opened them.
        own = await c2.request("GET", f"/api/keys/envelopes?conversation={conv}")
        assert own["envelopes"] == []
        assert len(own["structure"]["envelopes"]) >= 1
        assert all(
            e["recipient_device"] == structure_recipient(key_id)
            for e in own["structure"]["envelopes"]
        )
        # The new counsellor writes; the beneficiary comes back and reads it.
        await c2.send_text(conv, "bonjour, je prends le relais")
        b2 = Client.from_state(b_state)
        try:
            texts, errors = await _history_texts(b2, conv)
        finally:
            await b2.close()
        assert errors == []
        assert texts[-1] == "bonjour, je prends le relais"
    finally:
        await sup.close()
        await c2.close()


async def test_temporary_transfer_and_take_back_with_nobody_else_online(
    e2ee_server: ServerInfo,
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    c2 = await Client.login(e2ee_server.http, "c2", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        await sup.structure.create()
        assert await sup.structure.hand_out() >= 2
        await c1.structure.load()  # pins and endorses the key, as the console does at login
        await b.connect()
        await b.send_text(conv, "avant le remplacement")
        await b.close()
        until = time.time() + 86_400
        await sup.request(
            "POST",
            f"/api/conversations/{conv}/transfer",
            {"to": w.c2.user.id, "mode": "temporary", "until": until},
        )
        await c2.connect()
        await c2.send_text(conv, "pendant le remplacement")
        texts, errors = await _history_texts(c2, conv)
        assert (texts, errors) == (["avant le remplacement", "pendant le remplacement"], [])
        await c2.close()
        await sup.request("POST", f"/api/conversations/{conv}/transfer", {"mode": "take_back"})
        # Karim-like c1 never got the replacement's epoch: the structure key opens it.
        texts, errors = await _history_texts(c1, conv)
        assert (texts, errors) == (["avant le remplacement", "pendant le remplacement"], [])
    finally:
        for c in (sup, c1, c2, b):
            await c.close()


async def test_structure_key_api_refusals(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    osup = await Client.login(e2ee_server.http, "osup", PASSWORD)
    try:
        # A counsellor does not create it; a beneficiary does not even see it.
        with pytest.raises(ClientError) as err:
            await c1.structure.create()
        assert (err.value.status, err.value.code) == (403, "forbidden")
        with pytest.raises(ClientError) as err:
            await b.request("GET", "/api/structure-key")
        assert (err.value.status, err.value.code) == (403, "forbidden")
        # A key signed by nobody (another device's signature) is refused.
        priv = X25519PrivateKey.generate()
        pub = priv.public_key().public_bytes_raw()
        structure = str(sup.user["structure_id"])
        grant = wrap_grant(
            priv,
            structure=structure,
            sender=sup.keys,
            sender_device=sup.device_id,
            recipient_device=sup.device_id,
            recipient_dh_pub=sup.keys.public.dh_pub,
        ).to_json()
        bad = sign_structure_key(DeviceKeys.generate(), structure, pub, sup.device_id)
        with pytest.raises(ClientError) as err:
            await sup.request(
                "POST",
                "/api/structure-key",
                {"public_key": b64encode(pub), "sig": b64encode(bad), "grant": grant},
            )
        assert (err.value.status, err.value.code) == (422, "bad_structure_key_signature")
        with pytest.raises(ClientError) as err:
            await sup.request("POST", "/api/structure-key", {"public_key": "x"})
        assert err.value.status == 400
        assert (await sup.request("GET", "/api/structure-key"))["key"] is None

        key_id = await sup.structure.create()
        with pytest.raises(ClientError) as err:
            await sup.structure.create()
        assert (err.value.status, err.value.code) == (409, "structure_key_exists")
        # Another structure's supervisor sees none of it.
        assert (await osup.request("GET", "/api/structure-key"))["key"] is None

        # A grant to a beneficiary's device is refused; a counsellor hands nothing on.
        assert sup.structure.private is not None
        to_b = wrap_grant(
            sup.structure.private,
            structure=structure,
            sender=sup.keys,
            sender_device=sup.device_id,
            recipient_device=b.device_id,
            recipient_dh_pub=b.keys.public.dh_pub,
        ).to_json()
        with pytest.raises(ClientError) as err:
            await sup.request("POST", "/api/structure-key/grants", {"grants": [to_b]})
        assert (err.value.status, err.value.code) == (422, "grant_recipient_not_staff")
        # 300 grants (over 64 KiB of JSON) are read and checked, not refused by size.
        with pytest.raises(ClientError) as err:
            await sup.request("POST", "/api/structure-key/grants", {"grants": [to_b] * 300})
        assert (err.value.status, err.value.code) == (422, "grant_recipient_not_staff")
        with pytest.raises(ClientError) as err:
            await c1.request("POST", "/api/structure-key/grants", {"grants": []})
        assert (err.value.status, err.value.code) == (403, "forbidden")
        view = await sup.request("GET", "/api/structure-key")
        assert c1.device_id in {d["device_id"] for d in view["waiting"]}
        assert (await c1.request("GET", "/api/structure-key"))["grant"] is None

        # An epoch without its structure envelope is refused.
        listing = await c1.devices(conv)
        assert listing["structure_key"]["key_id"] == key_id
        raw = generate_epoch_key()
        envelopes = [
            wrap_epoch_key(
                raw,
                sender=c1.keys,
                sender_device=c1.device_id,
                recipient_device=d["device_id"],
                recipient_dh_pub=b64decode(d["dh_pub"]),
                conversation=conv,
                epoch=1,
            ).to_json()
            for group in (*listing["members"], *listing["escrow"])
            for d in group["devices"]
        ]
        commitment = epoch_commitment(raw, conv, 1)
        signed = sign_commitment(c1.keys, conv, 1, c1.device_id, commitment)
        body = {
            "epoch": 1,
            "envelopes": envelopes,
            "commitment": b64encode(commitment),
            "commitment_sig": b64encode(signed),
        }
        with pytest.raises(ClientError) as err:
            await c1.request("POST", f"/api/conversations/{conv}/epochs", body)
        assert (err.value.status, err.value.code) == (422, "envelope_missing_recipient")
        assert structure_recipient(key_id) in err.value.message
        epoch, _ = await c1.ensure_epoch(conv)
        assert epoch == 1
        # Structure envelopes go to members holding the key only.
        assert (await c1.request("GET", f"/api/keys/envelopes?conversation={conv}"))[
            "structure"
        ]["envelopes"] == []
        await sup.structure.hand_out()
        mine = await c1.request("GET", f"/api/keys/envelopes?conversation={conv}")
        assert [e["epoch"] for e in mine["structure"]["envelopes"]] == [1]
        other = await osup.request("GET", f"/api/keys/envelopes?conversation={conv}")
        assert other.get("structure") is None
    finally:
        for c in (sup, c1, b, osup):
            await c.close()


async def test_a_replaced_structure_key_is_never_wrapped_for(e2ee_server: ServerInfo) -> None:
    """The ghost reader: the store's structure key swapped for one the server holds.

    The client checks the key's signature against the registered device that
    claims to have made it, refuses to seal an epoch to it, and so sends nothing.
    """
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        await sup.structure.create()
        store = e2ee_server.services.database.structure_keys()
        real = await store.current_key(str(sup.user["structure_id"]))
        assert real is not None
        ghost = X25519PrivateKey.generate().public_key().public_bytes_raw()
        await store.delete_structure(real.structure_id)
        await store.create_key(
            replace(real, key_id=structure_key_id(ghost), public_key=ghost)
        )
        with pytest.raises(ClientError) as err:
            await b.ensure_epoch(conv)
        assert err.value.code == "structure_key_unverified"
        found = await e2ee_server.services.messages.get_conversation(conv)
        assert found is not None
        assert found.epoch == 0
    finally:
        await sup.close()
        await b.close()


async def test_a_structure_key_changed_after_first_use_is_never_wrapped_for(
    e2ee_server: ServerInfo,
) -> None:
    """The ghost reader, better dressed: the server swaps the key for one that a supervisor
    device it registered really signed. The client pinned the first key it sealed to and
    refuses the new one (``structure_key_changed``)."""
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    ghost = await Client.login(e2ee_server.http, "sup", PASSWORD)  # a device the server adds
    try:
        first = await sup.structure.create()
        await _endorse_as(e2ee_server, "c1")
        epoch, _ = await b.ensure_epoch(conv)
        assert b.state.structure_pins == {str(sup.user["structure_id"]): first}
        store = e2ee_server.services.database.structure_keys()
        await store.delete_structure(str(sup.user["structure_id"]))
        second = await ghost.structure.create()
        assert second != first
        await e2ee_server.services.key_store.require_rotation(conv)
        with pytest.raises(ClientError) as err:
            await b.ensure_epoch(conv)
        assert err.value.code == "structure_key_changed"
        found = await e2ee_server.services.messages.get_conversation(conv)
        assert found is not None
        assert found.epoch == epoch
        # The pin survives a restart of the client (to_state / from_state).
        again = Client.from_state(b.to_state())
        try:
            with pytest.raises(ClientError) as err:
                await again.ensure_epoch(conv)
            assert err.value.code == "structure_key_changed"
        finally:
            await again.close()
    finally:
        for c in (sup, b, ghost):
            await c.close()


async def test_the_safety_number_covers_the_structure_key(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        before = await b.safety_number(conv)
        assert before == await c1.safety_number(conv)
        await sup.structure.create()
        after = await b.safety_number(conv)
        assert after == await c1.safety_number(conv)
        assert after != before
    finally:
        for c in (sup, c1, b):
            await c.close()


async def test_an_extra_supervisor_device_gets_nothing_once_the_structure_has_a_key(
    e2ee_server: ServerInfo,
) -> None:
    """The ghost reader of issue #10 point 6: the store is given one more supervisor (an
    account and a device the server made). With a structure key, supervisors' devices are
    no escrow: no epoch is sealed to it, an envelope for it is refused, and it gets the
    structure key only if a supervisor approves it."""
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    try:
        await sup.structure.create()
        await e2ee_server.services.accounts.create_user(
            Role.SUPERVISOR, "ghost", "Fantôme", w.structure_id, PASSWORD
        )
        ghost = await Client.login(e2ee_server.http, "ghost", PASSWORD)
        try:
            listing = await c1.devices(conv)
            assert listing["escrow"] == []
            listed = {d["device_id"] for g in listing["members"] for d in g["devices"]}
            assert ghost.device_id not in listed
            epoch, key = await c1.ensure_epoch(conv)
            assert (await ghost.request("GET", "/api/keys/envelopes"))["envelopes"] == []
            stray = wrap_epoch_key(
                key,
                sender=c1.keys,
                sender_device=c1.device_id,
                recipient_device=ghost.device_id,
                recipient_dh_pub=ghost.keys.public.dh_pub,
                conversation=conv,
                epoch=epoch,
            ).to_json()
            with pytest.raises(ClientError) as err:
                await c1.request(
                    "POST", f"/api/conversations/{conv}/envelopes", {"envelopes": [stray]}
                )
            assert err.value.code == "envelope_recipient_not_authorised"
            # It waits for the key; only the real supervisor's decision would hand it over.
            assert (await ghost.request("GET", "/api/structure-key"))["grant"] is None
            waiting = (await sup.request("GET", "/api/structure-key"))["waiting"]
            assert ghost.device_id in {d["device_id"] for d in waiting}
        finally:
            await ghost.close()
    finally:
        await sup.close()
        await c1.close()


async def test_the_activation_box_pins_the_structure_key(e2ee_server: ServerInfo) -> None:
    """The young person's first pin is not blind: the counsellor's device puts the id of
    the structure key it sealed to in the activation box (which only the code opens), so
    a key the server swapped in before the phone ever saw one is refused."""
    w = await seed_world(e2ee_server)
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    ghost = await Client.login(e2ee_server.http, "sup", PASSWORD)
    try:
        first = await sup.structure.create()
        code, conv = await c.create_beneficiary("lina.pin", "Lina Pin")
        store = e2ee_server.services.database.structure_keys()
        await store.delete_structure(w.structure_id)
        assert await ghost.structure.create() != first
        phone = await Client.activate(e2ee_server.http, code, PASSWORD)
        try:
            assert await phone.open_activation_box(conv) == 1
            assert phone.state.structure_pins == {w.structure_id: first}
            await e2ee_server.services.key_store.require_rotation(conv)
            with pytest.raises(ClientError) as err:
                await phone.ensure_epoch(conv)
            assert err.value.code == "structure_key_changed"
        finally:
            await phone.close()
    finally:
        for client in (sup, c, ghost):
            await client.close()


async def test_a_key_naming_another_structure_is_no_way_around_the_pin(
    e2ee_server: ServerInfo,
) -> None:
    """The pin is per structure: a key the server says is another structure's, signed by
    a device it registered, must not be a fresh first use."""
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    ghost = await Client.login(e2ee_server.http, "sup", PASSWORD)  # a device the server adds
    try:
        await sup.structure.create()
        await _endorse_as(e2ee_server, "c1")
        await b.ensure_epoch(conv)
        pub = X25519PrivateKey.generate().public_key().public_bytes_raw()
        forged = {
            "structure": str(sup.user["structure_id"]) + "x",
            "key_id": structure_key_id(pub),
            "public_key": b64encode(pub),
            "creator_device": ghost.device_id,
            "creator_user": ghost.user_id,
            "sig": b64encode(
                sign_structure_key(
                    ghost.keys, str(sup.user["structure_id"]) + "x", pub, ghost.device_id
                )
            ),
        }
        with pytest.raises(ClientError) as err:
            await b.structure.verified_public(forged)
        assert err.value.code == "structure_key_changed"
        assert len(b.state.structure_pins) == 1
    finally:
        for c in (sup, b, ghost):
            await c.close()


async def test_a_listing_without_the_pinned_structure_key_is_refused(
    e2ee_server: ServerInfo,
) -> None:
    """The downgrade: after a client pinned the structure key, the server lists none (the
    history would no longer follow a transfer). The client seals nothing."""
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        await sup.structure.create()
        await _endorse_as(e2ee_server, "c1")
        epoch, _ = await b.ensure_epoch(conv)
        store = e2ee_server.services.database.structure_keys()
        await store.delete_structure(str(sup.user["structure_id"]))
        await e2ee_server.services.key_store.require_rotation(conv)
        listing = await b.devices(conv)
        assert listing["structure_key"] is None
        assert listing["escrow"] == []  # no escrow either (issue #10 point 6)
        with pytest.raises(ClientError) as err:
            await b.ensure_epoch(conv)
        assert err.value.code == "structure_key_missing"
        found = await e2ee_server.services.messages.get_conversation(conv)
        assert found is not None
        assert found.epoch == epoch
    finally:
        await sup.close()
        await b.close()
