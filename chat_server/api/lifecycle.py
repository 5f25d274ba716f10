"""The data lifecycle over HTTP: delete one's account, archive and restore a conversation."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import current, endpoint, json_body, ok, services
from chat_server.rooms.service import archive_json


class DeleteAccountBody(Struct, forbid_unknown_fields=True):
    password: Annotated[str, Meta(min_length=1, max_length=256)]


class ArchiveBody(Struct, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=40)]


@endpoint
async def delete_account(request: Request) -> Response:
    """POST /api/account/delete {password}: a beneficiary erases their own account."""
    user, _ = await current(request)
    body = await json_body(request, DeleteAccountBody)
    await services(request).lifecycle.delete_own_account(user, body.password)
    return ok({"deleted": True})


@endpoint
async def archive(request: Request) -> Response:
    """POST /api/conversations/{id}/archive {reason}: the counsellor archives the conversation."""
    user, _ = await current(request)
    body = await json_body(request, ArchiveBody)
    conv = await services(request).lifecycle.archive(user, request.path_params["id"], body.reason)
    return ok({"id": conv.id, "archived": archive_json(conv)})


@endpoint
async def restore(request: Request) -> Response:
    """POST /api/conversations/{id}/restore: a supervisor restores an archived conversation."""
    user, _ = await current(request)
    conv = await services(request).lifecycle.restore(user, request.path_params["id"])
    return ok({"id": conv.id, "archived": None})


routes = [
    Route("/api/account/delete", delete_account, methods=["POST"]),
    Route("/api/conversations/{id}/archive", archive, methods=["POST"]),
    Route("/api/conversations/{id}/restore", restore, methods=["POST"]),
]
