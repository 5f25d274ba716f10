"""Conversations over HTTP: the list, history pages, read markers, flags, beneficiaries."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import BadRequest, current, endpoint, json_body, ok, services
from chat_server.protocol import MessageOut
from chat_server.rooms.service import message_out


class FlagBody(Struct, forbid_unknown_fields=True):
    flagged: bool


class ReadBody(Struct, forbid_unknown_fields=True):
    seq: Annotated[int, Meta(ge=0, le=2**53)]


#: base64url of the 32-byte proof of a code the counsellor's client made.
ActivationProof = Annotated[str, Meta(min_length=43, max_length=43, pattern="^[A-Za-z0-9_-]+$")]


class BeneficiaryBody(Struct, forbid_unknown_fields=True):
    login: Annotated[str, Meta(min_length=2, max_length=64)]
    display_name: Annotated[str, Meta(min_length=1, max_length=100)]
    programme: Annotated[str, Meta(max_length=20)] | None = None
    #: base64url of the proof of a code the counsellor's client made (no code returned).
    activation_proof: ActivationProof | None = None


def _int_param(request: Request, name: str, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("invalid_field", f"'{name}' must be an integer") from None
    if not lo <= value <= hi:
        raise BadRequest("invalid_field", f"'{name}' must be between {lo} and {hi}")
    return value


def _message_json(m: MessageOut) -> dict[str, object]:
    out: dict[str, object] = msgspec.to_builtins(m)
    return out


@endpoint
async def list_conversations(request: Request) -> Response:
    """GET /api/conversations: the caller's conversations, unread first, then flagged."""
    user, _ = await current(request)
    convs = services(request).conversations
    items = await convs.summaries(user)
    return ok({"conversations": items, "unread_total": sum(i["unread"] for i in items)})


@endpoint
async def messages(request: Request) -> Response:
    """GET /api/conversations/{id}/messages?before=&after=&limit=: a history page."""
    user, _ = await current(request)
    before = _int_param(request, "before", 0, 2**53)
    after = _int_param(request, "after", 0, 2**53)
    limit = _int_param(request, "limit", 1, 200) or 50
    page, more = await services(request).conversations.history(
        user, request.path_params["id"], before, after, limit
    )
    return ok({"messages": [_message_json(message_out(m)) for m in page], "has_more": more})


@endpoint
async def conversation_items(request: Request) -> Response:
    """GET /api/conversations/{id}/items: the server-visible part of the items, members only."""
    user, _ = await current(request)
    answer = await services(request).conversations.items(user, request.path_params["id"])
    return ok(answer)


@endpoint
async def read(request: Request) -> Response:
    """POST /api/conversations/{id}/read {seq}: move the read marker forward."""
    user, _ = await current(request)
    body = await json_body(request, ReadBody)
    marker = await services(request).conversations.mark_read(
        user, request.path_params["id"], body.seq
    )
    return ok({"seq": marker})


@endpoint
async def flag(request: Request) -> Response:
    """POST /api/conversations/{id}/flag {flagged}: the counsellor's flag."""
    user, _ = await current(request)
    body = await json_body(request, FlagBody)
    await services(request).conversations.set_flag(user, request.path_params["id"], body.flagged)
    return ok({"flagged": body.flagged})


@endpoint
async def create_beneficiary(request: Request) -> Response:
    """POST /api/beneficiaries: a counsellor creates a beneficiary; returns the activation code."""
    user, _ = await current(request)
    body = await json_body(request, BeneficiaryBody)
    created = await services(request).accounts.create_beneficiary(
        user, body.login, body.display_name, body.programme, body.activation_proof
    )
    return ok(
        {
            "user": created.user.public(),
            "activation_code": created.activation_code,
            "activation_expires": created.activation_expires,
            "conversation_id": created.conversation.id,
        },
        201,
    )


routes = [
    Route("/api/conversations", list_conversations, methods=["GET"]),
    Route("/api/conversations/{id}/messages", messages, methods=["GET"]),
    Route("/api/conversations/{id}/items", conversation_items, methods=["GET"]),
    Route("/api/conversations/{id}/read", read, methods=["POST"]),
    Route("/api/conversations/{id}/flag", flag, methods=["POST"]),
    Route("/api/beneficiaries", create_beneficiary, methods=["POST"]),
]
