"""``chat-server``: run the web process (uvicorn) on the configured settings.

chat-server            # embedded defaults: embedded engine, in-process broker
chat-server --demo     # same, and seed demo accounts (printed at start)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

import uvicorn

from chat_server import logs
from chat_server.app import create_app
from chat_server.server_protocols import protocols
from chat_server.settings import Settings, SettingsError, load_settings


def _uvicorn_config(settings: Settings, app: object) -> uvicorn.Config:
    """uvicorn's configuration for ``settings`` (also used by the tests and the benchmarks)."""
    http, ws = protocols(settings)
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        http=http,
        ws=ws,
        # Client addresses (throttling) come from X-Forwarded-For only when the peer is
        # one of TRUSTED_PROXIES; with none, the connection's own address is used.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.heartbeat_seconds,
        ws_ping_timeout=settings.heartbeat_seconds,
        ws_per_message_deflate=False,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``chat-server``."""
    ap = argparse.ArgumentParser(prog="chat-server", description="run the chat server")
    ap.add_argument("--demo", action="store_true", help="seed demo accounts and print them")
    args = ap.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"chat-server: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    app = create_app(settings, demo=args.demo)
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    server = uvicorn.Server(_uvicorn_config(settings, app))
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(server.serve())
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
