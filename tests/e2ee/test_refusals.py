"""Each end-to-end refusal has its own error code, and nothing is stored."""

from __future__ import annotations

import asyncio
import base64

import pytest

from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.envelope import generate_epoch_key, wrap_epoch_key
from chat_server.crypto.keys import DeviceKeys, sign_registration
from chat_server.sdk import Client, ClientError
from tests.e2ee.helpers import frame_for
from tests.helpers import PASSWORD, ServerInfo, seed_world


async def _pair(server: ServerInfo) -> tuple[Client, Client, str]:
    w = await seed_world(server)
    c = await Client.login(server.http, "c1", PASSWORD)
    b = await Client.login(server.http, "b1", PASSWORD)
    await c.connect()
    await b.connect()
    return c, b, w.conv["b1"]


async def _stored(server: ServerInfo, conv: str) -> list[str]:
    msgs = await server.services.messages.messages_after(conv, 0, 1000)
    return [m.msg_type for m in msgs]


async def test_forged_signature_is_refused(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    try:
        epoch, key = await b.ensure_epoch(conv)
        before = await _stored(e2ee_server, conv)
        frame = frame_for(b, conv, epoch, key, "faux")
        frame["sig"] = base64.b64encode(DeviceKeys.generate().sign(b"x")).decode()
        reply = await b._call(frame)
        assert reply["type"] == "error"
        assert reply["code"] == "bad_signature"
        assert await _stored(e2ee_server, conv) == before
    finally:
        await c.close()
        await b.close()


async def test_tampered_ciphertext_is_refused(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    try:
        epoch, key = await b.ensure_epoch(conv)
        frame = frame_for(b, conv, epoch, key, "bonjour")
        body = bytearray(base64.b64decode(frame["body"]))
        body[0] ^= 1
        frame["body"] = base64.b64encode(bytes(body)).decode()
        reply = await b._call(frame)
        assert reply["code"] == "bad_signature"
    finally:
        await c.close()
        await b.close()


async def test_unknown_device_is_refused(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    ghost = await Client.login(e2ee_server.http, "b1", PASSWORD, register=False)
    try:
        epoch, key = await b.ensure_epoch(conv)
        await ghost.connect()
        reply = await ghost._call(frame_for(ghost, conv, epoch, key, "fantôme"))
        assert reply["code"] == "unknown_device"
    finally:
        for cl in (c, b, ghost):
            await cl.close()


async def test_wrong_epoch_is_refused(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    try:
        epoch, key = await b.ensure_epoch(conv)
        reply = await b._call(frame_for(b, conv, epoch + 1, key, "futur"))
        assert reply["code"] == "stale_epoch"
        # After a device removal the conversation needs a new epoch first.
        extra = await Client.login(e2ee_server.http, "c1", PASSWORD)
        await extra.request("DELETE", f"/api/devices/{extra.device_id}")
        with pytest.raises(ClientError) as gone:
            await extra.request("GET", "/api/me")
        assert gone.value.status == 401
        reply = await b._call(frame_for(b, conv, epoch, key, "avant rotation"))
        assert reply["code"] == "epoch_rotation_required"
        await extra.close()
    finally:
        await c.close()
        await b.close()


async def test_replayed_nonce_is_refused(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    try:
        epoch, key = await b.ensure_epoch(conv)
        first = frame_for(b, conv, epoch, key, "un", nonce=b"\x07" * 12)
        assert (await b._call(first))["type"] == "ack"
        again = frame_for(b, conv, epoch, key, "deux", nonce=b"\x07" * 12)
        reply = await b._call(again)
        assert reply["code"] == "nonce_reused"
        # A resend of the very same message is not a replay: it gets the first ack.
        resend = await b._call(dict(first))
        assert resend["type"] == "ack"
        assert resend["duplicate"] is True
    finally:
        await c.close()
        await b.close()


async def test_envelope_for_device_outside_conversation_is_refused(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    outsider = await Client.login(e2ee_server.http, "b2", PASSWORD)
    try:
        info = await b.devices(conv)
        key = generate_epoch_key()
        devices = [d for g in (*info["members"], *info["escrow"]) for d in g["devices"]]
        devices.append(
            {
                "device_id": outsider.device_id,
                "dh_pub": b64encode(outsider.keys.public.dh_pub),
            }
        )
        envs = [
            wrap_epoch_key(
                key,
                sender=b.keys,
                sender_device=b.device_id,
                recipient_device=d["device_id"],
                recipient_dh_pub=b64decode(d["dh_pub"]),
                conversation=conv,
                epoch=info["epoch"] + 1,
            ).to_json()
            for d in devices
        ]
        with pytest.raises(ClientError) as exc:
            await b.request(
                "POST",
                f"/api/conversations/{conv}/epochs",
                {"epoch": info["epoch"] + 1, "envelopes": envs},
            )
        assert exc.value.code == "envelope_recipient_not_authorised"
        assert (await b.devices(conv))["epoch"] == info["epoch"]
        # Missing a member's device is refused too.
        with pytest.raises(ClientError) as exc2:
            await b.request(
                "POST",
                f"/api/conversations/{conv}/epochs",
                {"epoch": info["epoch"] + 1, "envelopes": envs[:1]},
            )
        assert exc2.value.code == "envelope_missing_recipient"
    finally:
        for cl in (c, b, outsider):
            await cl.close()


async def test_two_clients_rotating_at_once_end_with_one_epoch(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    try:
        results = await asyncio.gather(c.ensure_epoch(conv), b.ensure_epoch(conv))
        (e1, k1), (e2, k2) = results
        assert e1 == e2 == 1
        assert k1 == k2
        info = await c.devices(conv)
        assert info["epoch"] == 1
        ack = await b.send_text(conv, "après la course")
        assert ack["type"] == "ack"
    finally:
        await c.close()
        await b.close()


async def test_bad_registration_is_refused(e2ee_server: ServerInfo) -> None:
    await seed_world(e2ee_server)
    cl = await Client.login(e2ee_server.http, "b1", PASSWORD, register=False)
    try:
        other = DeviceKeys.generate()
        pub = cl.keys.public
        with pytest.raises(ClientError) as exc:
            await cl.request(
                "POST",
                "/api/devices",
                {
                    "dh_pub": b64encode(pub.dh_pub),
                    "sig_pub": b64encode(pub.sig_pub),
                    "registration_sig": b64encode(
                        sign_registration(other, cl.user_id, cl.device_id)
                    ),
                },
            )
        assert exc.value.code == "bad_registration_signature"
    finally:
        await cl.close()


async def test_device_limit_per_account(e2ee_server: ServerInfo) -> None:
    from chat_server.rooms.keys import MAX_DEVICES_PER_USER

    await seed_world(e2ee_server)
    clients = [
        await Client.login(e2ee_server.http, "c2", PASSWORD) for _ in range(MAX_DEVICES_PER_USER)
    ]
    try:
        with pytest.raises(ClientError) as exc:
            await Client.login(e2ee_server.http, "c2", PASSWORD)
        assert exc.value.code == "too_many_devices"
    finally:
        for cl in clients:
            await cl.close()


async def test_removing_old_devices_does_not_skip_approval(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    try:
        await b.send_text(conv, "historique")
        await b.request("DELETE", f"/api/devices/{b.device_id}")
        thief = await Client.login(e2ee_server.http, "b1", PASSWORD)
        info = await c.devices(conv)
        assert thief.device_id in info["pending"]
        assert await thief.fetch_envelopes(conv) == 0
        await thief.close()
    finally:
        await c.close()
        await b.close()


async def test_only_holders_of_an_epoch_can_rewrap_it(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    await b.send_text(conv, "premier")
    await b.disconnect()
    await c.disconnect()  # no holder online: nobody re-wraps epoch 1 for the newcomer
    newcomer = await Client.login(e2ee_server.http, "c1", PASSWORD)
    try:
        info = await b.devices(conv)
        target = next(
            d for g in info["members"] for d in g["devices"] if d["device_id"] == c.device_id
        )
        env = wrap_epoch_key(
            generate_epoch_key(),
            sender=newcomer.keys,
            sender_device=newcomer.device_id,
            recipient_device=target["device_id"],
            recipient_dh_pub=b64decode(target["dh_pub"]),
            conversation=conv,
            epoch=1,
        ).to_json()
        held = await newcomer.fetch_envelopes(conv)
        assert held == 0  # the newcomer was never given epoch 1 (no holder re-wrapped yet)
        with pytest.raises(ClientError) as exc:
            await newcomer.request(
                "POST", f"/api/conversations/{conv}/envelopes", {"envelopes": [env]}
            )
        assert exc.value.code == "epoch_not_held"
    finally:
        for cl in (c, b, newcomer):
            await cl.close()
