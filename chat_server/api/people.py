"""Names of the people a thread mentions: senders, former counsellors, supervisors.

A thread outlives its counsellors: a message written by the previous
counsellor, or a system event naming who transferred whom, needs names the
conversation list does not carry. The server already knows them (display
names are server-visible, docs/security.md); this only hands out what the
caller's structure may see.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import BadRequest, current, endpoint, ok, services
from chat_server.rooms.models import Role, User

#: At most this many ids per request.
MAX_IDS = 50


def visible(viewer: User, other: User) -> bool:
    """Whether ``viewer`` may learn ``other``'s name and role.

    Oneself; the staff (counsellors, supervisors) of one's structure; and, for
    staff, the beneficiaries of their structure. A beneficiary never learns
    another beneficiary's name.
    """
    if other.id == viewer.id:
        return True
    if viewer.structure_id is None or other.structure_id != viewer.structure_id:
        return False
    return other.role is not Role.BENEFICIARY or viewer.role is not Role.BENEFICIARY


@endpoint
async def people(request: Request) -> Response:
    """GET /api/people?ids=a,b: ``{"people": [{id, display_name, role}]}``.

    Ids the caller may not see, or that do not exist, are left out (no error:
    the client shows a generic word instead). More than ``MAX_IDS`` ids is
    ``400 invalid_field``.
    """
    user, _ = await current(request)
    raw = request.query_params.get("ids", "")
    ids = sorted({i for i in raw.split(",") if i})
    if len(ids) > MAX_IDS:
        raise BadRequest("invalid_field", f"'ids' holds at most {MAX_IDS} ids")
    found = await services(request).accounts_store.get_users(ids)
    out = [
        {"id": u.id, "display_name": u.display_name, "role": u.role.value}
        for u in found.values()
        if visible(user, u)
    ]
    return ok({"people": sorted(out, key=lambda p: str(p["id"]))})


routes = [Route("/api/people", people, methods=["GET"])]
