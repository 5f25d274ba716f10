"""Who may do what: every HTTP endpoint and every WebSocket frame against every relationship.

The target is conversation ``b1`` (beneficiary b1, counsellor c1). Its members are
the beneficiary and the current counsellor; everybody else (another beneficiary,
another counsellor of the same structure, supervisors of this or another structure)
gets ``not_member`` and nothing is stored. One server serves the whole module.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import websockets

from chat_server.settings import Settings
from tests.conftest import serve
from tests.helpers import (
    Account,
    ServerInfo,
    World,
    WsClient,
    api,
    barrier,
    close_code,
    fast_world,
    of_type,
    raw_ws,
    send_frame,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

ACTORS = [
    "beneficiary_own",
    "beneficiary_other",
    "counsellor_own",
    "counsellor_other",
    "supervisor_same",
    "supervisor_other",
    "unauthenticated",
]
MEMBERS = {"beneficiary_own", "counsellor_own"}


class Env:
    """The module's server and accounts."""

    def __init__(self, server: ServerInfo, world: World) -> None:
        self.server = server
        self.w = world
        self.conv = world.conv["b1"]

    def account(self, actor: str) -> Account | None:
        return {
            "beneficiary_own": self.w.b1,
            "beneficiary_other": self.w.b2,
            "counsellor_own": self.w.c1,
            "counsellor_other": self.w.c2,
            "supervisor_same": self.w.sup,
            "supervisor_other": self.w.other_sup,
        }.get(actor)

    def token(self, actor: str) -> str | None:
        acc = self.account(actor)
        return acc.token if acc else None

    async def snapshot(self) -> tuple[int, dict[str, int], bool]:
        svc = self.server.services
        conv = await svc.messages.get_conversation(self.conv)
        assert conv is not None
        markers = (await svc.messages.read_markers([self.conv]))[self.conv]
        return await svc.messages.last_seq(self.conv), markers, conv.flagged


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        mongodb_url=mongo_url,
        mongodb_db="t_authz_" + secrets.token_hex(4),
        data_dir=Path(tmp_path_factory.mktemp("authz")),
        require_e2ee=False,
        auth_timeout_seconds=2.0,
        rate_burst=10_000,
    )
    async with serve(settings) as server:
        world = await fast_world(server.services)
        # One message so there is something to read, page and sync.
        ack = await _send_as(server, world.b1.token, world.conv["b1"], "first")
        assert ack["type"] == "ack"
        yield Env(server, world)


async def _send_as(server: ServerInfo, token: str, conv: str, text: str) -> dict[str, Any]:
    c = await WsClient.connect(server, token)
    try:
        return await c.send_text(conv, text)
    finally:
        await c.close()


def _expect_refused(r: Any, actor: str, code: str = "not_member") -> None:
    if actor == "unauthenticated":
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthenticated"
    else:
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == code


# ---------------------------------------------------------------- HTTP


@pytest.mark.parametrize("actor", ACTORS)
async def test_http_list(env: Env, actor: str) -> None:
    r = await api(env.server, "GET", "/api/conversations", env.token(actor))
    if actor == "unauthenticated":
        _expect_refused(r, actor)
        return
    assert r.status_code == 200
    ids = {s["id"] for s in r.json()["conversations"]}
    assert (env.conv in ids) is (actor in MEMBERS)
    if actor.startswith("supervisor"):
        assert ids == set()


@pytest.mark.parametrize("actor", ACTORS)
async def test_http_messages(env: Env, actor: str) -> None:
    r = await api(env.server, "GET", f"/api/conversations/{env.conv}/messages", env.token(actor))
    if actor in MEMBERS:
        assert r.status_code == 200
        assert r.json()["messages"][0]["seq"] == 1
    else:
        _expect_refused(r, actor)
        assert "messages" not in r.json()


@pytest.mark.parametrize("actor", ACTORS)
async def test_http_read(env: Env, actor: str) -> None:
    acc = env.account(actor)
    before = await env.snapshot()
    r = await api(
        env.server, "POST", f"/api/conversations/{env.conv}/read", env.token(actor), {"seq": 1}
    )
    after = await env.snapshot()
    if actor in MEMBERS:
        assert r.status_code == 200
        assert acc is not None
        assert after[1][acc.user.id] == 1
    else:
        _expect_refused(r, actor)
        assert after == before
        if acc is not None:
            assert acc.user.id not in after[1]


@pytest.mark.parametrize("actor", ACTORS)
async def test_http_flag(env: Env, actor: str) -> None:
    before = await env.snapshot()
    path = f"/api/conversations/{env.conv}/flag"
    r = await api(env.server, "POST", path, env.token(actor), {"flagged": not before[2]})
    after = await env.snapshot()
    if actor == "counsellor_own":
        assert r.status_code == 200
        assert after[2] is not before[2]
        # Put it back for the other cases.
        await api(env.server, "POST", path, env.token(actor), {"flagged": before[2]})
    else:
        # The beneficiary is a member but its role may not flag.
        _expect_refused(r, actor, "forbidden" if actor == "beneficiary_own" else "not_member")
        assert after == before


@pytest.mark.parametrize("actor", ACTORS)
async def test_http_create_beneficiary(env: Env, actor: str) -> None:
    login = "new_" + secrets.token_hex(4)
    r = await api(
        env.server,
        "POST",
        "/api/beneficiaries",
        env.token(actor),
        {"login": login, "display_name": "New One"},
    )
    created = await env.server.services.accounts_store.find_user_by_login(login)
    if actor.startswith("counsellor"):
        assert r.status_code == 201
        assert created is not None
        assert created.structure_id == env.w.structure_id
    else:
        _expect_refused(r, actor, "forbidden")
        assert created is None


