"""The activation box over HTTP (docs/protocol.md, "End-to-end keys")."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import current, endpoint, json_body, ok, services
from chat_server.rooms.activation import MAX_BOX_BYTES, ActivationBoxes

_B64 = "^[A-Za-z0-9_-]+$"


class BoxBody(Struct, forbid_unknown_fields=True):
    v: Literal[1]
    nonce: Annotated[str, Meta(min_length=16, max_length=16, pattern=_B64)]
    box: Annotated[str, Meta(min_length=22, max_length=MAX_BOX_BYTES, pattern=_B64)]


def _boxes(request: Request) -> ActivationBoxes:
    svc = services(request)
    return ActivationBoxes(svc.messages, svc.accounts_store, svc.key_store)


@endpoint
async def put_box(request: Request) -> Response:
    """PUT: the counsellor leaves the box (before the beneficiary has a device)."""
    user, _ = await current(request)
    body = await json_body(request, BoxBody)
    await _boxes(request).put(user, request.path_params["id"], msgspec.to_builtins(body))
    return ok({"ok": True})


@endpoint
async def get_box(request: Request) -> Response:
    """GET: the box, for a member."""
    user, _ = await current(request)
    return ok(await _boxes(request).get(user, request.path_params["id"]))


@endpoint
async def drop_box(request: Request) -> Response:
    """DELETE: the beneficiary's device took the keys."""
    user, _ = await current(request)
    await _boxes(request).drop(user, request.path_params["id"])
    return ok({"ok": True})


routes = [
    Route("/api/conversations/{id}/activation-box", put_box, methods=["PUT"]),
    Route("/api/conversations/{id}/activation-box", get_box, methods=["GET"]),
    Route("/api/conversations/{id}/activation-box", drop_box, methods=["DELETE"]),
]
