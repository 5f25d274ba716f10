"""Pushes for stored messages, end to end: a real server, its worker, pywebpush, and the
test push service (VAPID and aes128gcm checked, payload decrypted)."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest

from chat_server.settings import Settings
from notifications.models import PushJob
from notifications.setup import build_worker
from notifications.store import PushStore
from notifications.worker import PushWorker
from tests.conftest import run_server, serve
from tests.helpers import Account, ServerInfo, WsClient, seed_world
from tests.push.pushservice import FakeDevice, TestPushService


def bearer(a: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {a.token}"}


async def subscribe(
    server: ServerInfo, who: Account, push: TestPushService, **extra: Any
) -> FakeDevice:
    """Register a new subscription of the test push service for ``who``'s device; no quiet
    hours unless ``extra`` says so (the default, 20:00-08:00 in Paris, would hold pushes)."""
    dev, info = push.subscribe()
    body = {"quiet_start": "00:00", "quiet_end": "00:00", **info, **extra}
    async with httpx.AsyncClient(base_url=server.http) as http:
        r = await http.post("/api/push/subscriptions", json=body, headers=bearer(who))
    assert r.status_code == 201, r.text
    return dev


async def wait_until(check: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def queued(server: ServerInfo) -> int:
    count, _ = await server.services.push.store.queue_stats(time.time())
    return count


async def test_a_stored_message_is_pushed_with_its_ciphertext(
    push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(push_server)
    dev = await subscribe(push_server, w.b1, push_service)
    c1 = await WsClient.connect(push_server, w.c1.token)
    body = b"\x8f\x01opaque ciphertext bytes"
    frame = {"body": base64.b64encode(body).decode()}
    ack = await c1.send_text(w.conv["b1"], "ignored", **frame)
    assert ack["type"] == "ack"
    [d] = await push_service.wait_for(1)
    assert d.sub_id == dev.sub_id
    data = d.json()
    assert data["v"] == 1
    assert data["kind"] == "message"
    assert data["conversation"] == w.conv["b1"]
    assert data["seq"] == ack["seq"]
    assert data["sender_name"] == "Claire"
    assert data["sender_role"] == "counsellor"
    msg = data["message"]
    assert base64.b64decode(msg["body"]) == body
    assert msg["seq"] == ack["seq"]
    assert msg["sender"] == w.c1.user.id
    # Headers pywebpush would not set by itself.
    assert d.headers["urgency"] == "high"
    assert int(d.headers["ttl"]) == push_server.settings.push_ttl_seconds
    assert len(d.headers["topic"]) == 32
    assert w.conv["b1"] not in d.headers["topic"]
    assert d.vapid_key == push_server.services.push.vapid.public_key
    assert push_service.problems == []
    # The sender's own devices get nothing; the job is gone once delivered.
    await wait_until(lambda: _zero(push_server))
    assert push_server.services.push.worker is not None
    assert push_server.services.push.worker.counters.sent == 1
    await c1.ws.close()


async def _zero(server: ServerInfo) -> bool:
    return await queued(server) == 0


async def test_each_push_gets_fresh_claims_for_its_own_push_service(
    push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(push_server)
    await subscribe(push_server, w.b1, push_service)
    await subscribe(push_server, w.b2, push_service)
    c1 = await WsClient.connect(push_server, w.c1.token)
    await c1.send_text(w.conv["b1"], "un")
    await c1.send_text(w.conv["b2"], "deux")
    got = await push_service.wait_for(2)
    assert {d.claims["aud"] for d in got} == {push_service.origin}
    assert all(d.claims["sub"] == push_server.settings.vapid_subject for d in got)
    await c1.ws.close()


async def test_subscription_api(push_server: ServerInfo, push_service: TestPushService) -> None:
    w = await seed_world(push_server)
    async with httpx.AsyncClient(base_url=push_server.http) as http:
        r = await http.get("/api/push/key")
        assert r.status_code == 200
        assert r.json()["public_key"] == push_server.services.push.vapid.public_key
        _dev, info = push_service.subscribe()
        r = await http.post("/api/push/subscriptions", json=info)
        assert r.status_code == 401
        bad = {**info, "keys": {"p256dh": "abc", "auth": info["keys"]["auth"]}}
        r = await http.post("/api/push/subscriptions", json=bad, headers=bearer(w.b1))
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_field")
        r = await http.post("/api/push/subscriptions", json={**info, "x": 1}, headers=bearer(w.b1))
        assert r.json()["error"]["code"] == "unknown_field"
        r = await http.post(
            "/api/push/subscriptions", json={**info, "quiet_start": "25:00"}, headers=bearer(w.b1)
        )
        assert r.json()["error"]["code"] == "invalid_field"
        r = await http.post(
            "/api/push/subscriptions",
            json={**info, "muted_conversations": [w.conv["b3"]]},
            headers=bearer(w.b1),
        )
        assert r.status_code == 403
        r = await http.post("/api/push/subscriptions", json=info, headers=bearer(w.b1))
        assert r.status_code == 201
        sub = r.json()["subscription"]
        assert sub["device_id"] == w.b1.device_id
        assert "keys" not in sub
        assert "endpoint" not in sub
        # The same browser subscription registered again is one record.
        r = await http.post("/api/push/subscriptions", json=info, headers=bearer(w.b1))
        assert r.status_code == 201
        r = await http.get("/api/push/subscriptions", headers=bearer(w.b1))
        assert r.json()["current"] == sub["id"]
        assert [s["id"] for s in r.json()["subscriptions"]] == [sub["id"]]
        r = await http.put(
            "/api/push/preferences",
            json={"muted_types": ["actions"], "quiet_start": "22:00", "quiet_end": "07:30"},
            headers=bearer(w.b1),
        )
        assert r.status_code == 200
        assert r.json()["subscription"]["muted_types"] == ["actions"]
        r = await http.put("/api/push/preferences", json={}, headers=bearer(w.b2))
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_subscribed")
        r = await http.delete(f"/api/push/subscriptions/{sub['id']}", headers=bearer(w.b2))
        assert r.status_code == 404
        r = await http.delete("/api/push/subscriptions", headers=bearer(w.b1))
        assert r.json()["removed"] == 1
        r = await http.get("/api/push/subscriptions", headers=bearer(w.b1))
        assert r.json() == {"subscriptions": [], "current": None}


async def test_loopback_endpoints_refused_outside_the_test_setting(
    settings: Settings, push_service: TestPushService
) -> None:
    async with serve(settings) as srv:
        w = await seed_world(srv)
        _, info = push_service.subscribe()
        async with httpx.AsyncClient(base_url=srv.http) as http:
            r = await http.post("/api/push/subscriptions", json=info, headers=bearer(w.b1))
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "endpoint_refused"
            https = {**info, "endpoint": info["endpoint"].replace("http://", "https://")}
            r = await http.post("/api/push/subscriptions", json=https, headers=bearer(w.b1))
            assert r.json()["error"]["code"] == "endpoint_refused"
            r = await http.get("/api/push/subscriptions", headers=bearer(w.b1))
            assert r.json()["subscriptions"] == []


async def test_logout_deletes_the_device_subscription(
    push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(push_server)
    await subscribe(push_server, w.b1, push_service)
    await subscribe(push_server, w.b2, push_service)
    store = push_server.services.push.store
    async with httpx.AsyncClient(base_url=push_server.http) as http:
        r = await http.post("/api/logout", headers=bearer(w.b1))
        assert r.status_code == 200
        assert await store.subscriptions_of([w.b1.user.id]) == []
        r = await http.post("/api/logout-all", headers=bearer(w.b2))
        assert await store.subscriptions_of([w.b2.user.id]) == []


class ObservingStore:
    """Delegates to the real push store; at each job write, records whether the message is
    already readable from the message store (it must be: written after the durable write)."""

    def __init__(self, inner: PushStore, server: ServerInfo) -> None:
        self._inner = inner
        self._server = server
        self.seen: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def add_job(self, job: PushJob) -> bool:
        assert job.conversation_id is not None
        assert job.seq is not None
        found = await self._server.services.messages.messages_after(
            job.conversation_id, job.seq - 1, 1
        )
        self.seen.append(bool(found) and found[0].seq == job.seq)
        return await self._inner.add_job(job)


async def test_nothing_is_queued_before_the_durable_write(
    push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(push_server)
    await subscribe(push_server, w.b1, push_service)
    outbox = push_server.services.push.outbox
    observing = ObservingStore(outbox._store, push_server)
    outbox._store = observing
    c1 = await WsClient.connect(push_server, w.c1.token)
    for i in range(3):
        assert (await c1.send_text(w.conv["b1"], f"m{i}"))["type"] == "ack"
    # Refused messages write no job: not a member, unknown type.
    assert (await c1.send_text(w.conv["b3"], "no"))["type"] == "error"
    assert (await c1.send_text(w.conv["b1"], "no", msg_type="nope"))["type"] == "error"
    # A resend of a stored client id writes nothing new.
    first = await c1.send_text(w.conv["b1"], "again", client_id="same-id")
    again = await c1.send_text(w.conv["b1"], "again", client_id="same-id")
    assert first["seq"] == again["seq"]
    await push_service.wait_for(4)
    await asyncio.sleep(0.3)
    assert observing.seen == [True] * 4
    assert len(push_service.for_device(next(iter(push_service.devices.values())))) == 4
    await c1.ws.close()


async def test_catch_up_after_a_worker_restart_loses_no_job(
    push_settings: Settings, push_service: TestPushService
) -> None:
    settings = replace(push_settings, push_worker="off")
    async for srv in run_server(settings):
        w = await seed_world(srv)
        await subscribe(srv, w.b1, push_service)
        await subscribe(srv, w.b2, push_service)
        c1 = await WsClient.connect(srv, w.c1.token)
        for i in range(10):
            await c1.send_text(w.conv["b1"], f"b1 {i}")
            await c1.send_text(w.conv["b2"], f"b2 {i}")
        await c1.ws.close()
        assert await queued(srv) == 20
        assert push_service.deliveries == []
        svc = srv.services
        store = svc.push.store
        # A worker claims a batch and dies before sending anything: its lease runs out.
        lease = 1.0
        claimed = await store.claim_jobs(time.time(), lease, 5)
        assert len(claimed) == 5
        worker = build_worker(settings, store, svc.messages, svc.accounts_store, svc.push.vapid)
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping))
        try:
            got = await push_service.wait_for(20, timeout=20)
            await _run_until_idle(worker, srv)
        finally:
            stopping.set()
            await asyncio.wait_for(task, 10)
            await worker.close()
        per_seq = {(d.json()["conversation"], d.json()["seq"]) for d in got}
        assert len(per_seq) == 20 == len(got)
        assert worker.counters.sent == 20


async def _run_until_idle(worker: PushWorker, srv: ServerInfo, timeout: float = 15) -> None:
    async def idle() -> bool:
        return await queued(srv) == 0

    await wait_until(idle, timeout)


async def test_410_and_404_prune_the_subscription(
    push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(push_server)
    gone = await subscribe(push_server, w.b1, push_service)
    push_service.answer(gone, 410)
    unknown = await subscribe(push_server, w.b2, push_service)
    del push_service.devices[unknown.sub_id]  # the push service forgot it: 404
    c1 = await WsClient.connect(push_server, w.c1.token)
    await c1.send_text(w.conv["b1"], "un")
    await c1.send_text(w.conv["b2"], "deux")
    store = push_server.services.push.store

    async def pruned() -> bool:
        return await store.subscriptions_of([w.b1.user.id, w.b2.user.id]) == []

    await wait_until(pruned)
    worker = push_server.services.push.worker
    assert worker is not None
    assert worker.counters.pruned == 2
    await _run_until_idle(worker, push_server)
    # Nothing is sent to a pruned subscription afterwards.
    await c1.send_text(w.conv["b1"], "trois")
    await asyncio.sleep(0.5)
    assert len(push_service.deliveries) == 1
    await c1.ws.close()


async def test_429_retry_after_and_5xx_backoff(
    push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(push_server)
    dev = await subscribe(push_server, w.b1, push_service)
    push_service.answer(dev, 429, "1")
    push_service.answer(dev, 503)
    c1 = await WsClient.connect(push_server, w.c1.token)
    await c1.send_text(w.conv["b1"], "un")
    [_ok] = await push_service.wait_for(1)
    tries = push_service.for_device(dev, accepted_only=False)
    assert [d.status for d in tries] == [429, 503, 201]
    # Retry-After (1 s) was honoured, then the backoff (0.2 s * 2).
    assert tries[1].at - tries[0].at >= 0.95
    assert tries[2].at - tries[1].at >= 0.35
    worker = push_server.services.push.worker
    assert worker is not None
    assert worker.counters.retried == 2
    assert worker.counters.sent == 1
    await c1.ws.close()


async def test_5xx_gives_up_after_the_last_attempt(
    push_settings: Settings, push_service: TestPushService
) -> None:
    async with serve(replace(push_settings, push_max_attempts=3)) as srv:
        w = await seed_world(srv)
        dev = await subscribe(srv, w.b1, push_service)
        for _ in range(5):
            push_service.answer(dev, 500)
        c1 = await WsClient.connect(srv, w.c1.token)
        await c1.send_text(w.conv["b1"], "un")
        worker = srv.services.push.worker
        assert worker is not None
        await _run_until_idle(worker, srv)
        assert [d.status for d in push_service.for_device(dev, False)] == [500, 500, 500]
        assert worker.counters.failed == {"500": 1}
        assert worker.counters.sent == 0
        await c1.ws.close()


async def test_413_falls_back_to_the_short_payload(
    push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(push_server)
    dev = await subscribe(push_server, w.b1, push_service)
    push_service.answer(dev, 413)
    c1 = await WsClient.connect(push_server, w.c1.token)
    await c1.send_text(w.conv["b1"], "un")
    [ok] = await push_service.wait_for(1)
    tries = push_service.for_device(dev, accepted_only=False)
    assert [d.status for d in tries] == [413, 201]
    assert "message" in tries[0].json()
    assert "message" not in ok.json()
    assert ok.json()["kind"] == "message"
    await c1.ws.close()


async def test_a_message_too_large_for_one_record_gets_the_short_payload(
    push_server: ServerInfo, push_service: TestPushService
) -> None:
    w = await seed_world(push_server)
    await subscribe(push_server, w.b1, push_service)
    c1 = await WsClient.connect(push_server, w.c1.token)
    await c1.send_text(w.conv["b1"], "x" * 5000)
    [ok] = await push_service.wait_for(1)
    assert "message" not in ok.json()
    assert push_service.problems == []
    await c1.ws.close()


@pytest.mark.parametrize("reader", ["b1"])
async def test_no_push_once_the_recipient_has_read_it(
    push_settings: Settings, push_service: TestPushService, reader: str
) -> None:
    async with serve(replace(push_settings, push_worker="off")) as srv:
        w = await seed_world(srv)
        await subscribe(srv, w.b1, push_service)
        c1 = await WsClient.connect(srv, w.c1.token)
        ack = await c1.send_text(w.conv["b1"], "vu")
        await srv.services.messages.set_read(w.conv["b1"], w.b1.user.id, ack["seq"])
        svc = srv.services
        worker = build_worker(
            srv.settings, svc.push.store, svc.messages, svc.accounts_store, svc.push.vapid
        )
        assert await worker.run_once() == 1
        await worker.close()
        assert push_service.deliveries == []
        assert worker.counters.skipped == 1
        assert await queued(srv) == 0
        await c1.ws.close()
