"""The counsellor's list: unread first, then flagged, then most recent; flags; unread counts."""

from __future__ import annotations

from typing import Any

from tests.helpers import (
    ServerInfo,
    WsClient,
    api,
    barrier,
    fast_world,
    of_type,
    open_session,
)


async def _order(server: ServerInfo, token: str) -> list[str]:
    r = await api(server, "GET", "/api/conversations", token)
    assert r.status_code == 200
    return [s["peer"]["login"] for s in r.json()["conversations"]]


async def _flag(server: ServerInfo, token: str, conv: str, flagged: bool) -> dict[str, Any]:
    r = await api(server, "POST", f"/api/conversations/{conv}/flag", token, {"flagged": flagged})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_counsellor_list_order_flags_and_unread(server: ServerInfo) -> None:
    svc = server.services
    w = await fast_world(svc)
    conv = dict(w.conv)
    tokens = {"b1": w.b1.token, "b2": w.b2.token}
    for name in ("b4", "b5", "b6"):
        nb = await svc.accounts.create_beneficiary(w.c1.user, name, name.upper(), "CEJ")
        conv[name] = nb.conversation.id
        tokens[name] = (await open_session(svc, nb.user)).token
    c = await WsClient.connect(server, w.c1.token)

    # Activity, oldest first: b6 only exists (created first), then b1, b2, b4, b5 write.
    for name in ("b1", "b2", "b4", "b5"):
        client = await WsClient.connect(server, tokens[name])
        assert (await client.send_text(conv[name], f"bonjour de {name}"))["type"] == "ack"
        await client.close()
    for name in ("b4", "b5"):
        await c.send({"type": "read.mark", "conversation": conv[name], "seq": 1})
        await c.expect("read.updated", conversation=conv[name])
    await _flag(server, w.c1.token, conv["b4"], True)
    await _flag(server, w.c1.token, conv["b6"], True)

    # Unread (most recent first), then flagged (most recent first), then the rest.
    assert await _order(server, w.c1.token) == ["b2", "b1", "b4", "b6", "b5"]
    lst = (await api(server, "GET", "/api/conversations", w.c1.token)).json()
    unread = {s["peer"]["login"]: s["unread"] for s in lst["conversations"]}
    assert unread == {"b1": 1, "b2": 1, "b4": 0, "b5": 0, "b6": 0}
    assert lst["unread_total"] == 2
    flagged = {s["peer"]["login"]: s["flagged"] for s in lst["conversations"]}
    assert flagged == {"b1": False, "b2": False, "b4": True, "b5": False, "b6": True}

    # A flagged unread conversation comes before an unflagged unread one.
    await _flag(server, w.c1.token, conv["b1"], True)
    assert await _order(server, w.c1.token) == ["b1", "b2", "b4", "b6", "b5"]
    await _flag(server, w.c1.token, conv["b1"], False)
    assert await _order(server, w.c1.token) == ["b2", "b1", "b4", "b6", "b5"]
    # Reading b2 moves it among the read ones, by recency.
    await api(server, "POST", f"/api/conversations/{conv['b2']}/read", w.c1.token, {"seq": 1})
    assert await _order(server, w.c1.token) == ["b1", "b4", "b6", "b5", "b2"]
    me = (await api(server, "GET", "/api/me", w.c1.token)).json()
    assert me["unread_total"] == 1
    await c.close()


async def test_flag_updates_the_counsellors_other_connections(server: ServerInfo) -> None:
    svc = server.services
    w = await fast_world(svc)
    conv = w.conv["b1"]
    console = await WsClient.connect(server, w.c1.token)
    phone = await WsClient.connect(server, (await open_session(svc, w.c1.user)).token)
    ben = await WsClient.connect(server, w.b1.token)
    assert await _flag(server, w.c1.token, conv, True) == {"flagged": True}
    for client in (console, phone):
        upd = await client.expect("conversation.updated")
        assert upd["conversation"]["id"] == conv
        assert upd["conversation"]["flagged"] is True
        assert upd["conversation"]["peer"]["id"] == w.b1.user.id
    # The flag is the counsellor's: the beneficiary is not told.
    assert of_type(await barrier(ben), "conversation.updated") == []
    stored = await svc.messages.get_conversation(conv)
    assert stored is not None
    assert stored.flagged is True
    await _flag(server, w.c1.token, conv, False)
    assert (await console.expect("conversation.updated"))["conversation"]["flagged"] is False
    for client in (console, phone, ben):
        await client.close()


async def test_beneficiary_list_has_one_conversation_with_counsellor_as_peer(
    server: ServerInfo,
) -> None:
    w = await fast_world(server.services)
    r = await api(server, "GET", "/api/conversations", w.b1.token)
    convs = r.json()["conversations"]
    assert len(convs) == 1
    s = convs[0]
    assert s["id"] == w.conv["b1"]
    assert s["peer"]["id"] == w.c1.user.id
    assert s["peer"]["role"] == "counsellor"
    assert s["beneficiary_id"] == w.b1.user.id
    assert s["counsellor_id"] == w.c1.user.id
    assert s["last_seq"] == 0
    assert s["unread"] == 0
    # No password hash or other private account fields leak into a summary.
    assert "password_hash" not in str(r.json())


async def test_key_housekeeping_is_never_unread_and_never_reorders(server: ServerInfo) -> None:
    """Devices added by a supervisor, a counsellor and a beneficiary post
    ``system.device_changed`` in every conversation they read: shown, not news."""
    from chat_server.crypto.keys import DeviceKeys
    from chat_server.sdk import Client

    svc = server.services
    w = await fast_world(svc)
    for token, conv, text in ((w.b1.token, "b1", "premier"), (w.b2.token, "b2", "second")):
        client = await WsClient.connect(server, token)
        assert (await client.send_text(w.conv[conv], text))["type"] == "ack"
        await client.close()
    before = (await api(server, "GET", "/api/conversations", w.c1.token)).json()
    assert [s["peer"]["login"] for s in before["conversations"]] == ["b2", "b1"]

    async def new_device(acc: Any) -> None:
        fresh = await open_session(svc, acc.user)
        client = Client(
            server.http, fresh.token, acc.user.public(), fresh.device_id, DeviceKeys.generate()
        )
        try:
            await client.register_device()
        finally:
            await client.http.aclose()

    for acc in (w.sup, w.sup, w.sup, w.c1, w.b1):
        await new_device(acc)
    after = (await api(server, "GET", "/api/conversations", w.c1.token)).json()
    summaries = {s["peer"]["login"]: s for s in after["conversations"]}
    assert [s["peer"]["login"] for s in after["conversations"]] == ["b2", "b1"]
    assert summaries["b1"]["last_seq"] == 1 + 5  # the message and five device events
    assert summaries["b2"]["last_seq"] == 1 + 4
    assert {k: s["unread"] for k, s in summaries.items()} == {"b1": 1, "b2": 1}
    assert after["unread_total"] == 2
    assert {k: s["last_at"] for k, s in summaries.items()} == {
        s["peer"]["login"]: s["last_at"] for s in before["conversations"]
    }
    me = (await api(server, "GET", "/api/me", w.c1.token)).json()
    assert me["unread_total"] == 2
    # The beneficiary, up to date on their own side, stays so.
    ben = (await api(server, "GET", "/api/conversations", w.b1.token)).json()
    assert ben["conversations"][0]["unread"] == 0
