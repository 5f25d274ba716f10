"""Attachments over HTTP: streamed upload and download of encrypted blobs, and the limits."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from chat_server.api.common import BadRequest, current, endpoint, ok, services


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest("invalid_field", "Content-Length must be a number of bytes")
    return int(raw)


@endpoint
async def limits(request: Request) -> Response:
    """GET /api/attachments/limits: what the apps check before encrypting a file."""
    await current(request)
    return ok(services(request).attachments.limits())


@endpoint
async def upload(request: Request) -> Response:
    """POST /api/conversations/{id}/attachments (body: the encrypted blob, streamed)."""
    user, _ = await current(request)
    svc = services(request).attachments
    blob = await svc.upload(
        user, request.path_params["id"], request.stream(), _declared_length(request)
    )
    return ok({"blob": blob.id, "size": blob.size, "created_at": blob.created_at}, 201)


@endpoint
async def download(request: Request) -> Response:
    """GET /api/attachments/{blob}: the encrypted blob, streamed, to the conversation's
    members (or, with ``?grant=``, to the holder of a download grant)."""
    svc = services(request).attachments
    grant = request.query_params.get("grant")
    if grant:
        blob, content = await svc.download_granted(request.path_params["blob"], grant)
    else:
        user, _ = await current(request)
        blob, content = await svc.download(user, request.path_params["blob"])
    return StreamingResponse(
        content,
        media_type="application/octet-stream",
        headers={"content-length": str(blob.size)},
    )


@endpoint
async def grant(request: Request) -> Response:
    """POST /api/attachments/{blob}/grant: a short-lived download URL for a scanning
    service, for a member of the blob's conversation."""
    user, _ = await current(request)
    blob_id = request.path_params["blob"]
    token, expires_at = await services(request).attachments.grant(user, blob_id)
    return ok({"url": f"/api/attachments/{blob_id}?grant={token}", "expires_at": expires_at})


routes = [
    Route("/api/attachments/limits", limits, methods=["GET"]),
    Route("/api/attachments/{blob}", download, methods=["GET"]),
    Route("/api/attachments/{blob}/grant", grant, methods=["POST"]),
    Route("/api/conversations/{id}/attachments", upload, methods=["POST"]),
]
