"""Broadcast over HTTP: a counsellor's lists of their own beneficiaries, and the records of
messages sent to several of them (docs/protocol.md, "Broadcast")."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import BadRequest, current, endpoint, json_body, ok, services
from chat_server.protocol import Id

#: Bounds of the JSON shapes; the service checks the real limits (MAX_MEMBERS, ...).
Name = Annotated[str, Meta(max_length=200)]
Members = Annotated[list[Id], Meta(max_length=1000)]
#: Records per page of ``GET /api/broadcasts``.
DEFAULT_PAGE = 20
MAX_PAGE = 100


class ListBody(Struct, forbid_unknown_fields=True):
    name: Name
    members: Members


class ListChange(Struct, forbid_unknown_fields=True):
    name: Name | None = None
    members: Members | None = None


class CopyBody(Struct, forbid_unknown_fields=True):
    conversation_id: Id
    client_id: Id


class BroadcastBody(Struct, forbid_unknown_fields=True):
    copies: Annotated[list[CopyBody], Meta(max_length=1000)]
    list_id: Id | None = None


@endpoint
async def lists(request: Request) -> Response:
    """GET /api/broadcast-lists: the caller's lists with each member's state."""
    user, _ = await current(request)
    return ok({"lists": await services(request).broadcasts.lists(user)})


@endpoint
async def create_list(request: Request) -> Response:
    """POST /api/broadcast-lists {name, members}: a new list."""
    user, _ = await current(request)
    body = await json_body(request, ListBody)
    created = await services(request).broadcasts.create(user, body.name, body.members)
    return ok({"list": created}, 201)


@endpoint
async def change_list(request: Request) -> Response:
    """PATCH /api/broadcast-lists/{id} {name?, members?}: rename, change the members."""
    user, _ = await current(request)
    body = await json_body(request, ListChange)
    changed = await services(request).broadcasts.update(
        user, request.path_params["id"], body.name, body.members
    )
    return ok({"list": changed})


@endpoint
async def delete_list(request: Request) -> Response:
    """DELETE /api/broadcast-lists/{id}."""
    user, _ = await current(request)
    await services(request).broadcasts.delete(user, request.path_params["id"])
    return ok({"deleted": True})


@endpoint
async def record(request: Request) -> Response:
    """POST /api/broadcasts {list_id?, copies: [{conversation_id, client_id}]}: record a
    broadcast before sending its copies."""
    user, _ = await current(request)
    body = await json_body(request, BroadcastBody)
    copies = [(c.conversation_id, c.client_id) for c in body.copies]
    created = await services(request).broadcasts.record(user, body.list_id, copies)
    return ok({"broadcast": created}, 201)


@endpoint
async def broadcasts(request: Request) -> Response:
    """GET /api/broadcasts?limit=: the caller's newest broadcasts, each copy's state."""
    user, _ = await current(request)
    text = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE:
        raise BadRequest("invalid_field", f"'limit' must be 1 to {MAX_PAGE}", 422)
    found = await services(request).broadcasts.broadcasts(user, int(text))
    return ok({"broadcasts": found})


@endpoint
async def one_broadcast(request: Request) -> Response:
    """GET /api/broadcasts/{id}: one of the caller's broadcasts, each copy's state."""
    user, _ = await current(request)
    found = await services(request).broadcasts.broadcast(user, request.path_params["id"])
    return ok({"broadcast": found})


routes = [
    Route("/api/broadcast-lists", lists, methods=["GET"]),
    Route("/api/broadcast-lists", create_list, methods=["POST"]),
    Route("/api/broadcast-lists/{id}", change_list, methods=["PATCH"]),
    Route("/api/broadcast-lists/{id}", delete_list, methods=["DELETE"]),
    Route("/api/broadcasts", broadcasts, methods=["GET"]),
    Route("/api/broadcasts", record, methods=["POST"]),
    Route("/api/broadcasts/{id}", one_broadcast, methods=["GET"]),
]
