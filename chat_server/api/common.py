"""Shared helpers of the HTTP endpoints: JSON bodies, errors, authentication."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat_server.rooms.errors import DomainError, Unauthenticated
from chat_server.rooms.models import Session, User
from chat_server.services import Services
from chat_server.storage.base import StoreError

T = TypeVar("T")
MAX_JSON_BYTES = 64 * 1024


def error(status: int, code: str, message: str) -> JSONResponse:
    """The one error shape of the HTTP API: ``{"error": {"code", "message"}}``."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def services(request: Request) -> Services:
    """The process's services, set by the app's lifespan."""
    svc: Services = request.app.state.services
    return svc


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes.

    Checks ``Content-Length`` first and counts while streaming, so an
    oversized body is never held in memory.
    """
    too_big = BadRequest("body_too_large", f"the request body exceeds {limit} bytes", 413)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, schema: type[T], limit: int = MAX_JSON_BYTES) -> T:
    """Decode and validate the request body against ``schema`` (a msgspec Struct)."""
    return decode_json(await read_limited(request, limit), schema)


def decode_json(raw: bytes, schema: type[T]) -> T:
    """Decode and validate a body already read; ``BadRequest`` with the API's codes."""
    try:
        return msgspec.json.decode(raw, type=schema)
    except msgspec.ValidationError as exc:
        raise BadRequest(_validation_code(str(exc)), str(exc)) from None
    except msgspec.DecodeError:
        raise BadRequest("malformed_json", "the body must be a JSON object") from None
    except RecursionError:
        raise BadRequest("malformed_json", "the body is nested too deeply") from None


def _validation_code(text: str) -> str:
    """The error code of a msgspec validation message (the codes of ``docs/protocol.md``)."""
    if text.startswith("Expected `object`") and " - at `$" not in text:
        return "malformed_json"  # valid JSON, but not an object
    if text.startswith("Object missing required field"):
        return "missing_field"
    if text.startswith("Object contains unknown field"):
        return "unknown_field"
    return "invalid_field"


class BadRequest(Exception):
    """A request the HTTP layer refuses before any service is called."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def bearer(request: Request) -> str:
    """The token of an ``Authorization: Bearer`` header, or raise ``Unauthenticated``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("an 'Authorization: Bearer <token>' header is required")
    return token.strip()


async def current(request: Request) -> tuple[User, Session]:
    """The authenticated user and session of this request."""
    return await services(request).accounts.authenticate(bearer(request))


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Endpoint) -> Endpoint:
    """Turn domain and request errors into the API's error shape."""

    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except DomainError as exc:
            response = error(exc.status, exc.code, exc.message)
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                response.headers["retry-after"] = str(max(1, math.ceil(retry_after)))
            return response
        except BadRequest as exc:
            return error(exc.status, exc.code, exc.message)
        except StoreError:
            return error(503, "store_unavailable", "the store is unavailable; retry later")

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def ok(data: Any, status: int = 200) -> JSONResponse:
    """A JSON success answer."""
    return JSONResponse(data, status_code=status)
