"""Attachments on a real server (embedded engine, GridFS): streamed upload and download,
limits, membership, the message that names a blob, the sweep, deletion and erasure."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from chat_server.crypto.attachment import ciphertext_size
from chat_server.settings import Settings
from tests.conftest import serve
from tests.helpers import ServerInfo, World, WsClient, api, fast_world

MB5 = 5 * 1024 * 1024


async def upload(
    server: ServerInfo, token: str, conv: str, data: bytes, *, chunked: bool = False
) -> httpx.Response:
    """POST the blob; ``chunked`` streams it without a Content-Length (checked while
    streaming only)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    async with httpx.AsyncClient(base_url=server.http, timeout=60) as http:
        return await http.post(
            f"/api/conversations/{conv}/attachments",
            headers=headers,
            content=body() if chunked else data,
        )


async def download(server: ServerInfo, token: str, blob: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as http:
        return await http.get(
            f"/api/attachments/{blob}", headers={"Authorization": f"Bearer {token}"}
        )


async def send_attachment(
    client: WsClient, conv: str, blob: str, size: int, client_id: str | None = None
) -> dict[str, Any]:
    return await client.send_text(
        conv, "opaque", client_id, msg_type="attachment", meta={"blob": blob, "size": size}
    )


@pytest.fixture
async def world(server: ServerInfo) -> World:
    return await fast_world(server.services)


async def test_one_byte_and_the_largest_file_round_trip(server: ServerInfo, world: World) -> None:
    conv = world.conv["b1"]
    r = await upload(server, world.b1.token, conv, b"\x01")
    assert r.status_code == 201, r.text
    small = r.json()
    assert small["size"] == 1
    largest = secrets.token_bytes(ciphertext_size(MB5))
    r = await upload(server, world.b1.token, conv, largest, chunked=True)
    assert r.status_code == 201, r.text
    big = r.json()
    # The other member reads both, byte for byte.
    got = await download(server, world.c1.token, small["blob"])
    assert (got.status_code, got.content) == (200, b"\x01")
    got = await download(server, world.c1.token, big["blob"])
    assert got.status_code == 200
    assert got.headers["content-length"] == str(len(largest))
    assert got.content == largest


@pytest.mark.parametrize("chunked", [True, False])
async def test_one_byte_too_many_is_refused_and_nothing_kept(
    server: ServerInfo, world: World, chunked: bool
) -> None:
    data = secrets.token_bytes(ciphertext_size(MB5) + 1)
    r = await upload(server, world.b1.token, world.conv["b1"], data, chunked=chunked)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "attachment_too_large"
    blobs = server.services.blobs
    assert await blobs.of_owner(world.b1.user.id) == []
    assert await blobs.usage(world.b1.user.id, 0) == (0, 0)


async def test_non_members_get_not_member(server: ServerInfo, world: World) -> None:
    r = await upload(server, world.b2.token, world.conv["b1"], b"x")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_member")
    r = await upload(server, world.b1.token, world.conv["b1"], b"secret")
    blob = r.json()["blob"]
    for outsider in (world.b2, world.c2, world.sup):
        got = await download(server, outsider.token, blob)
        assert (got.status_code, got.json()["error"]["code"]) == (403, "not_member")
    got = await download(server, world.b1.token, "no-such-blob-0000000000")
    assert (got.status_code, got.json()["error"]["code"]) == (404, "attachment_not_found")
    r = await api(server, "GET", f"/api/attachments/{blob}")
    assert r.status_code == 401


async def test_limits_endpoint(server: ServerInfo, world: World) -> None:
    r = await api(server, "GET", "/api/attachments/limits", world.b1.token)
    assert r.status_code == 200
    limits = r.json()
    assert limits["max_bytes"] == MB5
    assert limits["max_blob_bytes"] == ciphertext_size(MB5)
    assert limits["types"] == ["application/pdf", "image/png", "image/jpeg", "image/webp"]
    assert limits["ttl_days"] == 120


async def test_message_names_its_blob(server: ServerInfo, world: World) -> None:
    conv = world.conv["b1"]
    blob = (await upload(server, world.b1.token, conv, b"abcdef")).json()["blob"]
    other_blob = (await upload(server, world.c1.token, conv, b"zz")).json()["blob"]
    b1 = await WsClient.connect(server, world.b1.token)
    try:
        err = await send_attachment(b1, conv, blob, 5)
        assert (err["type"], err["code"]) == ("error", "attachment_mismatch"), err
        err = await send_attachment(b1, conv, other_blob, 2)
        assert (err["type"], err["code"]) == ("error", "attachment_mismatch"), err
        err = await send_attachment(b1, conv, "unknown-blob-0000000000", 2)
        assert (err["type"], err["code"]) == ("error", "attachment_not_found"), err
        err = await b1.send_text(conv, "x", msg_type="attachment", meta={"size": 3})
        assert (err["type"], err["code"]) == ("error", "invalid_input"), err
        ack = await send_attachment(b1, conv, blob, 6, client_id="att-first")
        assert ack["type"] == "ack", ack
        again = await send_attachment(b1, conv, blob, 6, client_id="att-first")
        assert (again["type"], again["seq"]) == ("ack", ack["seq"]), again
        err = await send_attachment(b1, conv, blob, 6, client_id="att-second")
        assert (err["type"], err["code"]) == ("error", "attachment_in_use"), err
    finally:
        await b1.close()
    stored = await server.services.blobs.get(blob)
    assert stored is not None
    assert stored.seq == ack["seq"]


async def test_deleting_the_message_deletes_the_blob(server: ServerInfo, world: World) -> None:
    conv = world.conv["b1"]
    blob = (await upload(server, world.b1.token, conv, b"to delete")).json()["blob"]
    b1 = await WsClient.connect(server, world.b1.token)
    try:
        ack = await send_attachment(b1, conv, blob, 9)
        assert ack["type"] == "ack", ack
        deleted = await b1.send_text(conv, "", msg_type="delete", meta={"target_seq": ack["seq"]})
        assert deleted["type"] == "ack", deleted
    finally:
        await b1.close()
    assert await server.services.blobs.get(blob) is None
    got = await download(server, world.c1.token, blob)
    assert (got.status_code, got.json()["error"]["code"]) == (404, "attachment_not_found")


async def test_sweep_removes_orphans_and_expires_old_blobs(settings: Settings) -> None:
    clock = {"now": 1_000_000.0}
    async with serve(replace(settings, attachment_sweep_seconds=3600)) as server:
        svc = server.services
        w = await fast_world(svc)
        conv = w.conv["b1"]
        orphan = (await upload(server, w.b1.token, conv, b"orphan")).json()["blob"]
        kept = (await upload(server, w.b1.token, conv, b"kept!")).json()["blob"]
        b1 = await WsClient.connect(server, w.b1.token)
        ack = await send_attachment(b1, conv, kept, 5)
        await b1.close()
        assert ack["type"] == "ack", ack
        # The service's clock moves; the records' times are the real ones.
        svc.attachments._clock = lambda: clock["now"]
        clock["now"] = (await svc.blobs.get(orphan)).created_at + 3599  # type: ignore[union-attr]
        assert await svc.attachments.sweep() == {"orphans": 0, "bound": 0, "expired": 0}
        clock["now"] += 2
        assert await svc.attachments.sweep() == {"orphans": 1, "bound": 0, "expired": 0}
        assert await svc.blobs.get(orphan) is None
        assert (await download(server, w.c1.token, kept)).status_code == 200
        clock["now"] += 120 * 86400
        assert await svc.attachments.sweep() == {"orphans": 0, "bound": 0, "expired": 1}
        got = await download(server, w.c1.token, kept)
        assert (got.status_code, got.json()["error"]["code"]) == (410, "attachment_expired")
        # The message stays (the apps show "pièce jointe expirée").
        page = await api(server, "GET", f"/api/conversations/{conv}/messages", w.c1.token)
        assert [m["msg_type"] for m in page.json()["messages"]] == ["attachment"]


async def test_sweep_binds_a_sent_blob_it_missed(server: ServerInfo, world: World) -> None:
    """A message stored but not bound (the process died in between) keeps its blob."""
    svc = server.services
    conv = world.conv["b1"]
    blob = (await upload(server, world.b1.token, conv, b"abc")).json()["blob"]
    hook, svc.conversations.attachments = svc.conversations.attachments, None
    b1 = await WsClient.connect(server, world.b1.token)
    ack = await send_attachment(b1, conv, blob, 3)
    await b1.close()
    svc.conversations.attachments = hook
    assert ack["type"] == "ack", ack
    svc.attachments._clock = lambda: 10**10
    counts = await svc.attachments.sweep()
    assert counts["bound"] == 1
    assert counts["orphans"] == 0
    stored = await svc.blobs.get(blob)
    assert stored is not None
    assert stored.seq == ack["seq"]


async def test_quota_and_rate(settings: Settings) -> None:
    tight = replace(settings, attachment_quota_bytes=10, attachment_uploads_per_hour=3)
    async with serve(tight) as server:
        w = await fast_world(server.services)
        conv = w.conv["b1"]
        assert (await upload(server, w.b1.token, conv, b"123456")).status_code == 201
        r = await upload(server, w.b1.token, conv, b"12345", chunked=True)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "attachment_quota_exceeded")
        r = await upload(server, w.b1.token, conv, b"12345")
        assert (r.status_code, r.json()["error"]["code"]) == (413, "attachment_quota_exceeded")
        assert (await upload(server, w.b1.token, conv, b"1234")).status_code == 201
        assert (await upload(server, w.c1.token, conv, b"1")).status_code == 201
        # b1's refused uploads kept nothing, so two count; a third fits the hour, not a fourth.
        await server.services.blobs.delete(await server.services.blobs.of_owner(w.b1.user.id))
        for _ in range(3):
            assert (await upload(server, w.b1.token, conv, b"1")).status_code == 201
        r = await upload(server, w.b1.token, conv, b"1")
        assert (r.status_code, r.json()["error"]["code"]) == (429, "attachment_rate_limited")
        assert int(r.headers["retry-after"]) >= 1


async def test_erasure_deletes_the_blobs(server: ServerInfo, world: World) -> None:
    """After a beneficiary's deletion their blobs are gone (and the counsellor's in it)."""
    svc = server.services
    conv = world.conv["b1"]
    mine = (await upload(server, world.b1.token, conv, b"mine")).json()["blob"]
    theirs = (await upload(server, world.c1.token, conv, b"theirs")).json()["blob"]
    elsewhere = (await upload(server, world.c1.token, world.conv["b2"], b"b2")).json()["blob"]
    erasure = await svc.lifecycle.eraser.erase(world.b1.user, "admin", "request")
    assert erasure is not None
    assert erasure.removed >= 2
    assert await svc.blobs.get(mine) is None
    assert await svc.blobs.get(theirs) is None
    assert await svc.blobs.open(mine) is None
    assert await svc.blobs.get(elsewhere) is not None