@pytest.mark.parametrize("actor", ACTORS)
async def test_http_me(env: Env, actor: str) -> None:
    r = await api(env.server, "GET", "/api/me", env.token(actor))
    acc = env.account(actor)
    if acc is None:
        _expect_refused(r, actor)
        return
    assert r.status_code == 200
    assert r.json()["user"]["id"] == acc.user.id
    assert r.json()["device_id"] == acc.device_id


@pytest.mark.parametrize("actor", ACTORS)
async def test_http_people(env: Env, actor: str) -> None:
    """Names for a thread: one's own structure's staff; its beneficiaries for staff only."""
    w = env.w
    everyone = [w.b1, w.b2, w.c1, w.c2, w.sup, w.other_sup]
    ids = ",".join([a.user.id for a in everyone] + ["nobody"])
    r = await api(env.server, "GET", f"/api/people?ids={ids}", env.token(actor))
    acc = env.account(actor)
    if acc is None:
        _expect_refused(r, actor)
        return
    assert r.status_code == 200, r.text
    seen = {p["id"] for p in r.json()["people"]}
    staff = {w.c1.user.id, w.c2.user.id, w.sup.user.id}
    expected = {
        "beneficiary_own": staff | {w.b1.user.id},
        "beneficiary_other": staff | {w.b2.user.id},
        "counsellor_own": staff | {w.b1.user.id, w.b2.user.id},
        "counsellor_other": staff | {w.b1.user.id, w.b2.user.id},
        "supervisor_same": staff | {w.b1.user.id, w.b2.user.id},
        "supervisor_other": {w.other_sup.user.id},
    }[actor]
    assert seen == expected
    one = next(p for p in r.json()["people"] if p["id"] == acc.user.id)
    user = acc.user
    assert one == {"id": user.id, "display_name": user.display_name, "role": user.role.value}
    many = ",".join(f"x{i}" for i in range(51))
    r = await api(env.server, "GET", f"/api/people?ids={many}", env.token(actor))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_field"


# ---------------------------------------------------------------- WebSocket

FRAMES = ["message.send", "read.mark", "typing.set", "history.get", "conversation.sync"]


def _frame(kind: str, conv: str) -> dict[str, Any]:
    fid = "f" + secrets.token_hex(4)
    if kind == "message.send":
        return send_frame(conv, "hello " + fid, id=fid)
    extra: dict[str, dict[str, Any]] = {
        "read.mark": {"seq": 1},
        "typing.set": {"typing": True},
        "history.get": {"limit": 10},
        "conversation.sync": {"after": 0},
    }
    return {"type": kind, "id": fid, "conversation": conv, **extra[kind]}


REPLY = {
    "message.send": "ack",
    "read.mark": "read.updated",
    "typing.set": None,
    "history.get": "history",
    "conversation.sync": "sync",
}


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("kind", FRAMES)
async def test_ws_frame(env: Env, kind: str, actor: str) -> None:
    frame = _frame(kind, env.conv)
    token = env.token(actor)
    if token is None:
        # Without a session, no frame is served: the first frame must be auth.
        ws = await raw_ws(env.server)
        try:
            await ws.send(json.dumps(frame))
            err = json.loads(await ws.recv())
            assert err["code"] == "auth_required"
            assert await close_code(ws) == 4001
        finally:
            await ws.close()
        return

    # The members watch for anything the frame might cause.
    watchers = [
        await WsClient.connect(env.server, env.w.b1.token),
        await WsClient.connect(env.server, env.w.c1.token),
    ]
    client = await WsClient.connect(env.server, token)
    try:
        before = await env.snapshot()
        await client.send(frame)
        reply = REPLY[kind]
        if actor in MEMBERS:
            if reply is None:
                other = watchers[1] if actor == "beneficiary_own" else watchers[0]
                got = await other.expect("typing")
                assert got["conversation"] == env.conv
            else:
                match = {"id": frame["id"]} if kind != "read.mark" else {}
                got = await client.expect(reply, **match)
                assert got["conversation"] == env.conv
            after = await env.snapshot()
            if kind == "message.send":
                assert after[0] == before[0] + 1
        else:
            err = await client.expect("error", id=frame["id"])
            assert err["code"] == "not_member"
            await barrier(client)  # the connection stays open
            assert await env.snapshot() == before
            for watcher in watchers:
                frames = await barrier(watcher)
                for t in ("message.created", "typing", "read.updated"):
                    assert of_type(frames, t) == [], (t, frames)
    finally:
        for c in (client, *watchers):
            await c.close()


async def test_nonexistent_conversation_looks_like_not_member(env: Env) -> None:
    c = await WsClient.connect(env.server, env.w.c1.token)
    try:
        err = await c.send_text("no-such-conversation", "x")
        assert err["code"] == "not_member"
    finally:
        await c.close()
    r = await api(env.server, "GET", "/api/conversations/nope/messages", env.w.c1.token)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "not_member"


async def test_websocket_stays_unusable_without_auth(env: Env) -> None:
    # websockets raises on a closed connection: nothing after the refused first frame is served.
    ws = await raw_ws(env.server)
    await ws.send(json.dumps({"type": "ping"}))
    assert await close_code(ws) == 4001
    with pytest.raises(websockets.ConnectionClosed):
        await ws.send(json.dumps({"type": "ping"}))
    await ws.close()
