"""Two members exchange a message over a real server."""

from __future__ import annotations

from tests.helpers import ServerInfo, WsClient, body_text, seed_world


async def test_counsellor_and_beneficiary_exchange(server: ServerInfo) -> None:
    w = await seed_world(server)
    c = await WsClient.connect(server, w.c1.token)
    b = await WsClient.connect(server, w.b1.token)
    ack = await b.send_text(w.conv["b1"], "Bonjour")
    assert ack["type"] == "ack"
    assert ack["seq"] == 1
    got = await c.expect("message.created")
    assert body_text(got) == "Bonjour"
    await c.close()
    await b.close()
