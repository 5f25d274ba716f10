"""Attachments end to end with the Python SDK: a PDF and an image each way, a refused type,
a tampered and a truncated blob, and a search of the database files and logs for the
file names and contents."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from chat_server.crypto.errors import DecryptError
from chat_server.sdk import Client, ClientError, Received
from chat_server.settings import Settings
from chat_server.storage.blobs import Blob, BlobStore
from tests.conftest import run_server
from tests.helpers import PASSWORD, seed_world

PDF_NAME = "Bulletin de salaire Inès Moreau.pdf"
PNG_NAME = "photo-courrier-CAF-Yasmine.png"


def pdf(marker: str) -> bytes:
    return b"%PDF-1.4\n% " + marker.encode() + b"\n" + secrets.token_bytes(200_000) + b"\n%%EOF"


def png(marker: str) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + marker.encode() + secrets.token_bytes(70_000)


async def next_attachment(client: Client) -> Received:
    for _ in range(100):
        m = await client.next_message(15)
        if m.msg_type == "attachment":
            return m
    raise AssertionError("no attachment arrived")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + repr(record.__dict__))


async def test_files_both_ways_and_nothing_readable_on_the_server(
    settings: Settings, tmp_path: Path
) -> None:
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    markers = [f"CONTENU-SECRET-{secrets.token_hex(6)}" for _ in range(2)]
    conf = replace(settings, mongodb_url=None, data_dir=tmp_path, require_e2ee=True)
    try:
        async for server in run_server(conf):
            w = await seed_world(server)
            conv = w.conv["b1"]
            b = await Client.login(server.http, "b1", PASSWORD)
            c = await Client.login(server.http, "c1", PASSWORD)
            try:
                await b.connect()
                await c.connect()
                sent_pdf = pdf(markers[0])
                ack = await b.send_file(conv, sent_pdf, PDF_NAME)
                assert ack["type"] == "ack"
                got = await next_attachment(c)
                body, data = await c.fetch_file(got)
                assert (body.name, body.media_type, data) == (PDF_NAME, "application/pdf", sent_pdf)
                sent_png = png(markers[1])
                await c.send_file(conv, sent_png, PNG_NAME, thumbnail=b"\xff\xd8\xff tiny")
                got = await next_attachment(b)
                body, data = await b.fetch_file(got)
                assert (body.name, body.media_type, data) == (PNG_NAME, "image/png", sent_png)
                assert body.thumbnail == b"\xff\xd8\xff tiny"
                # A wrong type (a zip named .pdf) is refused before anything is uploaded.
                with pytest.raises(ClientError) as refused:
                    await b.send_file(conv, b"PK\x03\x04zip", "cv.pdf")
                assert refused.value.code == "attachment_type_refused"
                await _tamper_and_truncate(server.services.blobs, c, got)
            finally:
                await b.close()
                await c.close()
    finally:
        root.removeHandler(capture)
    files = [p for p in (tmp_path / "mongo").rglob("*") if p.is_file()]
    stored = b"".join(p.read_bytes() for p in files)
    logs = "\n".join(capture.lines)
    assert len(stored) > 270_000  # the blobs are in there, encrypted
    for needle in (PDF_NAME, PNG_NAME, *markers):
        assert needle.encode() not in stored, needle
        assert needle not in logs, needle


async def _tamper_and_truncate(store: BlobStore, reader: Client, message: Received) -> None:
    """Replace the stored blob by a tampered copy, then a truncated one: both fail to
    decrypt with a clear error."""
    blob_id = str(message.meta["blob"])
    record = await store.get(blob_id)
    assert record is not None
    content = await store.open(blob_id)
    assert content is not None
    original = b"".join([piece async for piece in content])

    async def replace_with(data: bytes) -> None:
        await store.delete([blob_id])

        async def one() -> AsyncIterator[bytes]:
            yield data

        await store.put(
            Blob(blob_id, record.owner_id, record.conversation_id, 0, 1.0), one(), 10**7
        )
        await store.bind(blob_id, record.seq or 1)

    tampered = bytearray(original)
    tampered[100] ^= 0x01
    await replace_with(bytes(tampered))
    with pytest.raises(DecryptError, match="does not authenticate"):
        await reader.fetch_file(message)
    await replace_with(original[: 8 + 65536 + 16])
    with pytest.raises(DecryptError, match="truncated"):
        await reader.fetch_file(message)
