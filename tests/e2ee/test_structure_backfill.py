"""Junk structure envelopes never block the backfill (issue #10, points 2 and 4).

Epochs written before the structure key existed are sealed to it later by a
member's client. A hostile member (here the young person) posts a junk
structure envelope for those old epochs first; the counsellor's client is
still asked to seal them (``missing_epochs`` is per user), the new counsellor
after a transfer reads the whole history from the structure envelopes with both
others offline, and reports each junk envelope (an audit record).

Real server, real SDK clients.
"""

from __future__ import annotations

import pytest

from chat_server.crypto.encoding import b64decode
from chat_server.crypto.envelope import generate_epoch_key, wrap_epoch_key
from chat_server.rooms import keys as room_keys
from chat_server.sdk import Client, ClientError
from tests.helpers import PASSWORD, ServerInfo, seed_world


async def _junk(client: Client, conv: str, epochs: list[int]) -> int:
    """Seal a random key (not the epochs' key) to the structure key, as ``client``."""
    found = (await client.request("GET", f"/api/keys/envelopes?conversation={conv}"))["structure"]
    key = found["key"]
    envelopes = [
        wrap_epoch_key(
            generate_epoch_key(),
            sender=client.keys,
            sender_device=client.device_id,
            recipient_device=f"structure:{key['key_id']}",
            recipient_dh_pub=b64decode(key["public_key"]),
            conversation=conv,
            epoch=epoch,
        ).to_json()
        for epoch in epochs
    ]
    answer = await client.request(
        "POST", f"/api/conversations/{conv}/envelopes", {"envelopes": envelopes}
    )
    return int(answer["added"])


async def _missing(client: Client, conv: str) -> list[int]:
    found = (await client.request("GET", f"/api/keys/envelopes?conversation={conv}"))["structure"]
    return [int(e) for e in found["missing_epochs"]]


async def test_a_junk_structure_envelope_first_does_not_block_the_backfill(
    e2ee_server: ServerInfo,
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c2 = await Client.login(e2ee_server.http, "c2", PASSWORD)
    try:
        # Two epochs written before the structure has a key.
        await b.connect()
        await c1.connect()
        sent = []
        for i in range(6):
            writer = b if i % 2 else c1
            text = f"avant la clé {i}"
            await writer.send_text(conv, text)
            sent.append(text)
        await e2ee_server.services.key_store.require_rotation(conv)
        for i in range(6, 10):
            writer = b if i % 2 else c1
            text = f"avant la clé {i}"
            await writer.send_text(conv, text)
            sent.append(text)
        found = await e2ee_server.services.messages.get_conversation(conv)
        assert found is not None
        assert found.epoch == 2

        key_id = await sup.structure.create()
        assert await sup.structure.hand_out() >= 1  # c2's device
        # The young person seals junk to the structure key first, for both old epochs.
        assert await _missing(b, conv) == [1, 2]
        assert await _junk(b, conv, [1, 2]) == 2
        # A second offer from the same device for the same epoch is not added.
        assert await _junk(b, conv, [1]) == 0
        # The young person has sealed them (junk or not); the counsellor still is asked.
        assert await _missing(b, conv) == []
        assert await _missing(c1, conv) == [1, 2]
        await c1.fetch_envelopes(conv)  # seals the right keys (the backfill)
        assert await _missing(c1, conv) == []
        await c1.close()
        await b.close()

        # Transfer with the previous counsellor and the young person offline.
        await sup.request(
            "POST", f"/api/conversations/{conv}/transfer", {"to": w.c2.user.id, "mode": "permanent"}
        )
        await c2.connect()
        history = await c2.all_history(conv)
        texts = [m for m in history if m.msg_type == "text"]
        assert [str(m.error) for m in texts if m.error] == []
        assert [m.text for m in texts] == sent
        own = await c2.request("GET", f"/api/keys/envelopes?conversation={conv}")
        assert own["envelopes"] == []  # only the structure envelopes opened them
        assert sorted(
            (e["epoch"], e["sender_device"]) for e in own["structure"]["envelopes"]
        ) == sorted([(1, b.device_id), (2, b.device_id), (1, c1.device_id), (2, c1.device_id)])
        # Each junk one is a security event of the reader, reported to the server.
        assert sorted(c2.state.rejected_structure_envelopes) == [
            (conv, 1, b.device_id),
            (conv, 2, b.device_id),
        ]
        audit = await e2ee_server.services.key_store.audit_for(conv)
        rejected = [a.details for a in audit if a.action == "envelope.rejected"]
        assert sorted((d["epoch"], d["sender_device"]) for d in rejected) == [
            (1, b.device_id),
            (2, b.device_id),
        ]
        assert {d["recipient"] for d in rejected} == {f"structure:{key_id}"}
        assert {d["device"] for d in rejected} == {c2.device_id}
        # Nobody's device gets a key request out of it (the structure key is not a device).
        requests = await e2ee_server.services.key_store.key_requests([conv])
        assert all(r.reason != "bad_envelope" for r in requests)
    finally:
        for c in (c1, b, sup, c2):
            await c.close()


async def test_structure_envelopes_are_bounded_per_sending_user(
    e2ee_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the bound at 1 per user, a counsellor's second device is refused, and the
    # young person's envelope is still added: one party never fills the slot for another.
    monkeypatch.setattr(room_keys, "MAX_STRUCTURE_ENVELOPES_PER_USER", 1)
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    c1_other = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    try:
        await c1.connect()
        await c1.send_text(conv, "bonjour")
        await sup.structure.create()
        assert await _junk(c1, conv, [1]) == 1
        with pytest.raises(ClientError) as err:
            await _junk(c1_other, conv, [1])
        assert err.value.code == "too_many_envelopes"
        assert await _junk(b, conv, [1]) == 1
        # A report names a structure envelope that exists, from a device holding the key.
        for reporter, sender in ((sup, c1_other.device_id), (b, c1.device_id)):
            with pytest.raises(ClientError) as missing:
                await reporter.request(
                    "POST",
                    "/api/keys/report",
                    {"conversation": conv, "epoch": 1, "sender_device": sender, "structure": True},
                )
            assert missing.value.status == 404
        audit = await e2ee_server.services.key_store.audit_for(conv)
        assert [a for a in audit if a.action == "envelope.rejected"] == []
    finally:
        for c in (c1, c1_other, b, sup):
            await c.close()
