"""Web Push: the server's VAPID key, this device's subscription and its preferences."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import current, endpoint, error, json_body, ok, services
from notifications.endpoint import MAX_ENDPOINT_LENGTH
from notifications.service import Preferences as Prefs
from notifications.service import PushRefused, subscription_json

Key = Annotated[str, Meta(min_length=1, max_length=200)]
Hhmm = Annotated[str, Meta(min_length=5, max_length=5)]
ConvId = Annotated[str, Meta(min_length=1, max_length=64)]
MAX_MUTED = 200


class SubscriptionKeys(Struct, forbid_unknown_fields=True):
    p256dh: Key
    auth: Key


class PreferencesBody(Struct, forbid_unknown_fields=True):
    muted_types: Annotated[list[str], Meta(max_length=10)] = []
    quiet_start: Hhmm = "20:00"
    quiet_end: Hhmm = "08:00"
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "Europe/Paris"
    muted_conversations: Annotated[list[ConvId], Meta(max_length=MAX_MUTED)] = []

    def prefs(self) -> Prefs:
        return Prefs(
            tuple(dict.fromkeys(self.muted_types)),
            self.quiet_start,
            self.quiet_end,
            self.timezone,
            tuple(dict.fromkeys(self.muted_conversations)),
        )


class SubscribeBody(PreferencesBody, forbid_unknown_fields=True):
    endpoint: Annotated[str, Meta(min_length=1, max_length=MAX_ENDPOINT_LENGTH)] = ""
    keys: SubscriptionKeys | None = None


async def _check_muted(request: Request, user_id: str, conv_ids: tuple[str, ...]) -> None:
    conversations = services(request).conversations
    for conv_id in conv_ids:
        await conversations.member_conversation(user_id, conv_id)


@endpoint
async def vapid_key(request: Request) -> Response:
    """GET /api/push/key: the server's VAPID public key (``applicationServerKey``)."""
    return ok({"public_key": services(request).push.vapid.public_key})


@endpoint
async def subscribe(request: Request) -> Response:
    """POST /api/push/subscriptions: register this device's push subscription."""
    user, session = await current(request)
    body = await json_body(request, SubscribeBody)
    if not body.endpoint or body.keys is None:
        return error(400, "missing_field", "endpoint and keys {p256dh, auth} are required")
    prefs = body.prefs()
    await _check_muted(request, user.id, prefs.muted_conversations)
    try:
        sub = await services(request).push.subscribe(
            user.id, session.device_id, body.endpoint, body.keys.p256dh, body.keys.auth, prefs
        )
    except PushRefused as exc:
        return error(exc.status, exc.code, exc.message)
    return ok({"subscription": subscription_json(sub)}, 201)


@endpoint
async def list_subscriptions(request: Request) -> Response:
    """GET /api/push/subscriptions: the account's subscriptions; ``current`` is this device's."""
    user, session = await current(request)
    subs = await services(request).push.subscriptions(user.id)
    mine = next((s.id for s in subs if s.device_id == session.device_id), None)
    return ok({"subscriptions": [subscription_json(s) for s in subs], "current": mine})


@endpoint
async def unsubscribe(request: Request) -> Response:
    """DELETE /api/push/subscriptions: stop pushes to this device."""
    user, session = await current(request)
    removed = await services(request).push.unsubscribe(user.id, session.device_id)
    return ok({"ok": True, "removed": removed})


@endpoint
async def unsubscribe_one(request: Request) -> Response:
    """DELETE /api/push/subscriptions/{id}: remove one of the account's subscriptions."""
    user, session = await current(request)
    sub_id = request.path_params["sub_id"]
    removed = await services(request).push.unsubscribe(user.id, session.device_id, sub_id)
    if not removed:
        return error(404, "not_found", "no such subscription")
    return ok({"ok": True, "removed": removed})


@endpoint
async def preferences(request: Request) -> Response:
    """PUT /api/push/preferences: this device's types, quiet hours and muted conversations."""
    user, session = await current(request)
    body = await json_body(request, PreferencesBody)
    prefs = body.prefs()
    await _check_muted(request, user.id, prefs.muted_conversations)
    try:
        sub = await services(request).push.update_preferences(user.id, session.device_id, prefs)
    except PushRefused as exc:
        return error(exc.status, exc.code, exc.message)
    return ok({"subscription": subscription_json(sub)})


routes = [
    Route("/api/push/key", vapid_key, methods=["GET"]),
    Route("/api/push/subscriptions", subscribe, methods=["POST"]),
    Route("/api/push/subscriptions", list_subscriptions, methods=["GET"]),
    Route("/api/push/subscriptions", unsubscribe, methods=["DELETE"]),
    Route("/api/push/subscriptions/{sub_id}", unsubscribe_one, methods=["DELETE"]),
    Route("/api/push/preferences", preferences, methods=["PUT"]),
]
