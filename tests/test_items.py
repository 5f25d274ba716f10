"""Items of the thread (actions, appointments), notices, edits and deletes, on a real server.

Every refusal of docs/protocol.md ("Items") gets its code and stores
nothing; ``GET /api/conversations/{id}/items`` folds the events and answers
members only; a summary carries the conversation's last message.
"""

from __future__ import annotations

import time
from typing import Any

from tests.helpers import ServerInfo, WsClient, api, barrier, fast_world, of_type

DAY = 86400


def _soon(days: float = 1) -> int:
    return int(time.time() + days * DAY)


async def _refused(
    client: WsClient, server: ServerInfo, conv: str, code: str, **extra: Any
) -> None:
    before = await server.services.messages.last_seq(conv)
    reply = await client.send_text(conv, "corps chiffré", **extra)
    assert (reply["type"], reply["code"]) == ("error", code), (extra, reply)
    assert reply["message"]
    assert await server.services.messages.last_seq(conv) == before


async def _ok(client: WsClient, conv: str, client_id: str | None = None, **extra: Any) -> int:
    reply = await client.send_text(conv, "corps chiffré", client_id=client_id, **extra)
    assert reply["type"] == "ack", (extra, reply)
    seq: int = reply["seq"]
    return seq


async def test_an_action_is_folded_from_its_events_and_refuses_what_does_not_follow(
    server: ServerInfo,
) -> None:
    w = await fast_world(server.services)
    conv, other = w.conv["b1"], w.conv["b3"]
    c = await WsClient.connect(server, w.c1.token)
    b = await WsClient.connect(server, w.b1.token)
    b3 = await WsClient.connect(server, w.b3.token)
    try:
        created = {"item": "act-cv-0001", "event": "created", "status": "todo", "due": _soon(7)}
        await _ok(c, conv, client_id="act-cv-0001", msg_type="action", meta=created)
        # The same creation resent (same client_id): the first ack again, not item_exists.
        again = await c.send_text(
            conv, "x", client_id="act-cv-0001", msg_type="action", meta=created
        )
        assert again["type"] == "ack"
        assert again["duplicate"] is True
        await _refused(c, server, conv, "item_exists", msg_type="action", meta=created)
        await _ok(b, conv, msg_type="action", meta={"item": "act-cv-0001", "event": "commented"})
        done = {"item": "act-cv-0001", "event": "status_changed", "status": "done"}
        await _ok(b, conv, msg_type="action", meta=done)
        # done -> done, done -> cancelled: no such transition.
        await _refused(b, server, conv, "invalid_transition", msg_type="action", meta=done)
        await _refused(
            c,
            server,
            conv,
            "invalid_transition",
            msg_type="action",
            meta=done | {"status": "cancelled"},
        )
        # An event for an item of another conversation, or of another kind.
        await _refused(
            b3, server, other, "unknown_item", msg_type="action", meta=done | {"status": "todo"}
        )
        await _refused(
            c,
            server,
            conv,
            "unknown_item",
            msg_type="appointment",
            meta={"item": "act-cv-0001", "event": "cancelled"},
        )
        # Impossible dates: before creation, more than two years ahead.
        for due in (_soon(-2), _soon(800)):
            await _refused(
                c,
                server,
                conv,
                "invalid_date",
                msg_type="action",
                meta=created | {"item": "act-other-01", "due": due},
            )
        await _refused(
            c,
            server,
            conv,
            "invalid_transition",
            msg_type="action",
            meta=created | {"item": "act-other-02", "status": "cancelled"},
        )
        # Missing or foreign fields are refused before anything is read.
        await _refused(
            c,
            server,
            conv,
            "invalid_input",
            msg_type="action",
            meta={"item": "act-cv-0001", "event": "status_changed"},
        )
        await _refused(
            c,
            server,
            conv,
            "invalid_input",
            msg_type="action",
            meta={"item": "court", "event": "commented"},
        )
        await _refused(
            c,
            server,
            conv,
            "invalid_input",
            msg_type="action",
            meta={"item": "act-cv-0001", "event": "commented", "status": "todo"},
        )
        await _refused(
            c,
            server,
            conv,
            "invalid_input",
            msg_type="action",
            meta={"item": "act-cv-0001", "event": "deleted"},
        )
        # Oversized: an item id longer than 64 characters, a body over MAX_BODY_BYTES.
        await _refused(
            c,
            server,
            conv,
            "invalid_input",
            msg_type="action",
            meta=created | {"item": "a" * 65},
        )
        before = await server.services.messages.last_seq(conv)
        big = await c.send_text(
            conv,
            "x" * (server.services.settings.max_body_bytes + 1),
            msg_type="action",
            meta=created | {"item": "act-big-0001"},
        )
        assert (big["type"], big["code"]) == ("error", "body_too_large")
        assert await server.services.messages.last_seq(conv) == before

        answer = await api(server, "GET", f"/api/conversations/{conv}/items", w.b1.token)
        assert answer.status_code == 200
        (item,) = answer.json()["items"]
        assert item["kind"] == "action"
        assert item["id"] == "act-cv-0001"
        assert item["status"] == "done"
        assert item["due"] == created["due"]
        assert item["last_event"] == "status_changed"
        assert item["created_by"] == w.c1.user.id
        assert answer.json()["notice"] is None
    finally:
        for client in (c, b, b3):
            await client.close()


