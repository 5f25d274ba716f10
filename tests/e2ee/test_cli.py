"""The terminal client logs in and chats end to end with another client."""

from __future__ import annotations

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
