"""Format version 2: `meta` is authenticated; version 1 messages stay readable.

A real server (E2EE required) and SDK clients: the server refuses a message
whose meta is not the signed one, a meta without a canonical form and a
message written in version 1; a receiver handed a tampered message refuses
it too; a version 1 message already stored is still delivered and read,
marked as such.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from chat_server.crypto.message import encrypt_message
from chat_server.rooms.models import NewMessage
from chat_server.sdk import Client
from tests.e2ee.helpers import next_user_message
from tests.helpers import PASSWORD, ServerInfo, seed_world

STARTS_AT = int(time.time()) + 30 * 86400
RDV: dict[str, Any] = {"item": "rdv-meta-v2", "event": "created", "starts_at": STARTS_AT}


async def _pair(server: ServerInfo) -> tuple[Client, Client, str]:
    w = await seed_world(server)
    c = await Client.login(server.http, "c1", PASSWORD)
    b = await Client.login(server.http, "b1", PASSWORD)
    await c.connect()
    await b.connect()
    return c, b, w.conv["b1"]


def _frame(
    client: Client, conv: str, epoch: int, key: bytes, meta: dict[str, Any], version: int = 2
) -> dict[str, Any]:
    client_id = secrets.token_hex(8)
    enc = encrypt_message(
        key,
        client.keys,
        conversation=conv,
        epoch=epoch,
        sender_device=client.device_id,
        client_id=client_id,
        msg_type="appointment",
        plaintext=json.dumps({"titre": "Entretien"}).encode(),
        meta=meta,
        version=version,
    )
    return {
        "type": "message.send",
        "conversation": conv,
        "client_id": client_id,
        "msg_type": "appointment",
        "body": base64.b64encode(enc.ciphertext).decode(),
        "nonce": base64.b64encode(enc.nonce).decode(),
        "sig": base64.b64encode(enc.sig).decode(),
        "epoch": epoch,
        "meta": meta,
        "v": version,
    }


async def _types(server: ServerInfo, conv: str) -> list[str]:
    return [m.msg_type for m in await server.services.messages.messages_after(conv, 0, 1000)]


async def test_meta_other_than_the_signed_one_is_refused(e2ee_server: ServerInfo) -> None:
    c, b, conv = await _pair(e2ee_server)
    try:
        epoch, key = await c.ensure_epoch(conv)
        before = await _types(e2ee_server, conv)
        for tampered in (
            RDV | {"event": "changed"},
            RDV | {"starts_at": STARTS_AT + 3600},
            RDV | {"item": "autre-rdv-42"},
        ):
            frame = _frame(c, conv, epoch, key, RDV)
            frame["meta"] = tampered
            reply = await c._call(frame)
            assert reply["type"] == "error"
            assert reply["code"] == "bad_signature", reply
            assert "meta" in reply["message"]
        assert await _types(e2ee_server, conv) == before
        # The signed meta itself goes through, and the receiver reads it as authenticated.
        assert (await c._call(_frame(c, conv, epoch, key, RDV)))["type"] == "ack"
        got = await next_user_message(b)
        assert got.error is None
        assert got.meta == RDV
        assert got.version == 2
        assert got.meta_authenticated
    finally:
        await c.close()
        await b.close()


async def test_meta_without_canonical_form_and_version_1_are_refused(
    e2ee_server: ServerInfo,
) -> None:
    c, b, conv = await _pair(e2ee_server)
    try:
        epoch, key = await c.ensure_epoch(conv)
        before = await _types(e2ee_server, conv)
        frame = _frame(c, conv, epoch, key, {})
        frame["meta"] = RDV | {"starts_at": STARTS_AT + 0.5}
        reply = await c._call(frame)
        assert (reply["type"], reply["code"]) == ("error", "meta_not_canonical")
        old = _frame(c, conv, epoch, key, RDV, version=1)
        reply = await c._call(old)
        assert (reply["type"], reply["code"]) == ("error", "unsupported_format_version")
        absent = _frame(c, conv, epoch, key, RDV)
        del absent["v"]  # an old client: no version means version 1
        assert (await c._call(absent))["code"] == "unsupported_format_version"
        future = _frame(c, conv, epoch, key, RDV) | {"v": 3}
        assert (await c._call(future))["code"] == "unsupported_format_version"
        assert await _types(e2ee_server, conv) == before
    finally:
        await c.close()
        await b.close()


async def test_receiver_refuses_a_tampered_meta_and_reads_version_1(
    e2ee_server: ServerInfo,
) -> None:
    c, b, conv = await _pair(e2ee_server)
    try:
        epoch, key = await c.ensure_epoch(conv)
        ack = await c.send(conv, b'{"titre":"RDV"}', msg_type="appointment", meta=RDV)
        delivered = await next_user_message(b)
        assert delivered.error is None
        assert delivered.meta_authenticated
        (page,) = [m for m in await b.all_history(conv) if m.seq == ack["seq"]]
        assert page.meta == RDV
        # What a dishonest server could hand over: the same message, another meta.
        stored = await e2ee_server.services.messages.messages_after(conv, ack["seq"] - 1, 1)
        wire = {
            "conversation": conv,
            "seq": stored[0].seq,
            "client_id": stored[0].client_id,
            "sender": stored[0].sender_id,
            "device": stored[0].device_id,
            "msg_type": stored[0].msg_type,
            "body": base64.b64encode(stored[0].body).decode(),
            "meta": RDV | {"event": "cancelled"},
            "epoch": stored[0].epoch,
            "nonce": base64.b64encode(stored[0].nonce).decode(),
            "sig": base64.b64encode(stored[0].sig).decode(),
            "v": stored[0].version,
        }
        refused = await b.decrypt(wire)
        assert refused.plaintext is None
        assert refused.error == "BadSignature"
        assert not refused.meta_authenticated
        relabelled = await b.decrypt(wire | {"meta": RDV, "v": 1})
        assert relabelled.error == "BadSignature"

        # A message stored in version 1 (before this format) is still read, marked as such.
        client_id = secrets.token_hex(8)
        enc = encrypt_message(
            key,
            c.keys,
            conversation=conv,
            epoch=epoch,
            sender_device=c.device_id,
            client_id=client_id,
            msg_type="text",
            plaintext=b'{"text":"ancien format"}',
            version=1,
        )
        conv_doc = await e2ee_server.services.messages.get_conversation(conv)
        assert conv_doc is not None
        old, created = await e2ee_server.services.messages.append(
            NewMessage(
                conv,
                client_id,
                c.user_id,
                c.device_id,
                "text",
                enc.ciphertext,
                {},
                epoch,
                enc.nonce,
                enc.sig,
                version=1,
            ),
            2e9,
        )
        assert created
        assert old.version == 1
        (read,) = [m for m in await b.all_history(conv) if m.seq == old.seq]
        assert read.text == "ancien format"
        assert read.version == 1
        assert not read.meta_authenticated
    finally:
        await c.close()
        await b.close()
