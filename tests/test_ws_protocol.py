"""The WebSocket protocol against a real server: auth, origin, send/ack, fan-out, history,
read markers, typing, presence, message types."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from dataclasses import replace
from typing import Any

import pytest
import websockets

from chat_server.server_protocols import BoundedHttpProtocol
from chat_server.settings import Settings
from tests.conftest import serve
from tests.helpers import (
    PASSWORD,
    ServerInfo,
    WsClient,
    api,
    b64,
    barrier,
    body_text,
    close_code,
    fast_world,
    of_type,
    open_session,
    raw_ws,
    send_frame,
    wait_for,
)


async def _first_frame_then_close(server: ServerInfo, frame: Any, path: str = "") -> dict[str, Any]:
    ws = await raw_ws(server, path=path)
    try:
        await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        err = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert await close_code(ws) == 4001
        out: dict[str, Any] = err
        return out
    finally:
        await ws.close()


# ---------------------------------------------------------------- authentication


async def test_token_in_the_url_is_not_accepted(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    err = await _first_frame_then_close(
        server, {"type": "ping"}, path=f"?token={w.c1.token}&access_token={w.c1.token}"
    )
    assert err["type"] == "error"
    assert err["code"] == "auth_required"


async def test_first_frame_must_be_auth(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    err = await _first_frame_then_close(server, send_frame(w.conv["b1"], "hello"))
    assert err["code"] == "auth_required"
    err = await _first_frame_then_close(server, "{not json")
    assert err["code"] == "malformed_json"
    err = await _first_frame_then_close(server, {"type": "auth", "token": "forged-token"})
    assert err["code"] == "unauthenticated"
    err = await _first_frame_then_close(server, {"type": "auth", "token": w.c1.token, "extra": 1})
    assert err["code"] == "unknown_field"
    # Nothing was stored by the refused message.send.
    assert await server.services.messages.last_seq(w.conv["b1"]) == 0


async def test_auth_timeout_closes_4001(settings: Settings) -> None:
    async with serve(replace(settings, auth_timeout_seconds=0.5)) as server:
        ws = await raw_ws(server)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await close_code(ws, timeout=5) == 4001
        assert loop.time() - start >= 0.4
        await ws.close()


async def test_auth_only_once(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    c = await WsClient.connect(server, w.c1.token)
    assert c.auth["user"]["id"] == w.c1.user.id
    assert c.auth["device"] == w.c1.device_id
    assert c.auth["version"] == 1
    assert {s["id"] for s in c.auth["conversations"]} == {w.conv["b1"], w.conv["b2"]}
    await c.send({"type": "auth", "token": w.c1.token, "id": "again"})
    err = await c.expect("error")
    assert err["code"] == "already_authenticated"
    assert err["id"] == "again"
    await barrier(c)  # still open
    await c.close()


# ---------------------------------------------------------------- origin


async def test_bad_origin_is_closed_4003(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    ws = await raw_ws(server, origin="https://evil.example")
    assert await close_code(ws) == 4003
    await ws.close()
    # The server's own address is allowed by default, and clients without Origin too.
    own = f"http://127.0.0.1:{server.settings.port}"
    c = await WsClient.connect(server, w.c1.token, origin=own)
    await barrier(c)
    await c.close()


async def test_allowed_origins_setting(settings: Settings) -> None:
    allowed = "https://console.example"
    async with serve(replace(settings, allowed_origins=(allowed,))) as server:
        w = await fast_world(server.services)
        c = await WsClient.connect(server, w.c1.token, origin=allowed)
        await barrier(c)
        await c.close()
        ws = await raw_ws(server, origin=f"http://127.0.0.1:{server.settings.port}")
        assert await close_code(ws) == 4003
        await ws.close()


# ---------------------------------------------------------------- send, ack, fan-out


async def test_send_acks_with_contiguous_seq_and_fans_out(server: ServerInfo) -> None:
    svc = server.services
    w = await fast_world(svc)
    conv = w.conv["b1"]
    # The beneficiary logs in twice, from two devices.
    await svc.accounts.set_password(w.b1.user.id, PASSWORD)
    tokens = {}
    for device in ("phone", "tablet"):
        r = await api(
            server,
            "POST",
            "/api/login",
            json_body={"login": "b1", "password": PASSWORD, "device_id": device},
        )
        assert r.json()["device_id"] == device
        tokens[device] = r.json()["token"]
    phone = await WsClient.connect(server, tokens["phone"])
    tablet = await WsClient.connect(server, tokens["tablet"])
    assert (phone.auth["device"], tablet.auth["device"]) == ("phone", "tablet")
    counsellor = await WsClient.connect(server, w.c1.token)
    counsellor_2 = await WsClient.connect(server, (await open_session(svc, w.c1.user)).token)
    others = [
        await WsClient.connect(server, w.b2.token),
        await WsClient.connect(server, w.c2.token),
        await WsClient.connect(server, w.sup.token),
    ]
    texts = [f"message {i}" for i in range(5)]
    acks = [await phone.send_text(conv, t) for t in texts]
    assert [a["type"] for a in acks] == ["ack"] * 5
    assert [a["seq"] for a in acks] == [1, 2, 3, 4, 5]
    assert all(a["duplicate"] is False for a in acks)
    assert all(a["conversation"] == conv for a in acks)

    for receiver in (tablet, counsellor, counsellor_2):
        got = of_type(await barrier(receiver), "message.created")
        assert [body_text(f) for f in got] == texts
        assert [f["message"]["seq"] for f in got] == [1, 2, 3, 4, 5]
        m = got[0]["message"]
        assert m["sender"] == w.b1.user.id
        assert m["device"] == "phone"
        assert m["conversation"] == conv
        assert m["msg_type"] == "text"
    # The sending connection gets acks, not its own messages back.
    assert of_type(await barrier(phone), "message.created") == []
    for o in others:
        assert of_type(await barrier(o), "message.created") == []
    for c in (phone, tablet, counsellor, counsellor_2, *others):
        await c.close()


async def test_idle_connections_hold_no_writer_task(server: ServerInfo) -> None:
    """A connection's writer task runs while it has something to send, then ends."""
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    b = await WsClient.connect(server, w.b1.token)
    c = await WsClient.connect(server, w.c1.token)

    async def no_writer() -> bool:
        return not [t for t in asyncio.all_tasks() if t.get_name().startswith("ws-writer-")]

    await wait_for(no_writer, what="the writers of idle connections to end")
    # Each burst starts a writer again, and its frames arrive in order.
    for burst in range(2):
        texts = [f"burst {burst} message {i}" for i in range(20)]
        for t in texts:
            await b.send(send_frame(conv, t))
        got = [await c.expect("message.created") for _ in texts]
        assert [body_text(f) for f in got] == texts
        acks = [await b.expect("ack") for _ in texts]
        assert [a["seq"] for a in acks] == list(range(20 * burst + 1, 20 * burst + 21))
        await wait_for(no_writer, what="the writers to end after a burst")
    await b.close()
    await c.close()


