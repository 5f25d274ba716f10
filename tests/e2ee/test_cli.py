"""The terminal client logs in and chats end to end with another client."""

from __future__ import annotations

import os
from pathlib import Path

from chat_server.sdk import Client
from tests.e2ee.helpers import run_cli, wait_text
from tests.helpers import PASSWORD, ServerInfo, seed_world


async def test_cli_login_send_and_chat(e2ee_server: ServerInfo, tmp_path: Path) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    counsellor = await Client.login(e2ee_server.http, "c1", PASSWORD)
    await counsellor.connect()
    try:
        code, out = await run_cli(tmp_path, e2ee_server, "login", "b1")
        assert code == 0, out
        assert "connecté" in out
        state = tmp_path / "client.json"
        assert state.stat().st_mode & 0o077 == 0
        code, out = await run_cli(tmp_path, e2ee_server, "send", conv, "Bonjour depuis le terminal")
        assert code == 0, out
        got = await wait_text(counsellor, "Bonjour depuis le terminal")
        assert got.sender == w.b1.user.id
        await counsellor.send_text(conv, "Réponse du conseiller")
        code, out = await run_cli(
            tmp_path, e2ee_server, "chat", conv, stdin="deuxième ligne\n".encode()
        )
        assert code == 0, out
        assert "Réponse du conseiller" in out
        assert "Bonjour depuis le terminal" in out
        await wait_text(counsellor, "deuxième ligne")
        code, out = await run_cli(tmp_path, e2ee_server, "conversations")
        assert conv in out
        code, out = await run_cli(tmp_path, e2ee_server, "safety", conv)
        assert code == 0
        assert len(out.split()) == 6
    finally:
        await counsellor.close()


async def test_cli_without_session_explains(e2ee_server: ServerInfo, tmp_path: Path) -> None:
    code, out = await run_cli(tmp_path, e2ee_server, "conversations")
    assert code == 2
    assert "not_logged_in" in out


async def test_cli_sends_and_saves_files(e2ee_server: ServerInfo, tmp_path: Path) -> None:
    w = await seed_world(e2ee_server)
    conv = w.conv["b1"]
    home_b, home_c = tmp_path / "b1", tmp_path / "c1"
    assert (await run_cli(home_b, e2ee_server, "login", "b1"))[0] == 0
    assert (await run_cli(home_c, e2ee_server, "login", "c1"))[0] == 0
    pdf = tmp_path / "attestation.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + os.urandom(150_000))
    code, out = await run_cli(home_b, e2ee_server, "send-file", conv, str(pdf))
    assert code == 0, out
    seq = int(out.split("seq ")[1].rstrip(")\n"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    code, out = await run_cli(home_c, e2ee_server, "save-file", conv, str(seq), "--to", str(inbox))
    assert code == 0, out
    assert (inbox / "attestation.pdf").read_bytes() == pdf.read_bytes()
    assert (inbox / "attestation.pdf").stat().st_mode & 0o077 == 0
    # A second save never overwrites; a file of the wrong type is refused before upload.
    code, out = await run_cli(home_c, e2ee_server, "save-file", conv, str(seq), "--to", str(inbox))
    assert (inbox / "attestation (1).pdf").exists(), out
    exe = tmp_path / "cv.pdf"
    exe.write_bytes(b"MZ\x90\x00 not a pdf")
    code, out = await run_cli(home_b, e2ee_server, "send-file", conv, str(exe))
    assert code == 2
    assert "attachment_type_refused" in out
