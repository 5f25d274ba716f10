"""Peer: a bare relay on the websockets library's own asyncio server. Stores nothing.

python -m bench.peers.ws_relay --port 9001
"""

from __future__ import annotations

import argparse

import uvloop
from websockets.asyncio.server import ServerConnection, serve

from bench.peers.common import AUTH_OK, Relay, decode, pin_from_env, raise_nofile

relay = Relay()
conns: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    hello = decode(await ws.recv())
    user, peer = str(hello["token"]), str(hello["peer"])
    conns.setdefault(user, set()).add(ws)
    try:
        await ws.send(AUTH_OK.decode())
        async for raw in ws:
            frame = decode(raw)
            if frame.get("type") != "message.send":
                continue
            created, ack = relay.relay(user, frame)
            text = created.decode()
            for other in tuple(conns.get(peer, ())):
                await other.send(text)
            await ws.send(ack.decode())
    finally:
        mine = conns.get(user)
        if mine is not None:
            mine.discard(ws)
            if not mine:
                del conns[user]


async def main(host: str, port: int) -> None:
    async with serve(
        handler, host, port, compression=None, max_size=2**20, ping_interval=20, ping_timeout=20
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    pin_from_env()
    raise_nofile()
    uvloop.run(main(args.host, args.port))