async def test_an_upgraded_connection_leaves_no_http_protocol_to_the_collector(
    server: ServerInfo,
) -> None:
    """Once a connection is upgraded, its HTTP protocol object is freed at once, not left in
    a reference cycle (it and its parser) for the garbage collector to find: a storm of
    reconnects would otherwise leave about twenty cyclic objects per connection."""
    w = await fast_world(server.services)

    def http_protocols() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, BoundedHttpProtocol))

    gc.collect()
    gc.disable()
    try:
        before = http_protocols()
        clients = [await WsClient.connect(server, w.b1.token) for _ in range(5)]
        for c in clients:
            await c.close()
        assert http_protocols() == before
    finally:
        gc.enable()


async def test_resend_with_same_client_id_is_not_stored_twice(server: ServerInfo) -> None:
    svc = server.services
    w = await fast_world(svc)
    conv = w.conv["b1"]
    b = await WsClient.connect(server, w.b1.token)
    c = await WsClient.connect(server, w.c1.token)
    first = await b.send_text(conv, "once", client_id="client-msg-1")
    again = await b.send_text(conv, "once", client_id="client-msg-1")
    assert first["duplicate"] is False
    assert again["duplicate"] is True
    assert again["seq"] == first["seq"] == 1
    assert again["created_at"] == first["created_at"]
    # The counsellor may use the same client id: it is another sender's message.
    theirs = await c.send_text(conv, "reply", client_id="client-msg-1")
    assert theirs["duplicate"] is False
    assert theirs["seq"] == 2
    stored = await svc.messages.messages_after(conv, 0, 10)
    assert [(m.seq, m.sender_id) for m in stored] == [(1, w.b1.user.id), (2, w.c1.user.id)]
    assert len(of_type(await barrier(c), "message.created")) == 1
    await b.close()
    await c.close()


