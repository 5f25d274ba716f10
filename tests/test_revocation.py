"""Ending a session closes its open WebSockets too (4001 session_revoked)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets

from tests.helpers import ServerInfo, WsClient, login, seed_world


async def _closed_code(client: WsClient, timeout: float = 5) -> int | None:
    try:
        await asyncio.wait_for(client.ws.wait_closed(), timeout)
    except TimeoutError:
        return None
    return client.ws.close_code


@pytest.mark.parametrize("endpoint", ["/api/logout", "/api/logout-all"])
async def test_logout_closes_open_connections(server: ServerInfo, endpoint: str) -> None:
    w = await seed_world(server)
    other = await login(server, "b1")  # a second session of the same user
    ws_this = await WsClient.connect(server, w.b1.token)
    ws_other = await WsClient.connect(server, other.token)
    async with httpx.AsyncClient(base_url=server.http) as http:
        r = await http.post(endpoint, headers={"authorization": f"Bearer {w.b1.token}"})
        assert r.status_code == 200
    assert await _closed_code(ws_this) == 4001
    if endpoint == "/api/logout-all":
        assert await _closed_code(ws_other) == 4001
    else:
        assert await _closed_code(ws_other, timeout=0.5) is None
        ack = await ws_other.send_text(w.conv["b1"], "toujours là")
        assert ack["type"] == "ack"
    with pytest.raises(websockets.ConnectionClosed):
        await ws_this.send_text(w.conv["b1"], "après la déconnexion")
    await ws_other.close()
