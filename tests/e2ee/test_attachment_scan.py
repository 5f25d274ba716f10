"""The scanning hook: a scanner written here (a real HTTP service on loopback) gets the file
key of one attachment from the recipient's device, fetches the blob with a short-lived
grant, decrypts it and flags the EICAR test string."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chat_server.crypto.attachment import AttachmentBody, decrypt_blob
from chat_server.sdk import Client, ClientError, Received
from chat_server.settings import Settings
from chat_server.storage.embedded import free_port
from tests.conftest import run_server
from tests.helpers import PASSWORD, ServerInfo, api, seed_world

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def scan(request: Request) -> JSONResponse:
    """The structure's scanner: fetch, decrypt, check the digest, look for EICAR."""
    job: dict[str, Any] = await request.json()
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(job["url"])
    if r.status_code != 200:
        return JSONResponse(
            {"status": "error", "fetch": r.status_code, "body": r.text, "url": job["url"]},
            status_code=502,
        )
    data = decrypt_blob(_b64(job["key"]), [r.content])
    AttachmentBody(b"\0" * 32, "", "", job["size"], _b64(job["sha256"])).check(data)
    if EICAR in data:
        return JSONResponse({"status": "infected", "threat": "EICAR-Test-File"})
    return JSONResponse({"status": "clean"})


@pytest.fixture
async def scanner() -> AsyncIterator[str]:
    port = free_port()
    app = Starlette(routes=[Route("/scan", scan, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/scan"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _next_attachment(client: Client) -> Received:
    for _ in range(100):
        m = await client.next_message(15)
        if m.msg_type == "attachment":
            return m
    raise AssertionError("no attachment arrived")


async def test_scanner_flags_eicar_and_passes_a_clean_file(
    settings: Settings, scanner: str
) -> None:
    conf = replace(settings, require_e2ee=True, attachment_scan_url=scanner)
    async for server in run_server(conf):
        w = await seed_world(server)
        conv = w.conv["b1"]
        b = await Client.login(server.http, "b1", PASSWORD)
        c = await Client.login(server.http, "c1", PASSWORD)
        try:
            await b.connect()
            await c.connect()
            await b.send_file(conv, b"%PDF-1.4\n" + EICAR + b"\n%%EOF", "facture.pdf")
            infected = await _next_attachment(c)
            assert await c.scan_file(infected) == {
                "status": "infected",
                "threat": "EICAR-Test-File",
            }
            await b.send_file(conv, b"%PDF-1.4\nune attestation\n%%EOF", "attestation.pdf")
            clean = await _next_attachment(c)
            assert await c.scan_file(clean) == {"status": "clean"}
            await _grants_are_narrow(server, w.b2.token, infected, clean)
            # The scanner's origin is the only other one the pages may call.
            page = await api(server, "GET", "/console/")
            assert (
                f"connect-src 'self' {scanner.rsplit('/', 1)[0]};"
                in page.headers["content-security-policy"]
            )
        finally:
            await b.close()
            await c.close()


async def _grants_are_narrow(
    server: ServerInfo, outsider: str, first: Received, second: Received
) -> None:
    """A grant opens one blob, for five minutes, and only members obtain one."""
    r = await api(server, "POST", f"/api/attachments/{first.meta['blob']}/grant", outsider)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_member")
    svc = server.services.attachments
    member = await server.services.accounts_store.get_user(first.sender)
    assert member is not None
    token, expires_at = await svc.grant(member, str(first.meta["blob"]))
    assert expires_at - server.services.attachments._clock() == pytest.approx(300, abs=5)
    ok = await api(server, "GET", f"/api/attachments/{first.meta['blob']}?grant={token}")
    assert ok.status_code == 200
    other = await api(server, "GET", f"/api/attachments/{second.meta['blob']}?grant={token}")
    assert (other.status_code, other.json()["error"]["code"]) == (403, "invalid_grant")
    svc._clock = lambda: expires_at + 1
    late = await api(server, "GET", f"/api/attachments/{first.meta['blob']}?grant={token}")
    assert (late.status_code, late.json()["error"]["code"]) == (403, "invalid_grant")


async def test_no_scanner_configured(e2ee_server: ServerInfo) -> None:
    w = await seed_world(e2ee_server)
    b = await Client.login(e2ee_server.http, "b1", PASSWORD)
    try:
        await b.connect()
        await b.send_file(w.conv["b1"], b"%PDF-1.4\nx", "x.pdf")
        page, _ = await b.history(w.conv["b1"])
        sent = next(m for m in page if m.msg_type == "attachment")
        with pytest.raises(ClientError) as refused:
            await b.scan_file(sent)
        assert refused.value.code == "no_scanner"
    finally:
        await b.close()