async def test_history_pages_before_and_after(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    b = await WsClient.connect(server, w.b1.token)
    for i in range(1, 31):
        assert (await b.send_text(conv, f"m{i}"))["seq"] == i

    async def page(**kw: Any) -> tuple[list[int], bool]:
        await b.send({"type": "history.get", "id": "h", "conversation": conv, **kw})
        h = await b.expect("history", id="h")
        assert h["conversation"] == conv
        return [m["seq"] for m in h["messages"]], h["has_more"]

    assert await page(limit=10) == (list(range(21, 31)), True)
    assert await page(before=21, limit=10) == (list(range(11, 21)), True)
    assert await page(before=11, limit=10) == (list(range(1, 11)), False)
    assert await page(after=0, limit=10) == (list(range(1, 11)), True)
    assert await page(after=25, limit=10) == (list(range(26, 31)), False)
    assert await page(after=30) == ([], False)
    assert await page() == (list(range(1, 31)), False)
    await b.send({"type": "history.get", "id": "x", "conversation": conv, "before": 5, "after": 1})
    err = await b.expect("error", id="x")
    assert err["code"] == "invalid_input"
    await b.send({"type": "history.get", "id": "y", "conversation": conv, "limit": 201})
    assert (await b.expect("error", id="y"))["code"] == "invalid_field"

    # The same pages over HTTP.
    path = f"/api/conversations/{conv}/messages"
    r = await api(server, "GET", path + "?limit=10", w.c1.token)
    assert [m["seq"] for m in r.json()["messages"]] == list(range(21, 31))
    assert r.json()["has_more"] is True
    r = await api(server, "GET", path + "?after=25", w.c1.token)
    assert [m["seq"] for m in r.json()["messages"]] == list(range(26, 31))
    assert r.json()["has_more"] is False
    assert r.json()["messages"][0]["body"] == b64("m26")
    r = await api(server, "GET", path + "?before=3&limit=5", w.c1.token)
    assert [m["seq"] for m in r.json()["messages"]] == [1, 2]
    for bad in ("?limit=0", "?limit=abc", "?before=-1"):
        r = await api(server, "GET", path + bad, w.c1.token)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_field"
    await b.close()


# ---------------------------------------------------------------- read markers


async def test_read_markers_and_unread_counts(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    b = await WsClient.connect(server, w.b1.token)
    c = await WsClient.connect(server, w.c1.token)
    for i in range(3):
        await b.send_text(conv, f"m{i}")
    await b.send_text(w.conv["b1"], "m3")
    # b2 writes too, so the total spans two conversations.
    b2 = await WsClient.connect(server, w.b2.token)
    await b2.send_text(w.conv["b2"], "hello")

    async def unread(token: str) -> tuple[dict[str, int], int, int]:
        lst = (await api(server, "GET", "/api/conversations", token)).json()
        me = (await api(server, "GET", "/api/me", token)).json()
        per = {s["id"]: s["unread"] for s in lst["conversations"]}
        return per, lst["unread_total"], me["unread_total"]

    assert await unread(w.c1.token) == ({conv: 4, w.conv["b2"]: 1}, 5, 5)
    # Sending implies having read: the beneficiary has nothing unread.
    assert await unread(w.b1.token) == ({conv: 0}, 0, 0)

    await c.send({"type": "read.mark", "conversation": conv, "seq": 2, "id": "r1"})
    for client in (b, c):
        upd = await client.expect("read.updated")
        assert upd == {"type": "read.updated", "conversation": conv, "user": w.c1.user.id, "seq": 2}
    assert await unread(w.c1.token) == ({conv: 2, w.conv["b2"]: 1}, 3, 3)
    # Markers never move backward.
    await c.send({"type": "read.mark", "conversation": conv, "seq": 1})
    assert (await b.expect("read.updated"))["seq"] == 2
    # Beyond the last message: refused.
    await c.send({"type": "read.mark", "conversation": conv, "seq": 99, "id": "r2"})
    err = await c.expect("error", id="r2")
    assert err["code"] == "invalid_input"
    # Over HTTP too, and the beneficiary sees the counsellor's marker as peer_read.
    r = await api(server, "POST", f"/api/conversations/{conv}/read", w.c1.token, {"seq": 4})
    assert r.json() == {"seq": 4}
    assert (await b.expect("read.updated"))["seq"] == 4
    assert await unread(w.c1.token) == ({conv: 0, w.conv["b2"]: 1}, 1, 1)
    mine = (await api(server, "GET", "/api/conversations", w.b1.token)).json()["conversations"][0]
    assert mine["peer_read"] == 4
    assert mine["read"] == 4
    # b2 is not a member of b1's conversation: it saw no read.updated.
    assert of_type(await barrier(b2), "read.updated") == []
    for client in (b, c, b2):
        await client.close()


# ---------------------------------------------------------------- typing and presence


async def test_typing_goes_to_the_other_member_only(server: ServerInfo) -> None:
    svc = server.services
    w = await fast_world(svc)
    conv = w.conv["b1"]
    b = await WsClient.connect(server, w.b1.token)
    b_other = await WsClient.connect(server, (await open_session(svc, w.b1.user)).token)
    c = await WsClient.connect(server, w.c1.token)
    b2 = await WsClient.connect(server, w.b2.token)
    c2 = await WsClient.connect(server, w.c2.token)
    await b.send({"type": "typing.set", "conversation": conv, "typing": True})
    got = await c.expect("typing")
    assert got == {"type": "typing", "conversation": conv, "user": w.b1.user.id, "typing": True}
    await b.send({"type": "typing.set", "conversation": conv, "typing": False})
    assert (await c.expect("typing"))["typing"] is False
    for client in (b, b_other, b2, c2):
        assert of_type(await barrier(client), "typing") == []
    for client in (b, b_other, c, b2, c2):
        await client.close()


async def test_presence_is_shown_to_the_other_member_only(server: ServerInfo) -> None:
    svc = server.services
    w = await fast_world(svc)
    c = await WsClient.connect(server, w.c1.token)
    b2 = await WsClient.connect(server, w.b2.token)
    c2 = await WsClient.connect(server, w.c2.token)
    # b2 sees its counsellor online (c1 is its conversation's other member)...
    summary = (await api(server, "GET", "/api/conversations", w.b2.token)).json()
    assert summary["conversations"][0]["peer_online"] is True
    # ... and c1 was told that b2 came online.
    assert (await c.expect("presence", user=w.b2.user.id))["online"] is True

    b = await WsClient.connect(server, w.b1.token)
    online = await c.expect("presence", user=w.b1.user.id)
    assert online["online"] is True
    assert online["last_seen"] is None
    lst = (await api(server, "GET", "/api/conversations", w.c1.token)).json()["conversations"]
    by_id = {s["id"]: s for s in lst}
    assert by_id[w.conv["b1"]]["peer_online"] is True
    assert by_id[w.conv["b2"]]["peer_online"] is True

    # A second device going away does not make b1 offline.
    second = await WsClient.connect(server, (await open_session(svc, w.b1.user)).token)
    await second.close()

    async def second_gone() -> bool:
        pres = (await svc.presence.presence([w.b1.user.id], time.time()))[w.b1.user.id]
        return pres.last_seen is not None

    await wait_for(second_gone, what="the second device's disconnection")
    assert (await svc.presence.presence([w.b1.user.id], time.time()))[w.b1.user.id].online
    before = time.time()
    await b.close()
    offline = await c.expect("presence", user=w.b1.user.id, online=False)
    assert before - 1 <= offline["last_seen"] <= time.time() + 1
    lst = (await api(server, "GET", "/api/conversations", w.c1.token)).json()["conversations"]
    s1 = next(s for s in lst if s["id"] == w.conv["b1"])
    assert s1["peer_online"] is False
    assert s1["peer_last_seen"] == offline["last_seen"]
    # Only one offline event, after the last connection closed.
    assert of_type(await barrier(c), "presence") == []
    # Third parties never hear about b1.
    for client in (b2, c2):
        frames = await barrier(client)
        assert [f for f in of_type(frames, "presence") if f["user"] == w.b1.user.id] == []
    b2_view = (await api(server, "GET", "/api/conversations", w.b2.token)).json()
    assert w.b1.user.id not in json.dumps(b2_view)
    for client in (c, b2, c2):
        await client.close()


# ---------------------------------------------------------------- message types


async def test_unknown_and_system_message_types_are_refused(server: ServerInfo) -> None:
    svc = server.services
    w = await fast_world(svc)
    conv = w.conv["b1"]
    b = await WsClient.connect(server, w.b1.token)
    c = await WsClient.connect(server, w.c1.token)
    for msg_type in ("sticker", "system.epoch_rotated", "system.counsellor_changed", "TEXT"):
        err = await b.send_text(conv, "x", msg_type=msg_type)
        assert err["type"] == "error"
        assert err["code"] == "unknown_message_type", msg_type
    bad_meta: list[tuple[str, dict[str, Any]]] = [
        ("text", {"anything": 1}),
        ("offer", {"kind": "lottery"}),
        ("offer", {}),
        ("appointment", {"event": "created", "starts_at": "tomorrow"}),
        ("action", {"event": "created", "status": "lost"}),
        ("edit", {"target_seq": True}),
        ("attachment", {"size": 1234}),
        ("attachment", {"blob": "short", "size": 3}),
    ]
    for msg_type, meta in bad_meta:
        err = await b.send_text(conv, "x", msg_type=msg_type, meta=meta)
        assert err["code"] == "invalid_input", (msg_type, meta)
    assert await svc.messages.last_seq(conv) == 0
    assert of_type(await barrier(c), "message.created") == []
    good: list[tuple[str, dict[str, Any]]] = [
        ("offer", {"kind": "alternance"}),
        (
            "action",
            {"item": "act-0001", "event": "created", "status": "todo", "due": int(time.time()) + 9},
        ),
        ("action", {"item": "act-0001", "event": "status_changed", "status": "done"}),
        ("edit", {"target_seq": 1}),
        ("delete", {"target_seq": 1}),
    ]
    for msg_type, meta in good:
        ack = await b.send_text(conv, "x", msg_type=msg_type, meta=meta)
        assert ack["type"] == "ack", (msg_type, ack)
    got = of_type(await barrier(c), "message.created")
    assert [(f["message"]["msg_type"], f["message"]["meta"]) for f in got] == good
    await b.close()
    await c.close()


async def test_ping_pong_and_binary_frames(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    c = await WsClient.connect(server, w.c1.token)
    await c.send({"type": "ping", "id": "p1"})
    assert await c.expect("pong") == {"type": "pong", "id": "p1"}
    await c.send({"type": "ping"})
    assert (await c.expect("pong"))["id"] is None
    # A binary frame holding the same JSON is accepted.
    await c.ws.send(json.dumps({"type": "ping", "id": "bin"}).encode())
    assert (await c.expect("pong"))["id"] == "bin"
    await c.close()


async def test_websocket_handshake_only_on_ws_path(server: ServerInfo) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(server.ws.replace("/ws", "/nowhere"))
    assert info.value.response.status_code in (403, 404)
