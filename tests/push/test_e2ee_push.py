"""Pushes with end-to-end encryption on: the payload opens with the recipient's keys only,
holds no plaintext, and counsellors hear of devices waiting for their approval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from chat_server.sdk import Client
from chat_server.settings import Settings
from tests.conftest import run_server
from tests.helpers import PASSWORD, ServerInfo, seed_world
from tests.push.pushservice import TestPushService

QUIET_OFF = {"quiet_start": "00:00", "quiet_end": "00:00"}


@pytest.fixture
async def e2ee_push_server(
    push_settings: Settings, push_service: TestPushService
) -> AsyncIterator[ServerInfo]:
    async for info in run_server(replace(push_settings, require_e2ee=True)):
        push_service.expected_vapid_key = info.services.push.vapid.public_key
        yield info


async def _subscribe(client: Client, push: TestPushService) -> str:
    dev, info = push.subscribe()
    answer = await client.request("POST", "/api/push/subscriptions", {**info, **QUIET_OFF})
    assert answer["subscription"]["device_id"] == client.device_id
    return dev.sub_id


async def test_preview_opens_with_the_recipients_keys_and_holds_no_plaintext(
    e2ee_push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(e2ee_push_server)
    conv = w.conv["b1"]
    b = await Client.login(e2ee_push_server.http, "b1", PASSWORD)
    c = await Client.login(e2ee_push_server.http, "c1", PASSWORD)
    try:
        await b.connect()
        await c.connect()
        to_b = await _subscribe(b, push_service)
        to_c = await _subscribe(c, push_service)
        secret = "Bonjour Inès, rendez-vous jeudi 14 h au 12 rue des Lilas"
        await c.send_text(conv, secret)
        reply = "Merci Claire, j'y serai avec mon CV"
        await b.send_text(conv, reply)
        got = await push_service.wait_for(2)
        by_sub = {d.sub_id: d for d in got}
        for d in got:
            for text in (secret, reply):
                assert text.encode() not in d.payload
                assert text.encode("unicode_escape") not in d.payload
        # Each side opens its push with its own keys: the preview is the message.
        opened_by_b = await b.decrypt(by_sub[to_b].json()["message"])
        assert opened_by_b.text == secret
        assert by_sub[to_b].json()["sender_name"] == "Claire"
        opened_by_c = await c.decrypt(by_sub[to_c].json()["message"])
        assert opened_by_c.text == reply
        assert by_sub[to_c].json()["sender_role"] == "beneficiary"
        assert push_service.problems == []
    finally:
        await b.close()
        await c.close()


async def test_counsellor_is_pushed_a_device_waiting_for_approval(
    e2ee_push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(e2ee_push_server)
    conv = w.conv["b1"]
    b = await Client.login(e2ee_push_server.http, "b1", PASSWORD)
    c = await Client.login(e2ee_push_server.http, "c1", PASSWORD)
    try:
        await b.connect()
        await c.connect()
        to_c = await _subscribe(c, push_service)
        await b.send_text(conv, "avant de perdre mon téléphone")
        [first] = await push_service.wait_for(1)
        assert first.json()["kind"] == "message"
        await b.close()
        phone = await Client.login(e2ee_push_server.http, "b1", PASSWORD)  # a new phone
        got = await push_service.wait_for(2)
        [request] = [d for d in got if d.json()["kind"] == "key_request"]
        assert request.sub_id == to_c
        assert request.json() == {"v": 1, "kind": "key_request", "conversation": conv}
        assert request.headers["urgency"] == "normal"
        await phone.close()
    finally:
        await c.close()
