"""Login, activation, logout, the current account."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.accounts import Login
from chat_server.api.common import BadRequest, bearer, current, endpoint, json_body, ok, services

DeviceId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


class LoginBody(Struct, forbid_unknown_fields=True):
    login: Annotated[str, Meta(min_length=1, max_length=64)]
    password: Annotated[str, Meta(min_length=1, max_length=256)]
    device_id: DeviceId | None = None


_B64 = "^[A-Za-z0-9_-]+$"


class ActivateBody(Struct, forbid_unknown_fields=True):
    password: Annotated[str, Meta(min_length=1, max_length=256)]
    code: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    #: base64url of the 32-byte proof derived from a client-made code.
    proof: Annotated[str, Meta(min_length=43, max_length=43, pattern=_B64)] | None = None
    device_id: DeviceId | None = None


def _login_answer(login: Login) -> Response:
    return ok(
        {
            "token": login.token,
            "user": login.user.public(),
            "device_id": login.device_id,
            "expires_at": login.expires_at,
        }
    )


@endpoint
async def login(request: Request) -> Response:
    """POST /api/login: password login; returns a session token bound to a device."""
    body = await json_body(request, LoginBody)
    svc = services(request)
    client = request.client.host if request.client else "-"
    login = await svc.accounts.login(body.login, body.password, body.device_id, client)
    return _login_answer(login)


@endpoint
async def activate(request: Request) -> Response:
    """POST /api/activate: one-time code + new password; returns a session."""
    body = await json_body(request, ActivateBody)
    if (body.code is None) == (body.proof is None):
        raise BadRequest("invalid_field", "give either 'code' or 'proof'")
    svc = services(request)
    client = request.client.host if request.client else "-"
    login = await svc.accounts.activate(
        body.code, body.password, body.device_id, client, proof=body.proof
    )
    return _login_answer(login)


@endpoint
async def logout(request: Request) -> Response:
    """POST /api/logout: end this session."""
    user, session = await current(request)
    svc = services(request)
    await svc.accounts.logout(bearer(request))
    await svc.hub.revoke(user.id, session.token_hash)
    return ok({"ok": True})


@endpoint
async def logout_all(request: Request) -> Response:
    """POST /api/logout-all: end every session of this account."""
    user, _ = await current(request)
    svc = services(request)
    count = await svc.accounts.logout_everywhere(user.id)
    await svc.hub.revoke(user.id, "*")
    return ok({"ok": True, "sessions_ended": count})


@endpoint
async def me(request: Request) -> Response:
    """GET /api/me: the current account and device, and the total unread count."""
    user, session = await current(request)
    unread = await services(request).conversations.unread_total(user)
    return ok({"user": user.public(), "device_id": session.device_id, "unread_total": unread})


routes = [
    Route("/api/login", login, methods=["POST"]),
    Route("/api/activate", activate, methods=["POST"]),
    Route("/api/logout", logout, methods=["POST"]),
    Route("/api/logout-all", logout_all, methods=["POST"]),
    Route("/api/me", me, methods=["GET"]),
]
