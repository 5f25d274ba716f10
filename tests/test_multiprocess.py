"""Two real server processes sharing one store and one Redis: everything crosses between them."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from chat_server.storage.embedded import free_port
from tests.helpers import (
    ServerProcess,
    WsClient,
    api,
    body_text,
    clean_env,
    fast_world,
    open_session,
    seeded_services,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis]


async def test_two_processes_share_messages_reads_typing_and_presence(
    mongo_url: str, redis_url: str, db_name: str, tmp_path: Path
) -> None:
    env = clean_env(
        MONGODB_URL=mongo_url,
        MONGODB_DB=db_name,
        REDIS_URL=redis_url,
        REQUIRE_E2EE="false",
        DATA_DIR=str(tmp_path),
        LOG_LEVEL="DEBUG",
    )
    a = ServerProcess({**env, "PORT": str(free_port())}, tmp_path / "a.log")
    b = ServerProcess({**env, "PORT": str(free_port())}, tmp_path / "b.log")
    secret = "plaintext " + secrets.token_hex(8)
    async with seeded_services(mongo_url, db_name) as svc:
        w = await fast_world(svc)
        conv = w.conv["b1"]
        c1_tablet = await open_session(svc, w.c1.user, "tablet")
        clients: list[WsClient] = []
        try:
            await a.start()
            await b.start()
            counsellor = await WsClient.connect(a.info, w.c1.token)  # on A
            tablet = await WsClient.connect(b.info, c1_tablet.token)  # the same user on B
            clients += [counsellor, tablet]

            # Presence crosses: the beneficiary comes online on B, the counsellor on A hears it.
            ben = await WsClient.connect(b.info, w.b1.token)
            clients.append(ben)
            online = await counsellor.expect("presence", timeout=10, user=w.b1.user.id)
            assert online["online"] is True
            lst = (await api(a.info, "GET", "/api/conversations", w.c1.token)).json()
            s1 = next(s for s in lst["conversations"] if s["id"] == conv)
            assert s1["peer_online"] is True

            # Messages cross both ways, and reach the sender's other device on the other process.
            ack = await ben.send_text(conv, secret)
            assert ack["seq"] == 1
            for client in (counsellor, tablet):
                got = await client.expect("message.created", timeout=10)
                assert body_text(got) == secret
            # Read markers cross (to both members, the other process included).
            await counsellor.send({"type": "read.mark", "conversation": conv, "seq": 1})
            upd = await ben.expect("read.updated", timeout=10)
            assert (upd["user"], upd["seq"]) == (w.c1.user.id, 1)
            assert (await tablet.expect("read.updated", timeout=10))["seq"] == 1
            ack = await counsellor.send_text(conv, "réponse")
            assert ack["seq"] == 2
            assert body_text(await ben.expect("message.created", timeout=10)) == "réponse"
            assert body_text(await tablet.expect("message.created", timeout=10)) == "réponse"

            # Typing crosses.
            await ben.send({"type": "typing.set", "conversation": conv, "typing": True})
            typing = await counsellor.expect("typing", timeout=10)
            assert (typing["user"], typing["typing"]) == (w.b1.user.id, True)

            # History is the same whichever process answers.
            for proc in (a, b):
                r = await api(proc.info, "GET", f"/api/conversations/{conv}/messages", w.b1.token)
                assert [m["seq"] for m in r.json()["messages"]] == [1, 2]

            # Going offline on B is seen on A.
            await ben.close()
            clients.remove(ben)
            offline = await counsellor.expect(
                "presence", timeout=10, user=w.b1.user.id, online=False
            )
            assert offline["last_seen"] is not None
        finally:
            for client in clients:
                await client.close()
            await a.terminate()
            await b.terminate()

    for proc in (a, b):
        text = proc.log()
        assert text
        for line in text.splitlines():
            json.loads(line)
        for leaked in (secret, w.c1.token, w.b1.token, c1_tablet.token):
            assert leaked not in text
