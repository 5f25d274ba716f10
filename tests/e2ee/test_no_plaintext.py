"""A scripted conversation, then a search for every plaintext in everything the server holds.

A few hundred messages, edits, and a transfer between Python clients on a
real server with its own embedded engine; afterwards neither the database
files, nor the server's logs, nor anything the server sent contains one
of the plaintexts.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from chat_server.sdk import Client
from chat_server.settings import Settings
from tests.conftest import run_server
from tests.e2ee.helpers import wait_text
from tests.helpers import PASSWORD, seed_world

MESSAGES = 300


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + json.dumps(record.__dict__, default=str))


async def test_server_never_holds_a_plaintext(settings: Settings, tmp_path: Path) -> None:
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    plaintexts: list[str] = []
    transcripts: list[str] = []
    http_bodies: list[bytes] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        http_bodies.append(response.content)

    conf = replace(settings, mongodb_url=None, data_dir=tmp_path, require_e2ee=True)
    try:
        async for server in run_server(conf):
            w = await seed_world(server)
            conv = w.conv["b1"]
            clients = {
                name: await Client.login(server.http, name, PASSWORD)
                for name in ("c1", "c2", "b1", "sup")
            }
            for cl in clients.values():
                cl.transcript = transcripts
                cl.http.event_hooks["response"].append(keep)
                await cl.connect()
            b, c1 = clients["b1"], clients["c1"]
            for i in range(MESSAGES):
                sender = b if i % 3 else c1
                text = f"Secret n°{i} - entretien chez Boulangerie {secrets.token_hex(6)}"
                plaintexts.append(text)
                ack = await sender.send_text(conv, text)
                if i % 50 == 7:
                    edit = f"Correction n°{i} : rendez-vous à 14h {secrets.token_hex(6)}"
                    plaintexts.append(edit)
                    payload = json.dumps({"text": edit}, ensure_ascii=False).encode()
                    await sender.send(conv, payload, "edit", meta={"target_seq": ack["seq"]})
            await clients["sup"].request(
                "POST",
                f"/api/conversations/{conv}/transfer",
                {"to": w.c2.user.id, "mode": "permanent"},
            )
            after = f"Après le transfert : nouveau secret {secrets.token_hex(6)}"
            plaintexts.append(after)
            await b.send_text(conv, after)
            got = await wait_text(clients["c2"], after, timeout=20)
            assert got.error is None
            history = await clients["c2"].all_history(conv)
            decrypted = {m.text for m in history if m.text}
            assert set(plaintexts) <= decrypted
            for cl in clients.values():
                await cl.close()
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)

    files = [p for p in (tmp_path / "mongo").rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files), files
    blobs = [p.read_bytes() for p in files]
    assert sum(len(b) for b in blobs) > 50_000
    logs = "\n".join(capture.lines)
    sent = "\n".join(transcripts).encode() + b"\n".join(http_bodies)
    assert len(transcripts) > MESSAGES
    for text in plaintexts:
        needle = text.encode()
        assert not any(needle in blob for blob in blobs), f"plaintext in the database: {text}"
        assert text not in logs, f"plaintext in the logs: {text}"
        assert needle not in sent, f"plaintext sent by the server: {text}"
    # The search itself works: ids the server does store are found.
    assert any(w.conv["b1"].encode() in blob for blob in blobs)


@pytest.fixture(autouse=True)
def _quiet_uvicorn() -> None:
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
