"""Onboarding over HTTP: the counsellor issues a beneficiary's activation code again."""

from __future__ import annotations

from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import current, decode_json, endpoint, ok, read_limited, services
from chat_server.api.conversations import ActivationProof


class IssueBody(Struct, forbid_unknown_fields=True):
    #: The console made the code, as for ``POST /api/beneficiaries``.
    activation_proof: ActivationProof | None = None


@endpoint
async def issue_activation(request: Request) -> Response:
    """POST /api/conversations/{id}/activation: a new one-time code for the beneficiary.

    The body is empty, ``{}``, or ``{activation_proof}`` (the console made the code:
    ``activation_code`` is then null); the previous code stops working. Answers
    ``{user, activation_code, activation_expires, kind}``.
    """
    user, _ = await current(request)
    raw = await read_limited(request, 1024)
    body = decode_json(raw, IssueBody) if raw.strip() else IssueBody()
    issued = await services(request).onboarding.issue_code(
        user, request.path_params["id"], body.activation_proof
    )
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
