"""End-to-end flows with the Python SDK against a real server."""

from __future__ import annotations

from chat_server.sdk import Client
from tests.helpers import PASSWORD, ServerInfo, seed_world


async def test_two_clients_exchange_encrypted_messages(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        await c.connect()
        await b.connect()
        ack = await b.send_text(conv, "Bonjour, j'ai un entretien demain")
        assert ack["seq"] >= 1
        got = await c.next_message()
        while got.msg_type.startswith("system."):
            got = await c.next_message()
        assert got.text == "Bonjour, j'ai un entretien demain"
        await c.send_text(conv, "Très bien, préparons-le")
        got2 = await b.next_message()
        while got2.msg_type.startswith("system."):
            got2 = await b.next_message()
        assert got2.text == "Très bien, préparons-le"
        assert await c.safety_number(conv) == await b.safety_number(conv)
    finally:
        await c.close()
        await b.close()
