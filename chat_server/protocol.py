"""The WebSocket protocol as pure data: frame types, parsing, encoding.

No I/O, no asyncio, no Starlette. ``parse_client_frame`` turns bytes or text
into one of the client frame structs or raises ``ProtocolError`` with a
machine-readable code. ``docs/protocol.md`` documents every frame.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

PROTOCOL_VERSION = 1

Id = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Seq = Annotated[int, Meta(ge=0, le=2**53)]
Epoch = Annotated[int, Meta(ge=0, le=2**31)]
Limit = Annotated[int, Meta(ge=1, le=200)]
Token = Annotated[str, Meta(min_length=1, max_length=512)]
MsgType = Annotated[str, Meta(min_length=1, max_length=40)]
# The end-to-end format version (docs/crypto-format.md); which ones are
# accepted is the verifier's decision, so it can answer with its own code.
FormatVersion = Annotated[int, Meta(ge=1, le=255)]


class ProtocolError(Exception):
    """A frame the server refuses. ``code`` is machine-readable, ``message`` human."""

    def __init__(self, code: str, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id


# ---------------------------------------------------------------- client frames


class Auth(Struct, tag="auth", tag_field="type", forbid_unknown_fields=True):
    """First frame: the session token, and where the client stopped per conversation."""

    token: Token
    id: Id | None = None
    resume: dict[Id, Seq] = {}


class MessageSend(Struct, tag="message.send", tag_field="type", forbid_unknown_fields=True):
    """Store and deliver a message. ``body`` is opaque bytes (base64 on the wire)."""

    id: Id
    conversation: Id
    client_id: Id
    msg_type: MsgType
    body: bytes
    meta: dict[str, Any] = {}
    epoch: Epoch = 0
    nonce: bytes = b""
    sig: bytes = b""
    v: FormatVersion = 1


class ReadMark(Struct, tag="read.mark", tag_field="type", forbid_unknown_fields=True):
    """The sender has read the conversation up to ``seq``."""

    conversation: Id
    seq: Seq
    id: Id | None = None


class TypingSet(Struct, tag="typing.set", tag_field="type", forbid_unknown_fields=True):
    """The sender started or stopped typing."""

    conversation: Id
    typing: bool
    id: Id | None = None


class HistoryGet(Struct, tag="history.get", tag_field="type", forbid_unknown_fields=True):
    """A page of history: before a ``seq`` (older) or after one (newer)."""

    id: Id
    conversation: Id
    before: Seq | None = None
    after: Seq | None = None
    limit: Limit = 50


class ConversationSync(
    Struct, tag="conversation.sync", tag_field="type", forbid_unknown_fields=True
):
    """Resume one conversation after ``after``: same contract as ``auth.resume``."""

    id: Id
    conversation: Id
    after: Seq


class Ping(Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    """Application heartbeat; answered by ``pong``."""

    id: Id | None = None


ClientFrame = Auth | MessageSend | ReadMark | TypingSet | HistoryGet | ConversationSync | Ping
CLIENT_FRAME_TYPES = (
    "auth",
    "message.send",
    "read.mark",
    "typing.set",
    "history.get",
    "conversation.sync",
    "ping",
)

_decoder = msgspec.json.Decoder(ClientFrame)
_peek = msgspec.json.Decoder(dict[str, Any])


class _FrameId(Struct):
    """Only a frame's ``id``; every other field is skipped unread."""

    id: Id | None = None


_id_only = msgspec.json.Decoder(_FrameId)


