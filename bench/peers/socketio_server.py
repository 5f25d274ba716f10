"""Peer: python-socketio's AsyncServer as an ASGI app under uvicorn. Stores nothing.

python -m bench.peers.socketio_server --port 9003 [--redis redis://127.0.0.1:P/0 --channel c]

With ``--redis`` the server uses ``AsyncRedisManager`` so several processes
share rooms; otherwise its in-memory manager. Each user joins the room named
after them; a ``message.send`` event is emitted to the peer's room as
``message.created`` and acknowledged to the sender.
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
import uvicorn

from bench.peers.common import Relay, pin_from_env, raise_nofile


def build(redis_url: str | None, channel: str) -> socketio.ASGIApp:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel) if redis_url else None
    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=manager, transports=["websocket"], logger=False
    )
    relay = Relay()
    peers: dict[str, tuple[str, str]] = {}

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any]) -> None:
        user, peer = str(auth["token"]), str(auth["peer"])
        peers[sid] = (user, peer)
        await sio.enter_room(sid, user)

    @sio.event  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, *args: Any) -> None:
        peers.pop(sid, None)

    @sio.on("message.send")  # type: ignore[untyped-decorator]
    async def message_send(sid: str, frame: dict[str, Any]) -> dict[str, Any]:
        user, peer = peers[sid]
        conv = frame["conversation"]
        seq = relay.seqs.get(conv, 0) + 1
        relay.seqs[conv] = seq
        message = {
            "conversation": conv,
            "seq": seq,
            "client_id": frame["client_id"],
            "sender": user,
            "msg_type": frame.get("msg_type"),
            "body": frame.get("body"),
            "epoch": frame.get("epoch", 0),
            "nonce": frame.get("nonce"),
            "sig": frame.get("sig"),
        }
        await sio.emit("message.created", {"type": "message.created", "message": message}, to=peer)
        return {"type": "ack", "client_id": frame["client_id"], "conversation": conv, "seq": seq}

    return socketio.ASGIApp(sio)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--redis", default=None)
    ap.add_argument("--channel", default="socketio")
    args = ap.parse_args()
    pin_from_env()
    raise_nofile()
    uvicorn.run(
        build(args.redis, args.channel),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        log_level="warning",
    )
