"""uvicorn's HTTP and WebSocket protocols, with the time bounds a public server needs.

- HTTP: a request's head (request line and headers) must arrive within
  ``HANDSHAKE_TIMEOUT_SECONDS`` of the connection or of the request's first
  byte; otherwise the connection is dropped. uvicorn alone waits forever, so
  a client that opens connections and sends half a request holds them open.
- WebSocket: a close always ends the TCP connection. A close frame queues
  behind what the peer has not read; if the peer never reads, the close
  (and the keepalive's) would wait forever. After ``HEARTBEAT_SECONDS`` (or
  at once when the peer stopped reading) the connection is aborted.

Only the app's own settings choose these bounds: ``protocols(settings)``
returns the two classes for ``uvicorn.Config(http=..., ws=...)``.

The WebSocket protocol also hands the app a synchronous writer, in the ASGI
scope's ``extensions`` under ``SEND_NOW`` (see ``BoundedWebSocketProtocol.send_now``):
the transport writes a frame at once when nothing has to wait, without a task and
without the five coroutine layers of ``websocket.send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from chat_server.settings import Settings

#: Key of the ASGI scope's ``extensions`` that holds ``send_now`` (absent under another server).
SEND_NOW = "cejchat.send_now"
#: ``send_now``'s type: write one text frame now; False if it must wait (nothing written).
SendNow = Callable[[str], bool]

_TEXT_FIN = 0x81  # FIN + opcode 1 (text), RFC 6455 section 5.2
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class BoundedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that drops a connection whose request head is late."""

    handshake_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The WebSocket protocol owns the transport now. The parser holds this object's
        # callbacks and this object holds the parser: without this, every upgraded
        # connection leaves that cycle (about twenty objects) to the garbage collector.
        del self.parser

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.handshake_timeout, self._late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _late(self) -> None:
        self._head_timer = None
        _reset(self.transport)


def text_frame(data: bytes) -> bytes:
    """An unmasked, unfragmented text frame of ``data`` (what a server sends, RFC 6455)."""
    n = len(data)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + data
    if n < 65536:
        return _HEAD_16.pack(_TEXT_FIN, 126, n) + data
    return _HEAD_64.pack(_TEXT_FIN, 127, n) + data


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` whose closes end the TCP connection in bounded time,
    with a synchronous writer for the app (``send_now``)."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][SEND_NOW] = self.send_now

    def connection_lost(self, exc: Exception | None) -> None:
        # The scope holds ``send_now``, bound to this protocol, which holds the scope: a
        # cycle that only the garbage collector would free. Break it when the socket goes
        # (a 5,000-client reconnect storm left as many protocols and scopes to collect).
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"].pop(SEND_NOW, None)
        super().connection_lost(exc)

    def send_now(self, text: str) -> bool:
        """Write ``text`` as one text frame now, or return False and write nothing.

        It writes only when ``websocket.send`` would write at once: the handshake is
        done, no close was sent or received, the transport takes data (not paused
        for a full buffer: then the caller queues and awaits ``websocket.send``) and
        the frame needs no extension (the server negotiates none). Same bytes on the
        wire as ``websocket.send``.
        """
        conn = self.conn
        if (
            not self.writable.is_set()
            or self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or self.initial_response is not None
            or conn.state is not State.OPEN
            or conn.extensions
            or conn.writes
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(text_frame(text.encode()))
        return True

    async def send(self, message: Any) -> None:
        if (
            message["type"] == "websocket.close"
            and not self.writable.is_set()
            and self.handshake_complete
            and not self.close_sent
            and not self.disconnected
        ):
            # The peer stopped reading (the buffer is full): uvicorn would wait for room
            # before it even queues the close. Queue it now; abort if it is still unread
            # after the grace (a peer that reads again gets it first).
            code = message.get("code", 1000)
            reason = message.get("reason", "") or ""
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self._abort_later(self._grace())
            return
        await super().send(message)
        if message["type"] == "websocket.close" and self.close_timer is not None:
            # uvicorn's timer calls transport.close(), which waits for the buffer to
            # drain: with a peer that does not read, forever.
            self._abort_later(self._grace())

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._abort_later(1.0)

    def _grace(self) -> float:
        return float(self.ping_interval or self.close_timeout)

    def _abort_later(self, delay: float) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(delay, _reset, self.transport)


def _reset(transport: asyncio.Transport) -> None:
    """Drop the connection now, unsent data included.

    A plain close (even ``abort``) leaves the kernel sending what is buffered: to a
    peer that does not read, the socket lingers for minutes. A zero linger time
    makes the close a reset, which frees it at once.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def protocols(
    settings: Settings,
) -> tuple[type[BoundedHttpProtocol], type[BoundedWebSocketProtocol]]:
    """The HTTP and WebSocket protocol classes bound to ``settings``."""
    http = type(
        "BoundedHttpProtocol",
        (BoundedHttpProtocol,),
        {"handshake_timeout": settings.handshake_timeout_seconds},
    )
    return http, BoundedWebSocketProtocol
