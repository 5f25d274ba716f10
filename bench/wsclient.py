"""A lean WebSocket client: websockets' sans-I/O ``ClientProtocol`` on an asyncio transport.

The load generator holds thousands of connections on one core, so a
connection is a callback object, not a task: ``data_received`` feeds the
websockets protocol and hands each complete text or binary message to
``on_message``. Pings are answered by the websockets protocol itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

OnMessage = Callable[[bytes], None]
OnClose = Callable[[], None]


class WsConnection(asyncio.Protocol):
    """One client connection. ``opened`` resolves when the handshake is done."""

    def __init__(self, uri: str, on_message: OnMessage, on_close: OnClose) -> None:
        self._ws = ClientProtocol(parse_uri(uri), max_size=None)
        self._on_message = on_message
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._fragments: list[bytes] | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A handshake can fail after its waiter gave up: never log that as unretrieved.
        self.opened.add_done_callback(_retrieve)
        self.closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; same interface.
        self._transport = transport  # type: ignore[assignment]
        self._ws.send_request(self._ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                op = event.opcode
                if op is Opcode.TEXT or op is Opcode.BINARY:
                    if event.fin:
                        self._on_message(bytes(event.data))
                    else:
                        self._fragments = [bytes(event.data)]
                elif op is Opcode.CONT and self._fragments is not None:
                    self._fragments.append(bytes(event.data))
                    if event.fin:
                        whole, self._fragments = b"".join(self._fragments), None
                        self._on_message(whole)
            elif not self.opened.done():
                if ws.handshake_exc is not None:
                    self.opened.set_exception(ConnectionError(str(ws.handshake_exc)))
                else:
                    self.opened.set_result(None)
        self._flush()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("connection lost during the handshake"))
        self._on_close()

    # use

    @property
    def is_open(self) -> bool:
        """True while messages can be sent."""
        return not self.closed and self._ws.state is State.OPEN

    def send(self, data: bytes) -> bool:
        """Send one text message (``data`` is UTF-8); False if the connection is not open."""
        if not self.is_open:
            return False
        self._ws.send_text(data)
        self._flush()
        return True

    def close(self) -> None:
        """Start a clean close; the transport is dropped if the server does not answer."""
        if self._transport is None or self.closed:
            return
        if self._ws.state is State.OPEN:
            self._ws.send_close(1000)
            self._flush()
        asyncio.get_running_loop().call_later(2.0, self.abort)

    def abort(self) -> None:
        """Drop the TCP connection now."""
        if self._transport is not None and not self.closed:
            self._transport.abort()

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


async def open_connection(
    uri: str, host: str, port: int, on_message: OnMessage, on_close: OnClose, timeout: float
) -> WsConnection:
    """Connect and finish the WebSocket handshake within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(
        loop.create_connection(lambda: WsConnection(uri, on_message, on_close), host, port),
        timeout,
    )
    try:
        await asyncio.wait_for(asyncio.shield(conn.opened), timeout)
    except BaseException:
        conn.abort()
        raise
    return conn
