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
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from chat_server.settings import Settings


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


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` whose closes end the TCP connection in bounded time."""

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
