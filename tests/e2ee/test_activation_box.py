"""Activation carries the keys (issue #10, point 1), with the Python client.

The counsellor creates a beneficiary with a code made on her device (the
server sees only its proof), writes a welcome message, and goes offline.
The beneficiary activates with the code, opens the activation box, and reads
the welcome message at once. The server never saw the code; a wrong code opens
nothing; the box is for members only, and gone once taken.
"""

from __future__ import annotations

import json

import pytest

from chat_server.crypto.activation import derive, is_client_code, seal_box
from chat_server.sdk import Client, ClientError
from tests.helpers import PASSWORD, ServerInfo, api, seed_world


async def test_welcome_written_before_activation_is_read_at_once(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    c.transcript = []
    code, conv = await c.create_beneficiary("lina.new", "Lina Nouvelle")
    assert is_client_code(code)
    await c.connect()
    await c.send_text(conv, "Bienvenue Lina : voici votre espace.")
    await c.close()  # the counsellor is offline from now on

    # The box is for members only.
    for other in (w.c2, w.sup, w.b1):
        r = await api(e2ee_server, "GET", f"/api/conversations/{conv}/activation-box", other.token)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "not_member"

    # A wrong code proves nothing.
    with pytest.raises(ClientError) as wrong:
        await Client.activate(e2ee_server.http, "AAAA-BBBB-CCCC-DDDD", PASSWORD, register=False)
    assert wrong.value.code == "unauthenticated"

    phone = await Client.activate(e2ee_server.http, code, PASSWORD)
    try:
        assert await phone.open_activation_box(conv) == 1
        await phone.connect()
        history = await phone.all_history(conv)
        texts = [m.text for m in history if m.msg_type == "text"]
        assert texts == ["Bienvenue Lina : voici votre espace."]
        assert all(m.error is None for m in history if m.msg_type == "text")
        # Taken, the box is gone; and no new box once the beneficiary has a device.
        with pytest.raises(ClientError) as gone:
            await phone.request("GET", f"/api/conversations/{conv}/activation-box")
        assert gone.value.code == "not_found"
        c2 = await Client.login(e2ee_server.http, "c1", PASSWORD)
        with pytest.raises(ClientError) as late:
            await c2.request(
                "PUT",
                f"/api/conversations/{conv}/activation-box",
                {"v": 1, "nonce": "A" * 16, "box": "B" * 40},
            )
        assert late.value.code == "already_activated"
        await c2.close()
        # And the beneficiary can answer in that epoch.
        await phone.send_text(conv, "Merci !")
    finally:
        await phone.close()
    # The code never reached the server; its proof did.
    sent = "\n".join(c.transcript or [])
    assert code not in sent
    assert derive(code).proof_text not in json.dumps(w.conv)


async def test_a_box_from_another_code_or_key_is_not_taken(e2ee_server: ServerInfo) -> None:
    """The phone takes a key only if it matches the epoch's signed commitment."""
    await seed_world(e2ee_server)
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    try:
        code, conv = await c.create_beneficiary("noa.new", "Noa Nouveau")
        # A box replaced by one holding another key (it would need the code; here the
        # counsellor's own client is made to do it): the key fails the commitment.
        forged = seal_box(derive(code).box_key, conv, {1: bytes(32)})
        await c.request("PUT", f"/api/conversations/{conv}/activation-box", forged)
        phone = await Client.activate(e2ee_server.http, code, PASSWORD)
        try:
            assert await phone.open_activation_box(conv) == 0
            assert (conv, 1) not in phone.state.epoch_keys
        finally:
            await phone.close()
    finally:
        await c.close()