async def test_appointments_roles_dates_and_cancellation(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    c = await WsClient.connect(server, w.c1.token)
    b = await WsClient.connect(server, w.b1.token)
    try:
        rdv = {"item": "rdv-0000001", "event": "created", "starts_at": _soon(3)}
        await _refused(b, server, conv, "forbidden", msg_type="appointment", meta=rdv)
        await _refused(
            c,
            server,
            conv,
            "invalid_date",
            msg_type="appointment",
            meta=rdv | {"starts_at": _soon(-1)},
        )
        await _refused(
            c,
            server,
            conv,
            "invalid_date",
            msg_type="appointment",
            meta=rdv | {"starts_at": _soon(800)},
        )
        await _refused(
            c,
            server,
            conv,
            "invalid_input",
            msg_type="appointment",
            meta={"item": "rdv-0000001", "event": "created"},
        )
        await _ok(c, conv, msg_type="appointment", meta=rdv)
        moved = {"item": "rdv-0000001", "event": "changed", "starts_at": _soon(4)}
        await _ok(c, conv, msg_type="appointment", meta=moved)
        answered = {"item": "rdv-0000001", "event": "answered"}
        await _refused(c, server, conv, "forbidden", msg_type="appointment", meta=answered)
        await _ok(b, conv, msg_type="appointment", meta=answered)
        await _ok(
            c, conv, msg_type="appointment", meta={"item": "rdv-0000001", "event": "cancelled"}
        )
        for meta in (answered, moved, {"item": "rdv-0000001", "event": "cancelled"}):
            sender = b if meta is answered else c
            await _refused(
                sender, server, conv, "invalid_transition", msg_type="appointment", meta=meta
            )
        items = (await api(server, "GET", f"/api/conversations/{conv}/items", w.c1.token)).json()
        (item,) = items["items"]
        assert (item["kind"], item["status"], item["starts_at"]) == (
            "appointment",
            "cancelled",
            moved["starts_at"],
        )
        assert item["last_event"] == "cancelled"
    finally:
        await c.close()
        await b.close()


async def test_offers_notices_and_unknown_kinds(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    c = await WsClient.connect(server, w.c1.token)
    b = await WsClient.connect(server, w.b1.token)
    try:
        await _refused(b, server, conv, "unknown_message_type", msg_type="sondage")
        await _refused(b, server, conv, "invalid_input", msg_type="offer", meta={"kind": "cdi"})
        await _ok(b, conv, msg_type="offer", meta={"kind": "service_civique"})
        notice = {"starts_at": _soon(-1), "ends_at": _soon(5)}
        await _refused(b, server, conv, "forbidden", msg_type="notice", meta=notice)
        await _refused(
            c,
            server,
            conv,
            "invalid_date",
            msg_type="notice",
            meta={"starts_at": _soon(2), "ends_at": _soon(1)},
        )
        await _refused(
            c,
            server,
            conv,
            "invalid_date",
            msg_type="notice",
            meta={"starts_at": _soon(-3), "ends_at": _soon(-2)},
        )
        await _refused(
            c,
            server,
            conv,
            "invalid_date",
            msg_type="notice",
            meta={"starts_at": _soon(1), "ends_at": _soon(900)},
        )
        seq = await _ok(c, conv, msg_type="notice", meta=notice)
        got = (await api(server, "GET", f"/api/conversations/{conv}/items", w.b1.token)).json()
        assert got["notice"]["seq"] == seq
        assert got["notice"]["ends_at"] == notice["ends_at"]
        # Lifted early: a notice that ends now replaces it.
        now = int(time.time())
        await _ok(c, conv, msg_type="notice", meta={"starts_at": now, "ends_at": now})
        got = (await api(server, "GET", f"/api/conversations/{conv}/items", w.b1.token)).json()
        assert got["notice"] is None
    finally:
        await c.close()
        await b.close()


async def test_edits_and_deletes_of_ones_own_messages_only(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    c = await WsClient.connect(server, w.c1.token)
    b = await WsClient.connect(server, w.b1.token)
    try:
        mine = await _ok(b, conv)
        theirs = await _ok(c, conv)
        action = await _ok(
            b,
            conv,
            msg_type="action",
            meta={"item": "act-edit-01", "event": "created", "status": "todo", "due": _soon(2)},
        )
        await _refused(b, server, conv, "unknown_target", msg_type="edit", meta={"target_seq": 99})
        await _refused(
            b, server, conv, "not_own_message", msg_type="edit", meta={"target_seq": theirs}
        )
        await _refused(
            b, server, conv, "not_own_message", msg_type="delete", meta={"target_seq": theirs}
        )
        await _refused(
            b, server, conv, "not_editable", msg_type="edit", meta={"target_seq": action}
        )
        await _refused(b, server, conv, "invalid_input", msg_type="edit", meta={"target_seq": 0})
        edit = await _ok(b, conv, msg_type="edit", meta={"target_seq": mine})
        await _refused(b, server, conv, "not_editable", msg_type="edit", meta={"target_seq": edit})
        await _ok(b, conv, client_id="del-0001", msg_type="delete", meta={"target_seq": mine})
        # The delete resent is answered as a duplicate; a second delete or edit is refused.
        again = await b.send_text(
            conv, "x", client_id="del-0001", msg_type="delete", meta={"target_seq": mine}
        )
        assert again["duplicate"] is True
        await _refused(
            b, server, conv, "not_editable", msg_type="delete", meta={"target_seq": mine}
        )
        await _refused(b, server, conv, "not_editable", msg_type="edit", meta={"target_seq": mine})
        # The counsellor sees each change live, and the list's summary ends with the delete.
        got = of_type(await barrier(c), "message.created")
        assert [f["message"]["msg_type"] for f in got][-2:] == ["edit", "delete"]
        summaries = (await api(server, "GET", "/api/conversations", w.c1.token)).json()
        (summary,) = [s for s in summaries["conversations"] if s["id"] == conv]
        assert summary["last_message"]["msg_type"] == "delete"
        assert summary["last_message"]["meta"] == {"target_seq": mine}
        assert summary["last_message"]["sender"] == w.b1.user.id
    finally:
        await c.close()
        await b.close()


async def test_items_api_is_for_members_only(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    for token in (w.c2.token, w.b2.token, w.sup.token, w.other_sup.token):
        answer = await api(server, "GET", f"/api/conversations/{conv}/items", token)
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "not_member"
    missing = await api(server, "GET", "/api/conversations/nope/items", w.c1.token)
    assert missing.status_code == 403
    anonymous = await api(server, "GET", f"/api/conversations/{conv}/items")
    assert anonymous.status_code == 401
    empty = await api(server, "GET", f"/api/conversations/{conv}/items", w.c1.token)
    assert empty.json() == {"items": [], "notice": None}
    summaries = (await api(server, "GET", "/api/conversations", w.c1.token)).json()
    assert all(s["last_message"] is None for s in summaries["conversations"])
