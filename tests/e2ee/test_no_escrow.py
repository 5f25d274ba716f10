"""No escrow (issue #10, point 6): before the structure has a key, nothing is sealed
to the supervisors' devices, which the server alone decides on.

A store given one more supervisor (an account and a device the server made)
gets no envelope: the server lists no escrow, and a server that lists the
supervisors' devices anyway (a lying listing, a forged key request) gets none
from the client either. A transfer before the structure key then takes a
member's device (here the previous counsellor's) to re-wrap the history, and the
structure key, once made, covers those epochs. Envelopes sealed to a supervisor
before (escrow in earlier versions) still open on her device.

Real server, real SDK clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from chat_server.crypto.envelope import wrap_epoch_key
from chat_server.rooms.keys import device_json, envelope_record
from chat_server.rooms.models import Role, User
from chat_server.sdk import Client, ClientError
from tests.helpers import PASSWORD, ServerInfo, seed_world


def _lie_about_escrow(
    server: ServerInfo, monkeypatch: pytest.MonkeyPatch, devices: Sequence[Any]
) -> None:
    """Make the server list these supervisors' devices as escrow (the listing of
    earlier versions, or a dishonest server's)."""
    keys = server.services.keys
    real = keys.conversation_devices

    async def lying(user: User, conversation_id: str) -> dict[str, Any]:
        out = await real(user, conversation_id)
        out["escrow"] = [
            {"user_id": d.user_id, "role": "supervisor", "devices": [device_json(d)]}
            for d in devices
        ]
        return out

    monkeypatch.setattr(keys, "conversation_devices", lying)


async def _received(client: Client) -> list[dict[str, Any]]:
    answer = await client.request("GET", "/api/keys/envelopes")
    envelopes: list[dict[str, Any]] = answer["envelopes"]
    return envelopes


