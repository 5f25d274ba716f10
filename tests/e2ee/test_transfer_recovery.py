"""Transfer with history, recovery from the backup, counsellor-assisted re-share, safety numbers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from chat_server.crypto.commitment import epoch_commitment, sign_commitment
from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.envelope import wrap_epoch_key
from chat_server.sdk import Client, ClientError
from tests.e2ee.helpers import frame_for, wait_text
from tests.helpers import PASSWORD, ServerInfo, login, seed_world


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_permanent_transfer_gives_history_to_new_counsellor_only(
    e2ee_server: ServerInfo,
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    c2 = await Client.login(e2ee_server.http, "c2", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    try:
        await b.connect()
        for i in range(5):
            await b.send_text(conv, f"avant transfert {i}")
        await c1.connect()
        await c1.send_text(conv, "réponse de l'ancien conseiller")
        old_epoch = (await b.devices(conv))["epoch"]

        r = await sup.request(
            "POST", f"/api/conversations/{conv}/transfer", {"to": w.c2.user.id, "mode": "permanent"}
        )
        assert r["counsellor_id"] == w.c2.user.id
        assert r["rotation_required"] is True
        # The beneficiary's device is online: it re-wraps the old epochs for c2.
        await _until(lambda: _holds(c2, conv, old_epoch))
        await c2.connect()
        history = await c2.all_history(conv)
        texts = [m.text for m in history if m.msg_type == "text"]
        assert texts[:5] == [f"avant transfert {i}" for i in range(5)]
        assert "réponse de l'ancien conseiller" in texts
        assert all(m.error is None for m in history if m.msg_type == "text")

        await b.send_text(conv, "après transfert, secret")
        got = await wait_text(c2, "après transfert, secret")
        assert got.error is None
        # The previous counsellor is no longer a member, and has no key for the new epoch.
        stored = await e2ee_server.services.messages.messages_after(conv, 0, 1000)
        last = stored[-1]
        assert last.epoch > old_epoch
        await c1.fetch_envelopes()
        assert (conv, last.epoch) not in c1.state.epoch_keys
        frame = {
            "conversation": conv,
            "seq": last.seq,
            "client_id": last.client_id,
            "sender": last.sender_id,
            "device": last.device_id,
            "msg_type": last.msg_type,
            "epoch": last.epoch,
            "meta": {},
            "body": _b64(last.body),
            "nonce": _b64(last.nonce),
            "sig": _b64(last.sig),
        }
        attempt = await c1.decrypt(frame)
        assert attempt.plaintext is None
        assert attempt.error == "no_epoch_key"
        audit = await e2ee_server.services.key_store.audit_for(conv)
        assert [a.action for a in audit] == ["transfer.permanent"]
        assert audit[0].actor_id == w.sup.user.id
    finally:
        for cl in (c1, c2, b, sup):
            await cl.close()


async def _event(client: Client, kind: str) -> dict[str, object]:
    for _ in range(100):
        event = await asyncio.wait_for(client.events.get(), 10)
        if event.get("type") == kind:
            return event
    raise AssertionError(f"no {kind} event")


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


async def _holds(client: Client, conv: str, epoch: int) -> bool:
    await client.fetch_envelopes(conv)
    return all((conv, e) in client.state.epoch_keys for e in range(1, epoch + 1))


async def test_temporary_transfer_and_take_back(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    try:
        import time

        r = await sup.request(
            "POST",
            f"/api/conversations/{conv}/transfer",
            {"to": w.c2.user.id, "mode": "temporary", "until": time.time() + 3600},
        )
        assert r["counsellor_id"] == w.c2.user.id
        assert r["previous_counsellor_id"] == w.c1.user.id
        back = await sup.request(
            "POST", f"/api/conversations/{conv}/transfer", {"mode": "take_back"}
        )
        assert back["counsellor_id"] == w.c1.user.id
        msgs = await e2ee_server.services.messages.messages_after(conv, 0, 100)
        assert [m.msg_type for m in msgs if m.msg_type != "system.device_changed"] == [
            "system.temporary_counsellor",
            "system.counsellor_changed",
        ]
        # The supervisor's device reads the structure's conversations: it is announced there.
        changes = [m.meta for m in msgs if m.msg_type == "system.device_changed"]
        assert {"user": w.sup.user.id, "device": sup.device_id, "change": "added"} in changes
        # Only a supervisor of the structure may transfer.
        other = await login(e2ee_server, "osup")
        import httpx

        async with httpx.AsyncClient(base_url=e2ee_server.http) as http:
            resp = await http.post(
                f"/api/conversations/{conv}/transfer",
                json={"to": w.c2.user.id, "mode": "permanent"},
                headers={"authorization": f"Bearer {other.token}"},
            )
            assert resp.status_code == 403
            resp = await http.post(
                f"/api/conversations/{conv}/transfer",
                json={"to": w.c2.user.id, "mode": "permanent"},
                headers={"authorization": f"Bearer {w.c1.token}"},
            )
            assert resp.status_code == 403
    finally:
        await sup.close()


async def test_restore_from_recovery_key_on_new_device(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    try:
        await b.connect()
        await c.connect()
        for i in range(3):
            await b.send_text(conv, f"message {i}")
        await c.send_text(conv, "réponse")
        recovery = await b.backup()
        assert len(recovery.replace("-", "")) == 52
        await b.close()
        # A new phone: nothing local, only the login and the recovery key.
        phone = await Client.restore(e2ee_server.http, "b1", PASSWORD, recovery.lower())
        await phone.connect()
        history = await phone.all_history(conv)
        texts = [m.text for m in history if m.msg_type == "text"]
        assert texts == ["message 0", "message 1", "message 2", "réponse"]
        ack = await phone.send_text(conv, "depuis le nouveau téléphone")
        assert ack["type"] == "ack"
        got = await wait_text(c, "depuis le nouveau téléphone")
        assert got.sender == w.b1.user.id
        await phone.close()
    finally:
        await c.close()


async def test_counsellor_assisted_reshare_to_new_phone(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    try:
        await b.connect()
        await b.send_text(conv, "historique à retrouver")
        await c.connect()
        await b.close()
        phone = await Client.login(e2ee_server.http, "b1", PASSWORD)  # lost the old phone
        await phone.connect()
        # Held back until the counsellor approves: no envelope, not listed for new epochs.
        assert await phone.fetch_envelopes(conv) == 0
        info = await c.devices(conv)
        assert phone.device_id in info["pending"]
        reqs = (await c.request("GET", "/api/keys/requests"))["requests"]
        assert [(r["recipient_device"], r["approved"]) for r in reqs] == [(phone.device_id, False)]
        # The counsellor is told (and only asked to decide: approved is false).
        event = await _event(c, "keys.requested")
        assert event["recipient_device"] == phone.device_id
        assert event["approved"] is False
        # Until approved, the new device can neither send nor rotate the key.
        current = info["epoch"]
        forged = frame_for(phone, conv, current, bytes(32), "je ne devrais pas pouvoir écrire")
        assert (await phone._call(forged))["code"] == "device_pending_approval"
        with pytest.raises(ClientError) as refused:
            await phone.request(
                "POST", f"/api/conversations/{conv}/epochs", {"epoch": current + 1, "envelopes": []}
            )
        assert refused.value.code == "device_pending_approval"
        await c.approve_device(conv, phone.device_id)
        await _until(lambda: _holds(phone, conv, 1))
        history = await phone.all_history(conv)
        assert [m.text for m in history if m.msg_type == "text"] == ["historique à retrouver"]
        await phone.close()
    finally:
        await c.close()


async def test_safety_number_same_on_every_device_and_device_change_is_visible(
    e2ee_server: ServerInfo,
) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    c_other = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        numbers = {await cl.safety_number(conv) for cl in (c, c_other, b)}
        assert len(numbers) == 1
        (before,) = numbers
        assert len(before) == 30
        assert before.isdigit()
        extra = await Client.login(e2ee_server.http, "c1", PASSWORD)
        assert await b.safety_number(conv) != before
        msgs = await e2ee_server.services.messages.messages_after(conv, 0, 100)
        changes = [m.meta for m in msgs if m.msg_type == "system.device_changed"]
        assert {"user": w.c1.user.id, "device": extra.device_id, "change": "added"} in changes
        await extra.close()
    finally:
        for cl in (c, c_other, b):
            await cl.close()


def _unused(x: object) -> str:
    return json.dumps(x)


async def test_temporary_transfer_ends_by_itself(e2ee_server: ServerInfo) -> None:
    import time

    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    try:
        until = time.time() + 0.3
        await sup.request(
            "POST",
            f"/api/conversations/{conv}/transfer",
            {"to": w.c2.user.id, "mode": "temporary", "until": until},
        )
        keys = e2ee_server.services.keys
        assert await keys.expire_temporary() == 0
        await asyncio.sleep(max(0.0, until - time.time()) + 0.05)
        assert await keys.expire_temporary() == 1
        back = await e2ee_server.services.messages.get_conversation(conv)
        assert back is not None
        assert back.counsellor_id == w.c1.user.id
        assert back.temporary_until is None
        audit = await e2ee_server.services.key_store.audit_for(conv)
        assert [(a.action, a.actor_id) for a in audit] == [
            ("transfer.temporary", w.sup.user.id),
            ("transfer.take_back", "system"),
        ]
        assert await keys.expire_temporary() == 0
    finally:
        await sup.close()


async def test_poisoned_rewrap_is_detected_and_the_right_key_still_used(
    e2ee_server: ServerInfo,
) -> None:
    """After a transfer the previous counsellor re-wraps a wrong key for the new
    counsellor's device: it is stored beside the others, fails the epoch's
    commitment, is reported (audit + key request), and the beneficiary's
    correct re-wrap that follows is stored and used."""
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    c2 = await Client.login(e2ee_server.http, "c2", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    try:
        await b.connect()
        await b.send_text(conv, "avant le transfert")
        await b.disconnect()  # offline: it re-wraps only when the test says so
        old_epoch = (await b.devices(conv))["epoch"]
        await sup.request(
            "POST", f"/api/conversations/{conv}/transfer", {"to": w.c2.user.id, "mode": "permanent"}
        )
        wrong = wrap_epoch_key(
            bytes(32),
            sender=c1.keys,
            sender_device=c1.device_id,
            recipient_device=c2.device_id,
            recipient_dh_pub=c2.keys.public.dh_pub,
            conversation=conv,
            epoch=old_epoch,
        ).to_json()
        path = f"/api/conversations/{conv}/envelopes"
        assert (await c1.request("POST", path, {"envelopes": [wrong]}))["added"] == 1
        # The same sender cannot replace or stack its offer; other senders still can.
        assert (await c1.request("POST", path, {"envelopes": [wrong]}))["added"] == 0
        assert await c2.fetch_envelopes(conv) == 0
        assert (conv, old_epoch) not in c2.state.epoch_keys
        assert c2.state.rejected_envelopes == [(conv, old_epoch, c1.device_id)]
        audit = await e2ee_server.services.key_store.audit_for(conv)
        assert [a.details["sender_device"] for a in audit if a.action == "envelope.rejected"] == [
            c1.device_id
        ]
        # The report reopened the request: the beneficiary's device re-wraps every epoch.
        reqs = (await b.request("GET", "/api/keys/requests"))["requests"]
        mine = [r for r in reqs if r["recipient_device"] == c2.device_id]
        assert [r["reason"] for r in mine] == ["bad_envelope"]
        assert old_epoch in mine[0]["missing_epochs"]
        assert await b.fulfil_requests() >= 1
        assert await c2.fetch_envelopes(conv) >= 1
        assert c2.state.epoch_keys[(conv, old_epoch)] == b.state.epoch_keys[(conv, old_epoch)]
        await c2.connect()
        history = await c2.all_history(conv)
        assert [m.text for m in history if m.msg_type == "text"] == ["avant le transfert"]
    finally:
        for cl in (c1, c2, b, sup):
            await cl.close()


async def test_an_epoch_without_a_valid_commitment_is_refused(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    try:
        info = await b.devices(conv)
        key = bytes(range(32))
        epoch = info["epoch"] + 1
        envs = [
            wrap_epoch_key(
                key,
                sender=b.keys,
                sender_device=b.device_id,
                recipient_device=d["device_id"],
                recipient_dh_pub=b64decode(d["dh_pub"]),
                conversation=conv,
                epoch=epoch,
            ).to_json()
            for g in (*info["members"], *info["escrow"])
            for d in g["devices"]
        ]
        commitment = epoch_commitment(key, conv, epoch)
        forged = sign_commitment(c1.keys, conv, epoch, b.device_id, commitment)
        for extra in (
            {},
            {"commitment": b64encode(commitment), "commitment_sig": b64encode(forged)},
        ):
            with pytest.raises(ClientError) as exc:
                await b.request(
                    "POST",
                    f"/api/conversations/{conv}/epochs",
                    {"epoch": epoch, "envelopes": envs, **extra},
                )
            assert exc.value.code == "bad_commitment"
        assert (await b.devices(conv))["epoch"] == info["epoch"]
        good = sign_commitment(b.keys, conv, epoch, b.device_id, commitment)
        body = {"commitment": b64encode(commitment), "commitment_sig": b64encode(good)}
        await b.request(
            "POST", f"/api/conversations/{conv}/epochs", {"epoch": epoch, "envelopes": envs, **body}
        )
        listed = (await c1.request("GET", f"/api/keys/envelopes?conversation={conv}"))["epochs"]
        assert {"epoch": epoch, "creator_device": b.device_id}.items() <= listed[-1].items()
        assert listed[-1]["commitment"] == b64encode(commitment)
    finally:
        await b.close()
        await c1.close()


async def test_previous_counsellor_may_list_devices_to_rewrap(e2ee_server: ServerInfo) -> None:
    """After a transfer the previous counsellor still holds the earlier keys: their
    client reads the device list to re-wrap them for the new counsellor (the web
    console does so through /devices); nobody else outside the conversation may."""
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    sup = await Client.login(e2ee_server.http, "sup", PASSWORD)
    c1 = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b2 = await Client.login(e2ee_server.http, "b2", PASSWORD)
    try:
        await sup.request(
            "POST", f"/api/conversations/{conv}/transfer", {"to": w.c2.user.id, "mode": "permanent"}
        )
        listing = await c1.devices(conv)
        members = {g["user_id"] for g in listing["members"]}
        assert members == {w.b1.user.id, w.c2.user.id}
        with pytest.raises(ClientError) as refused:
            await b2.devices(conv)
        assert refused.value.code == "not_member"
    finally:
        for c in (sup, c1, b2):
            await c.close()
