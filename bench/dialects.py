"""How the load generator speaks to each server: the chat protocol, the bare relays, Socket.IO.

A dialect turns the generator's few actions (authenticate, send a message)
into bytes and turns received bytes into calls on the client
(``auth_ok``, ``on_ack``, ``on_created``, ``on_sync``, ``on_error``). The
bare relays speak the chat protocol's frames; Socket.IO carries the same
payloads as events with acknowledgements over Engine.IO 4 framing.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class MsgIn(msgspec.Struct):
    """The part of a delivered message the generator reads."""

    seq: int
    client_id: str
    conversation: str = ""


class ConvIn(msgspec.Struct):
    """The part of a conversation summary the generator reads."""

    id: str
    last_seq: int = 0


class FrameIn(msgspec.Struct):
    """Every server frame the generator reads, fields optional; the rest is skipped."""

    type: str = ""
    id: str | None = None
    client_id: str | None = None
    seq: int | None = None
    conversation: str | None = None
    # message.created carries an object; error carries a human text.
    message: MsgIn | str | None = None
    messages: list[MsgIn] | None = None
    recovered: bool | None = None
    code: str | None = None
    duplicate: bool = False
    conversations: list[ConvIn] | None = None


_decode = msgspec.json.Decoder(FrameIn).decode
_decode_event = msgspec.json.Decoder(tuple[str, FrameIn]).decode
_decode_ack = msgspec.json.Decoder(tuple[FrameIn]).decode
_encode = msgspec.json.encode


class Client(Protocol):
    """What a dialect needs of a generator client."""

    token: str
    peer: str
    resume: dict[str, int] | None

    def write(self, data: bytes) -> None:
        """Send one text message on the connection."""

    def auth_ok(self, conversations: list[ConvIn] | None) -> None:
        """The server accepted the connection."""

    def on_ack(self, client_id: str, seq: int) -> None:
        """The server stored (or relayed) one of this client's messages."""

    def on_created(self, conversation: str, seq: int, client_id: str) -> None:
        """A message from the other member arrived."""

    def on_sync(self, conversation: str, messages: list[MsgIn], seq: int, recovered: bool) -> None:
        """A resume page arrived."""

    def on_error(self, code: str, frame_id: str | None) -> None:
        """The server refused a frame."""


class Dialect(Protocol):
    """A wire protocol."""

    name: str
    path: str

    def on_open(self, client: Client) -> None:
        """The WebSocket is open: start authenticating."""

    def feed(self, client: Client, data: bytes) -> None:
        """Handle one received message."""

    def message(
        self, conversation: str, client_id: str, body: bytes, nonce: bytes, sig: bytes, epoch: int
    ) -> bytes:
        """The bytes of one ``message.send`` (base64 fields given as bytes)."""


def _dispatch(client: Client, f: FrameIn) -> None:
    t = f.type
    if t == "message.created":
        m = f.message
        if isinstance(m, MsgIn):
            client.on_created(m.conversation, m.seq, m.client_id)
    elif t == "ack":
        if f.client_id is not None and f.seq is not None:
            client.on_ack(f.client_id, f.seq)
    elif t == "sync":
        client.on_sync(f.conversation or "", f.messages or [], f.seq or 0, bool(f.recovered))
    elif t == "auth.ok":
        client.auth_ok(f.conversations)
    elif t == "error":
        client.on_error(f.code or "?", f.id)


def _send_frame(
    conversation: str, client_id: str, body: bytes, nonce: bytes, sig: bytes, epoch: int
) -> bytes:
    return b"".join(
        (
            b'{"type":"message.send","id":"',
            client_id.encode(),
            b'","conversation":"',
            conversation.encode(),
            b'","client_id":"',
            client_id.encode(),
            b'","msg_type":"text","body":"',
            body,
            b'","epoch":',
            str(epoch).encode(),
            b',"nonce":"',
            nonce,
            b'","sig":"',
            sig,
            # Signed frames (epoch 1, see bench.signed) are in format version 2.
            b'","v":2}' if epoch else b'"}',
        )
    )


class ChatDialect:
    """The chat server's protocol (docs/protocol.md)."""

    name = "chat"
    path = "/ws"

    def on_open(self, client: Client) -> None:
        frame: dict[str, object] = {"type": "auth", "token": client.token}
        if client.resume:
            frame["resume"] = client.resume
        client.write(_encode(frame))

    def feed(self, client: Client, data: bytes) -> None:
        _dispatch(client, _decode(data))

    def message(
        self, conversation: str, client_id: str, body: bytes, nonce: bytes, sig: bytes, epoch: int
    ) -> bytes:
        return _send_frame(conversation, client_id, body, nonce, sig, epoch)


class RelayDialect(ChatDialect):
    """The bare relays: the chat frames, and ``auth`` names the peer to relay to."""

    name = "relay"

    def on_open(self, client: Client) -> None:
        client.write(_encode({"type": "auth", "token": client.token, "peer": client.peer}))


class SocketIODialect:
    """Socket.IO 5 over Engine.IO 4, WebSocket transport only.

    Engine.IO packets are text: ``0`` open, ``2`` ping (answer ``3``), ``4``
    message; a Socket.IO packet follows the ``4``: ``0`` connect (with the auth
    payload), ``2`` event, ``3`` ack (with its id).
    """

    name = "socketio"
    path = "/socket.io/?EIO=4&transport=websocket"

    def __init__(self) -> None:
        self._ack_id = 0

    def on_open(self, client: Client) -> None:
        # The server speaks first (the Engine.IO open packet).
        return None

    def feed(self, client: Client, data: bytes) -> None:
        head = data[:2]
        if head == b"42":
            _, f = _decode_event(data[2:])
            _dispatch(client, f)
        elif head == b"43":
            i = data.index(b"[", 2)
            (f,) = _decode_ack(data[i:])
            _dispatch(client, f)
        elif data[:1] == b"2":
            client.write(b"3")
        elif data[:1] == b"0":
            client.write(b"40" + _encode({"token": client.token, "peer": client.peer}))
        elif head == b"40":
            client.auth_ok(None)
        elif head == b"44":
            client.on_error("connect_refused", None)

    def message(
        self, conversation: str, client_id: str, body: bytes, nonce: bytes, sig: bytes, epoch: int
    ) -> bytes:
        self._ack_id += 1
        frame = _send_frame(conversation, client_id, body, nonce, sig, epoch)
        return b"".join((b"42", str(self._ack_id).encode(), b'["message.send",', frame, b"]"))


DIALECTS: dict[str, type[ChatDialect] | type[SocketIODialect]] = {
    "chat": ChatDialect,
    "relay": RelayDialect,
    "socketio": SocketIODialect,
}
