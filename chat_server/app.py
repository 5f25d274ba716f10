"""create_app() -> Starlette: the lifespan builds Services; the routes."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from chat_server import transport
from chat_server.api import (
    activation,
    attachments,
    auth,
    broadcast,
    conversations,
    devices,
    keys,
    lifecycle,
    onboarding,
    people,
    portfolio,
    push,
    structure_keys,
)
from chat_server.api.common import error
from chat_server.rooms.service import MessageVerifier
from chat_server.services import Services, build_services
from chat_server.settings import Settings

WEB_ROOT = Path(__file__).resolve().parent.parent / "web_client"
WEB_FOLDERS = ("console", "app", "shared")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'; manifest-src 'self'; worker-src 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class SecurityHeaders:
    """Adds the security headers to every HTTP response; API answers are never cached.

    ``connect_also``: origins the pages may call besides their own (the structure's
    attachment scanning service, ``ATTACHMENT_SCAN_URL``).
    """

    def __init__(self, app: ASGIApp, connect_also: tuple[str, ...] = ()) -> None:
        self.app = app
        self.headers = SECURITY_HEADERS
        if connect_also:
            csp = CSP.replace("connect-src 'self'", "connect-src 'self' " + " ".join(connect_also))
            self.headers = [(b"content-security-policy", csp.encode()), *SECURITY_HEADERS[1:]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(self.headers)
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _scan_origin(settings: Settings) -> tuple[str, ...]:
    if not settings.attachment_scan_url:
        return ()
    parts = urlsplit(settings.attachment_scan_url)
    return (f"{parts.scheme}://{parts.netloc}",)


def create_app(
    settings: Settings, verifier: MessageVerifier | None = None, *, demo: bool = False
) -> Starlette:
    """The ASGI application. Services start in the lifespan and stop with it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = await build_services(settings, verifier)
        app.state.services = svc
        # Thousands of long-lived connections make full collections pause the
        # loop for 100-200 ms (docs/benchmarks.md): collect young objects less
        # often, and never what start-up built (it lives as long as the process).
        gc.set_threshold(50_000, 20, 1000)
        gc.freeze()
        if demo:
            from chat_server.admin import seed_demo

            lines = await seed_demo(svc)
            url = f"http://{settings.host}:{settings.port}"
            lines += [f"Console: {url}/console/   App: {url}/app/"]
            print("\n".join(lines), flush=True)
        try:
            yield
        finally:
            await svc.close()

    def svc_of(request: Request | WebSocket) -> Services:
        s: Services = request.app.state.services
        return s

    async def healthz(request: Request) -> Response:
        """Liveness: the process answers (200 even when a dependency is down: restarting
        the process would not help). The body says ``degraded`` with the last background
        check of each dependency; no I/O here, so it answers under any load."""
        checks = svc_of(request).checks
        if all(checks.values()):
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "degraded", "checks": checks})

    async def readyz(request: Request) -> Response:
        """Readiness: the store and the broker answer."""
        checks = await svc_of(request).ready()
        status = 200 if all(checks.values()) else 503
        return JSONResponse({"ready": status == 200, "checks": checks}, status_code=status)

    async def ws_endpoint(ws: WebSocket) -> None:
        await transport.serve(ws, svc_of(ws))

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "not_found", "no such resource")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method_not_allowed", "method not allowed on this resource")

    async def root(request: Request) -> Response:
        return RedirectResponse("/console/", status_code=302)

    routes: list[BaseRoute] = [
        Route("/", root),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        WebSocketRoute("/ws", ws_endpoint),
        *auth.routes,
        *conversations.routes,
        *keys.routes,
        *structure_keys.routes,
        *lifecycle.routes,
        *push.routes,
        *attachments.routes,
        *people.routes,
        *activation.routes,
        *onboarding.routes,
        *portfolio.routes,
        *broadcast.routes,
        *devices.routes,
    ]
    # Only the client folders are served (not web_client/test), each under its
    # own prefix, so an unknown /api path or method still gets the JSON errors.
    for folder in WEB_FOLDERS:
        if (WEB_ROOT / folder).is_dir():
            routes.append(
                Mount(
                    f"/{folder}", StaticFiles(directory=WEB_ROOT / folder, html=True), name=folder
                )
            )
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders, connect_also=_scan_origin(settings))],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
