"""The structure-key API (docs/protocol.md, "Structure key").

GET  /api/structure-key          the key, this device's grant, devices waiting (supervisors)
POST /api/structure-key          a supervisor's device creates it, with its own grant
POST /api/structure-key/grants   a supervisor's holder device hands it to staff devices
POST /api/structure-key/endorsements   a staff device endorses the key it pinned
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import current, endpoint, json_body, ok, services
from chat_server.rooms.structure_keys import MAX_GRANTS, StructureKeyService, structure_key_json


class CreateBody(Struct, forbid_unknown_fields=True):
    public_key: Annotated[str, Meta(min_length=1, max_length=200)]
    sig: Annotated[str, Meta(min_length=1, max_length=200)]
    grant: dict[str, Any]


class EndorseBody(Struct, forbid_unknown_fields=True):
    structure: Annotated[str, Meta(min_length=1, max_length=200)]
    key_id: Annotated[str, Meta(min_length=1, max_length=200)]
    device_id: Annotated[str, Meta(min_length=1, max_length=200)]
    sig: Annotated[str, Meta(min_length=1, max_length=200)]


class GrantsBody(Struct, forbid_unknown_fields=True):
    grants: Annotated[list[dict[str, Any]], Meta(max_length=MAX_GRANTS)]


#: Body room per grant in ``POST /api/structure-key/grants`` (a grant is ~380 bytes).
GRANT_BYTES = 1024


def _service(request: Request) -> StructureKeyService:
    svc = services(request).keys.structure
    assert svc is not None  # noqa: S101 - always wired by build_services
    return svc


@endpoint
async def get_key(request: Request) -> Response:
    """GET /api/structure-key: the caller's structure key as this device sees it."""
    user, session = await current(request)
    return ok(await _service(request).view(user, session.device_id))


@endpoint
async def create_key(request: Request) -> Response:
    """POST /api/structure-key: create the structure's key (supervisors' devices)."""
    user, session = await current(request)
    body = await json_body(request, CreateBody)
    key = await _service(request).create(
        user, session.device_id, body.public_key, body.sig, body.grant
    )
    return ok({"key": structure_key_json(key)}, 201)


@endpoint
async def add_grants(request: Request) -> Response:
    """POST /api/structure-key/grants: hand the key to staff devices."""
    user, session = await current(request)
    # A grant is about 380 bytes of JSON: room for MAX_GRANTS of them.
    body = await json_body(request, GrantsBody, limit=MAX_GRANTS * GRANT_BYTES)
    added = await _service(request).add_grants(user, session.device_id, body.grants)
    return ok({"added": added})


@endpoint
async def endorse(request: Request) -> Response:
    """POST /api/structure-key/endorsements: this staff device endorses the key it pinned."""
    user, session = await current(request)
    body = await json_body(request, EndorseBody)
    added = await _service(request).endorse(
        user, session.device_id, body.structure, body.key_id, body.device_id, body.sig
    )
    return ok({"added": int(added)})


routes = [
    Route("/api/structure-key", get_key, methods=["GET"]),
    Route("/api/structure-key", create_key, methods=["POST"]),
    Route("/api/structure-key/grants", add_grants, methods=["POST"]),
    Route("/api/structure-key/endorsements", endorse, methods=["POST"]),
]
