"""The synchronous write path (``server_protocols.send_now``): same bytes as websockets,
and a frame that has to wait keeps every later frame behind it (order is the contract)."""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode

from chat_server import protocol as p
from chat_server.server_protocols import SEND_NOW, BoundedWebSocketProtocol, text_frame
from chat_server.transport import Connection
from tests.helpers import ServerInfo, WsClient, barrier, fast_world, of_type


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_frame_is_what_websockets_writes(size: int) -> None:
    data = ("é" * size).encode()[:size]
    assert text_frame(data) == Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])


def _connection(server: ServerInfo, user_id: str) -> Connection:
    found = [s for s in server.services.hub.subscribers() if s.user_id == user_id]
    assert len(found) == 1
    conn = found[0]
    assert isinstance(conn, Connection)
    return conn


async def test_a_frame_that_must_wait_keeps_the_later_ones_behind_it(server: ServerInfo) -> None:
    w = await fast_world(server.services)
    conv = w.conv["b1"]
    b = await WsClient.connect(server, w.b1.token)
    c = await WsClient.connect(server, w.c1.token)
    conn = _connection(server, w.c1.user.id)
    send_now = conn._send_now
    assert send_now is not None, "uvicorn with BoundedWebSocketProtocol offers send_now"
    proto = getattr(send_now, "__self__", None)
    assert isinstance(proto, BoundedWebSocketProtocol)
    # The socket "is full": nothing may be written now; frames queue, in order.
    proto.writable.clear()
    assert not send_now('{"type":"pong"}')
    conn.reply(p.Pong(id="first"))
    for i in range(3):
        assert (await b.send_text(conv, f"m{i}"))["type"] == "ack"
    proto.writable.set()  # writable again: the queue drains, then writes go at once again
    conn.reply(p.Pong(id="after"))
    frames = await barrier(c)
    kinds = [(f["type"], f.get("id") or f["message"]["seq"]) for f in frames]
    assert kinds == [
        ("pong", "first"),
        ("message.created", 1),
        ("message.created", 2),
        ("message.created", 3),
        ("pong", "after"),
    ]
    # And the connection is back on the direct path: nothing left queued.
    assert await b.send_text(conv, "m3")
    created = of_type(await barrier(c), "message.created")
    assert [f["message"]["seq"] for f in created] == [4]
    assert conn._queue is None
    assert conn._writer is None
    await b.close()
    await c.close()


async def test_the_protocol_lets_go_of_send_now_when_the_socket_goes(server: ServerInfo) -> None:
    # The scope holds send_now, bound to the protocol that holds the scope: kept after the
    # socket is gone, every closed connection would wait for the garbage collector.
    w = await fast_world(server.services)
    c = await WsClient.connect(server, w.c1.token)
    conn = _connection(server, w.c1.user.id)
    proto = getattr(conn._send_now, "__self__", None)
    assert isinstance(proto, BoundedWebSocketProtocol)
    assert SEND_NOW in proto.scope["extensions"]
    await c.close()
    for _ in range(100):  # bounded: 5 s
        if proto.disconnected:
            break
        await asyncio.sleep(0.05)
    assert proto.disconnected
    assert SEND_NOW not in proto.scope["extensions"]
