"""Peer: a bare relay on Starlette under uvicorn (ws ``websockets-sansio``). Stores nothing.

python -m bench.peers.starlette_relay --port 9002
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.peers.common import AUTH_OK, Relay, decode, pin_from_env, raise_nofile

relay = Relay()
conns: dict[str, set[WebSocket]] = {}


async def ws_endpoint(ws: WebSocket) -> None:
    await ws.accept()
    hello = decode(await ws.receive_text())
    user, peer = str(hello["token"]), str(hello["peer"])
    conns.setdefault(user, set()).add(ws)
    try:
        await ws.send_text(AUTH_OK.decode())
        while True:
            frame = decode(await ws.receive_text())
            if frame.get("type") != "message.send":
                continue
            created, ack = relay.relay(user, frame)
            text = created.decode()
            for other in tuple(conns.get(peer, ())):
                await other.send_text(text)
            await ws.send_text(ack.decode())
    except WebSocketDisconnect:
        pass
    finally:
        mine = conns.get(user)
        if mine is not None:
            mine.discard(ws)
            if not mine:
                del conns[user]


async def healthz(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/ws", ws_endpoint)])

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    pin_from_env()
    raise_nofile()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