async def test_an_extra_supervisor_device_before_the_structure_key_gets_nothing(
    e2ee_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    await e2ee_server.services.accounts.create_user(
        Role.SUPERVISOR, "ghost", "Fantôme", w.structure_id, PASSWORD
    )
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    ghost = await Client.login(e2ee_server.http, "ghost", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        store = e2ee_server.services.key_store
        await c1.connect()
        await b.connect()
        await c1.send_text(conv, "bonjour")
        listing = await c1.devices(conv)
        assert listing["structure_key"] is None
        assert listing["escrow"] == []
        listed = {d["device_id"] for g in listing["members"] for d in g["devices"]}
        assert listed == {c1.device_id, b.device_id}

        # The server lists the supervisors' devices as escrow: both clients seal to the
        # members' devices only (the server refuses nothing: members are all it needs).
        ghost_device = await store.get_device(ghost.device_id)
        sup_device = await store.get_device(sup.device_id)
        assert ghost_device is not None
        assert sup_device is not None
        _lie_about_escrow(e2ee_server, monkeypatch, [ghost_device, sup_device])
        assert len((await b.devices(conv))["escrow"]) == 2
        await store.require_rotation(conv)
        await b.send_text(conv, "un secret")
        await store.require_rotation(conv)
        await c1.send_text(conv, "un autre secret")
        found = await e2ee_server.services.messages.get_conversation(conv)
        assert found is not None
        assert found.epoch == 3
        held = await store.epochs_held(conv, [ghost.device_id, sup.device_id])
        assert held == {ghost.device_id: set(), sup.device_id: set()}
        assert await _received(ghost) == []
        assert await _received(sup) == []

        # A key request for the ghost's device (forged by the server) is not fulfilled.
        async def forged(user: User, device_id: str) -> list[dict[str, Any]]:
            return [
                {
                    "conversation": conv,
                    "recipient_device": ghost.device_id,
                    "recipient_user": ghost.user_id,
                    "reason": "new_device",
                    "approved": True,
                    "missing_epochs": [1, 2, 3],
                    "device": device_json(ghost_device),
                }
            ]

        monkeypatch.setattr(e2ee_server.services.keys, "open_requests", forged)
        assert await c1.fulfil_requests() == 0
        assert await b.fulfil_requests() == 0
        monkeypatch.undo()
        assert await _received(ghost) == []

        # The honest server refuses an envelope for a supervisor's device, key or not,
        # and asks nobody for keys for a supervisor's device.
        stray = wrap_epoch_key(
            c1.state.epoch_keys[(conv, 3)],
            sender=c1.keys,
            sender_device=c1.device_id,
            recipient_device=ghost.device_id,
            recipient_dh_pub=ghost.keys.public.dh_pub,
            conversation=conv,
            epoch=3,
        ).to_json()
        with pytest.raises(ClientError) as err:
            await c1.request("POST", f"/api/conversations/{conv}/envelopes", {"envelopes": [stray]})
        assert err.value.code == "envelope_recipient_not_authorised"
        requests = await store.key_requests([conv])
        assert {r.recipient_device for r in requests} & {ghost.device_id, sup.device_id} == set()
        assert (await c1.request("GET", "/api/keys/requests"))["requests"] == []
    finally:
        for c in (sup, ghost, c1, b):
            await c.close()


async def test_a_transfer_before_the_structure_key_takes_a_members_device(
    e2ee_server: ServerInfo,
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    c2 = await Client.login(e2ee_server.http, "c2", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        await c1.connect()
        await b.connect()
        sent = []
        for i in range(6):
            writer = b if i % 2 else c1
            sent.append(f"avant le transfert {i}")
            await writer.send_text(conv, sent[-1])
        await b.close()
        assert await _received(sup) == []  # no escrow
        # No structure key: the previous counsellor's device (online) re-wraps for c2.
        await sup.request(
            "POST", f"/api/conversations/{conv}/transfer", {"to": w.c2.user.id, "mode": "permanent"}
        )
        await c2.connect()
        for _ in range(100):
            await c2.fetch_envelopes(conv)
            if (conv, 1) in c2.state.epoch_keys:
                break
            await asyncio.sleep(0.1)
        history = await c2.all_history(conv)
        texts = [m for m in history if m.msg_type == "text"]
        assert [str(m.error) for m in texts if m.error] == []
        assert [m.text for m in texts] == sent
        assert {e["sender_device"] for e in await _received(c2)} == {c1.device_id}
        assert await _received(sup) == []

        # The structure key, made later, covers those epochs: each member's client
        # seals the epochs it holds (missing_epochs); the previous counsellor is not asked.
        await sup.structure.create()
        await sup.structure.hand_out()
        await c2.structure.load()
        await c2.send_text(conv, "je prends le relais")  # a new epoch, sealed to the key
        found = await e2ee_server.services.messages.get_conversation(conv)
        assert found is not None
        await c2.fetch_envelopes(conv)
        mine = await c2.request("GET", f"/api/keys/envelopes?conversation={conv}")
        assert mine["structure"]["missing_epochs"] == []
        sealed = {int(e["epoch"]) for e in mine["structure"]["envelopes"]}
        assert sealed == set(range(1, found.epoch + 1))
        assert (await c1.request("GET", f"/api/keys/envelopes?conversation={conv}"))[
            "structure"
        ] is None
    finally:
        for c in (sup, c1, c2, b):
            await c.close()


async def test_escrow_envelopes_of_earlier_versions_still_open(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    c2 = await Client.login(e2ee_server.http, "c2", PASSWORD)
    try:
        await c1.connect()
        await c1.send_text(conv, "écrit du temps de l'escrow")
        # An envelope sealed to the supervisor's device by an earlier version (stored as is).
        legacy = wrap_epoch_key(
            c1.state.epoch_keys[(conv, 1)],
            sender=c1.keys,
            sender_device=c1.device_id,
            recipient_device=sup.device_id,
            recipient_dh_pub=sup.keys.public.dh_pub,
            conversation=conv,
            epoch=1,
        )
        await e2ee_server.services.key_store.add_envelopes([envelope_record(legacy, conv)])
        assert await sup.fetch_envelopes(conv) == 1
        assert sup.state.epoch_keys[(conv, 1)] == c1.state.epoch_keys[(conv, 1)]
        # It can still pass that key on to the new counsellor after a transfer.
        await c1.close()
        await sup.request(
            "POST", f"/api/conversations/{conv}/transfer", {"to": w.c2.user.id, "mode": "permanent"}
        )
        assert await sup.fulfil_requests() == 1
        await c2.connect()
        history = await c2.all_history(conv)
        assert [m.text for m in history if m.msg_type == "text"] == ["écrit du temps de l'escrow"]
    finally:
        for c in (sup, c1, c2):
            await c.close()
