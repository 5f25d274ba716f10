"""A code issued again by the counsellor is made by their client, like the first one
(issue #15 point 3): the server gets its proof only, and before activation a new activation
box carries the keys of what was already written, so the first phone reads it at once with
the counsellor offline. After activation (a password reset) the box is refused and the new
phone goes through the usual approval."""

from __future__ import annotations

from typing import Any

import pytest

from chat_server.crypto.activation import derive, new_code, seal_box
from chat_server.sdk import Client, ClientError
from tests.helpers import PASSWORD, ServerInfo, seed_world

NEW_PASSWORD = "un mot de passe tout neuf"


async def _issue(c: Client, conv: str, body: Any) -> Any:
    return await c.request("POST", f"/api/conversations/{conv}/activation", body)


async def test_reissued_client_code_and_box_then_reset(e2ee_server: ServerInfo) -> None:
    await seed_world(e2ee_server)
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    phone: Client | None = None
    try:
        first, conv = await c.create_beneficiary("lina", "Lina Haddad")
        await c.connect()
        await c.send_text(conv, "Bienvenue, avant l'activation")
        code = new_code()
        made = derive(code)
        issued = await _issue(c, conv, {"activation_proof": made.proof_text})
        assert issued["kind"] == "reissue"
        assert issued["activation_code"] is None
        # Every epoch key the counsellor holds, in a new box under the new code.
        await c.fetch_envelopes(conv)
        keys = {e: k for (cv, e), k in c.state.epoch_keys.items() if cv == conv}
        assert keys
        box = seal_box(made.box_key, conv, keys)
        await c.request("PUT", f"/api/conversations/{conv}/activation-box", box)
        await c.disconnect()  # nobody online

        with pytest.raises(ClientError) as old:
            await Client.activate(e2ee_server.http, first, PASSWORD)
        assert old.value.status == 401
        phone = await Client.activate(e2ee_server.http, code, PASSWORD)
        assert await phone.open_activation_box(conv) == len(keys)
        await phone.connect()
        texts = [m.text for m in await phone.all_history(conv)]
        assert "Bienvenue, avant l'activation" in texts

        # After activation: a password reset, also made by the client; no box any more.
        reset_code = new_code()
        reset = derive(reset_code)
        issued = await _issue(c, conv, {"activation_proof": reset.proof_text})
        assert (issued["kind"], issued["activation_code"]) == ("password_reset", None)
        with pytest.raises(ClientError) as boxed:
            await c.request("PUT", f"/api/conversations/{conv}/activation-box", box)
        assert (boxed.value.status, boxed.value.code) == (409, "already_activated")
        second = await Client.activate(e2ee_server.http, reset_code, NEW_PASSWORD)
        info = await c.devices(conv)
        assert second.device_id in info["pending"]  # the usual approval
        await second.close()
        again = await Client.login(e2ee_server.http, "lina", NEW_PASSWORD, register=False)
        await again.close()
    finally:
        await c.close()
        if phone is not None:
            await phone.close()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"activation_proof": "court"}, 400, "invalid_field"),
        ({"activation_proof": "!" * 43}, 400, "invalid_field"),
        ({"activation_proof": 5}, 400, "invalid_field"),
        ({"code": "ABCD"}, 400, "unknown_field"),
        ([1], 400, "malformed_json"),
    ],
)
async def test_bad_proof_is_refused(
    e2ee_server: ServerInfo, body: Any, status: int, code: str
) -> None:
    w = await seed_world(e2ee_server)
    c = await Client.login(e2ee_server.http, "c1", PASSWORD)
    try:
        with pytest.raises(ClientError) as exc:
            await _issue(c, w.conv["b1"], body)
        assert (exc.value.status, exc.value.code) == (status, code)
        events = await c.request("GET", f"/api/conversations/{w.conv['b1']}/messages?limit=50")
        assert all(m["msg_type"] != "system.activation_issued" for m in events["messages"])
    finally:
        await c.close()