def frame_id_of(data: str | bytes) -> str | None:
    """The ``id`` of a frame refused without being parsed (over the rate limit), so the
    client can match the refusal to its request; None if it has none or it is unreadable."""
    try:
        return _id_only.decode(data).id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Parse one client frame; raise ``ProtocolError`` naming what is wrong."""
    try:
        return _parse(data)
    except RecursionError:
        # JSON nested deeper than the decoder's limit (a few KB of brackets suffice).
        raise ProtocolError("malformed_json", "the frame is nested too deeply") from None


def _parse(data: str | bytes) -> ClientFrame:
    try:
        frame: ClientFrame = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        try:
            raw = _peek.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ProtocolError("malformed_json", "the frame must be a JSON object") from None
        fid = raw.get("id") if isinstance(raw.get("id"), str) else None
        ftype = raw.get("type")
        if ftype is None:
            raise ProtocolError("missing_field", "the frame has no 'type'", fid) from None
        if ftype not in CLIENT_FRAME_TYPES:
            raise ProtocolError(
                "unknown_frame_type", f"unknown frame type {str(ftype)[:40]!r}", fid
            ) from None
        text = str(exc)
        code = (
            "missing_field"
            if text.startswith("Object missing required field")
            else (
                "unknown_field"
                if text.startswith("Object contains unknown field")
                else "invalid_field"
            )
        )
        raise ProtocolError(code, text, fid) from None
    except msgspec.DecodeError:
        raise ProtocolError("malformed_json", "the frame is not valid JSON") from None
    return frame


# ---------------------------------------------------------------- server frames


class MessageOut(Struct, omit_defaults=False):
    """A stored message as clients receive it."""

    conversation: str
    seq: int
    client_id: str
    sender: str
    device: str
    msg_type: str
    body: bytes
    meta: dict[str, Any]
    epoch: int
    nonce: bytes
    sig: bytes
    created_at: float
    v: int = 1


class AuthOk(Struct, tag="auth.ok", tag_field="type"):
    """Authentication accepted."""

    user: dict[str, Any]
    device: str
    conversations: list[dict[str, Any]]
    id: str | None = None
    version: int = PROTOCOL_VERSION


class Ack(Struct, tag="ack", tag_field="type"):
    """The message is durably stored at ``seq``. A resend gets the same ack."""

    id: str
    conversation: str
    client_id: str
    seq: int
    created_at: float
    duplicate: bool = False


class ErrorFrame(Struct, tag="error", tag_field="type"):
    """A refused frame. ``id`` echoes the client's frame id when it had one."""

    code: str
    message: str
    id: str | None = None


class MessageCreated(Struct, tag="message.created", tag_field="type"):
    """A new message in a conversation the receiver is a member of."""

    message: MessageOut


class Sync(Struct, tag="sync", tag_field="type"):
    """Resume result for one conversation.

    ``recovered`` is true when ``messages`` hold every message after the
    client's position; false when the client is too far behind and must page
    history (``seq`` then tells the latest position).
    """

    conversation: str
    recovered: bool
    messages: list[MessageOut]
    seq: int
    id: str | None = None


class History(Struct, tag="history", tag_field="type"):
    """A page of history, ascending by ``seq``."""

    id: str
    conversation: str
    messages: list[MessageOut]
    has_more: bool


class ReadUpdated(Struct, tag="read.updated", tag_field="type"):
    """``user`` has read ``conversation`` up to ``seq``."""

    conversation: str
    user: str
    seq: int


class Typing(Struct, tag="typing", tag_field="type"):
    """The other member started or stopped typing."""

    conversation: str
    user: str
    typing: bool


class PresenceFrame(Struct, tag="presence", tag_field="type"):
    """The other member came online or went offline."""

    user: str
    online: bool
    last_seen: float | None


class ConversationUpdated(Struct, tag="conversation.updated", tag_field="type"):
    """A conversation's membership or state changed (a transfer, a new epoch)."""

    conversation: dict[str, Any]


class KeysRequested(Struct, tag="keys.requested", tag_field="type"):
    """A device needs the conversation's earlier epoch keys; holders should re-wrap them."""

    conversation: str
    recipient_device: str
    recipient_user: str
    reason: str
    approved: bool = True


class KeysAvailable(Struct, tag="keys.available", tag_field="type"):
    """New envelopes were stored for ``device``: fetch them (``GET /api/keys/envelopes``)."""

    conversation: str
    device: str


class StructureKeyUpdated(Struct, tag="structure_key.updated", tag_field="type"):
    """The structure key changed (created, handed to a device, a staff device waits for it):
    fetch ``GET /api/structure-key``."""

    structure: str


class Pong(Struct, tag="pong", tag_field="type"):
    """Answer to ``ping``."""

    id: str | None = None


ServerFrame = (
    AuthOk
    | Ack
    | ErrorFrame
    | MessageCreated
    | Sync
    | History
    | ReadUpdated
    | Typing
    | PresenceFrame
    | ConversationUpdated
    | KeysRequested
    | KeysAvailable
    | StructureKeyUpdated
    | Pong
)

_encoder = msgspec.json.Encoder()


def encode_text(frame: ServerFrame) -> str:
    """Serialise a server frame to a JSON text frame."""
    return _encoder.encode(frame).decode()
