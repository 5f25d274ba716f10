"""``GET /metrics``: off by default; with ``METRICS_PORT`` it counts what the server did."""

from __future__ import annotations

from dataclasses import replace

import httpx
from prometheus_client.parser import text_string_to_metric_families

from chat_server.metrics import Metrics
from chat_server.sdk import Client
from chat_server.settings import Settings, load_settings
from tests.conftest import serve
from tests.helpers import PASSWORD, ServerInfo, WsClient, fast_world, seed_world, send_frame

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(srv: ServerInfo) -> Samples:
    server = srv.services.metrics_server
    assert server is not None
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return _get(after, name, **labels) - _get(before, name, **labels)


async def test_off_by_default_and_not_on_the_public_port(settings: Settings) -> None:
    assert load_settings({}).metrics_port is None
    async with serve(replace(settings, store="memory")) as srv:
        svc = srv.services
        assert svc.metrics_server is None
        assert not svc.metrics.enabled
        async with httpx.AsyncClient() as http:
            r = await http.get(srv.http + "/metrics", timeout=10)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"


async def test_counts_after_traffic(settings: Settings) -> None:
    async with serve(replace(settings, store="memory", metrics_port=0)) as srv:
        world = await fast_world(srv.services)
        conv = world.conv["b1"]
        before = await _scrape(srv)
        b = await WsClient.connect(srv, world.b1.token)
        c = await WsClient.connect(srv, world.c1.token)
        try:
            during = await _scrape(srv)
            assert _delta(before, during, "chat_connections") == 2
            assert _get(during, "chat_authenticated_users") >= 2
            await b.send(send_frame(conv, "bonjour", client_id="m-1"))
            ack = await b.expect("ack")
            await c.expect("message.created")
            await b.send(send_frame(conv, "bonjour", client_id="m-1"))  # a resend: duplicate
            dup = await b.expect("ack")
            assert dup["duplicate"] is True
            await c.send(
                {"type": "conversation.sync", "id": "s1", "conversation": conv, "after": 0}
            )
            sync = await c.expect("sync")
            assert sync["recovered"] is True
            await c.send({"type": "ping", "id": "p1"})
            await c.expect("pong")
            await c.ws.send("{not json")
            await c.expect("error")
            after = await _scrape(srv)
        finally:
            await b.close()
            await c.close()
        assert ack["seq"] == 1
        assert _delta(before, after, "chat_frames_in_total", type="message.send") == 2
        assert _delta(before, after, "chat_frames_in_total", type="ping") == 1
        assert _delta(before, after, "chat_frames_in_total", type="invalid") == 1
        assert _delta(before, after, "chat_frames_out_total", type="ack") == 2
        assert _delta(before, after, "chat_frames_out_total", type="message.created") >= 1
        assert _delta(before, after, "chat_frames_out_total", type="pong") == 1
        assert _delta(before, after, "chat_frames_out_total", type="sync") == 1
        assert _delta(before, after, "chat_messages_stored_total") == 1
        assert _delta(before, after, "chat_ack_latency_seconds_count") == 2
        assert _delta(before, after, "chat_resumes_total", recovered="true") == 1
        gone = await _scrape(srv)
        for _ in range(100):  # the server notices the closes on its own time
            if _delta(before, gone, "chat_connections") == 0:
                break
            gone = await _scrape(srv)
        assert _delta(before, gone, "chat_connections") == 0


async def test_signature_verification_time_after_signed_traffic(settings: Settings) -> None:
    async with serve(replace(settings, require_e2ee=True, metrics_port=0)) as srv:
        w = await seed_world(srv)
        before = await _scrape(srv)
        b = await Client.login(srv.http, "b1", PASSWORD)
        try:
            await b.connect()
            await b.send_text(w.conv["b1"], "Bonjour")
            await b.send_text(w.conv["b1"], "Bonjour encore")
        finally:
            await b.close()
        after = await _scrape(srv)
    assert _delta(before, after, "chat_signature_verify_seconds_count") >= 2
    assert _delta(before, after, "chat_signature_verify_seconds_sum") > 0
    assert _delta(before, after, "chat_messages_stored_total") >= 2


def test_the_counters_nobody_can_provoke_cheaply() -> None:
    from chat_server.metrics import DEPENDENCY_ERRORS, RESUMES, SLOW_CLOSES, gauge

    m = Metrics(True)
    slow = SLOW_CLOSES._value.get()
    m.slow_consumer()
    assert SLOW_CLOSES._value.get() == slow + 1
    store = DEPENDENCY_ERRORS.labels("store", "send")._value.get()
    m.dependency_error("store", "send")
    assert DEPENDENCY_ERRORS.labels("store", "send")._value.get() == store + 1
    lost = RESUMES.labels("false")._value.get()
    m.resume(False)
    assert RESUMES.labels("false")._value.get() == lost + 1
    off = Metrics(False)
    off.slow_consumer()
    assert SLOW_CLOSES._value.get() == slow + 1
    depth = gauge("chat_push_queue_depth", "Push notifications waiting")
    assert gauge("chat_push_queue_depth", "again") is depth
