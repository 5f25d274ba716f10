"""Onboarding over HTTP: the counsellor issues a beneficiary's activation code again."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import current, endpoint, ok, read_limited, services


@endpoint
async def issue_activation(request: Request) -> Response:
    """POST /api/conversations/{id}/activation: a new one-time code for the beneficiary.

    The body is empty (or ``{}``); the previous code stops working. Answers
    ``{user, activation_code, activation_expires, kind}``.
    """
    user, _ = await current(request)
    await read_limited(request, 1024)  # nothing to read; bounded like every body
    issued = await services(request).onboarding.issue_code(user, request.path_params["id"])
    return ok(
        {
            "user": issued.beneficiary.public(),
            "activation_code": issued.code,
            "activation_expires": issued.expires_at,
            "kind": issued.kind,
        }
    )


routes = [
    Route("/api/conversations/{id}/activation", issue_activation, methods=["POST"]),
]
