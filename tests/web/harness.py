"""Browser-test harness: a real server process, Debian's Chromium, axe-core.

The server runs as ``python -m chat_server --demo`` (the demo accounts are
seeded by the same code as ``chat-admin demo``) on a free loopback port with
its own ``DATA_DIR`` (embedded engine) and ``REQUIRE_E2EE=true``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

REPO = Path(__file__).resolve().parents[2]
WEB_ROOT = REPO / "web_client"
ARTIFACTS = REPO / "tests" / "artifacts"
SCREENSHOTS = REPO / "docs" / "screenshots"
AXE = REPO / "web_client" / "test" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEMO_PASSWORD = "demo-password-2026"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A running ``chat_server`` process and where it keeps its data."""

    url: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def engine_url(self) -> str:
        """The embedded engine's URL (its Unix socket), read from the server's start-up log."""
        for line in self.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("msg") == "embedded MongoDB engine started":
                path = urllib.parse.quote(str(record["path"]), safe="")
                return f"mongodb://{path}/?directConnection=true"
        raise RuntimeError("the server did not log its embedded engine's socket")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as r:  # noqa: S310 - loopback
            body: dict[str, Any] = json.loads(r.read())
            return bool(body.get("ready"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextmanager
def run_server(
    data_dir: Path, timeout: float = 60.0, env_extra: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start the server with the demo accounts; stop it (SIGTERM, then wait) afterwards.

    ``env_extra``: more settings (for example ``ATTACHMENT_SCAN_URL``)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"MONGODB_URL", "REDIS_URL", "STORE"}}
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        DATA_DIR=str(data_dir),
        REQUIRE_E2EE="true",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_extra or {})
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chat_server", "--demo"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", data_dir, log_path, proc)
    try:
        deadline = time.monotonic() + timeout
        while not _ready(server.url):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout}s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files, never cached, no request log; ``files`` are served under ``/vectors/``."""

    def __init__(self, *args: Any, files: Mapping[str, Path], **kwargs: Any) -> None:
        self._files = files  # set before the base class handles the request
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        route = urllib.parse.urlsplit(path).path
        if route.startswith("/vectors/"):
            target = self._files.get(route.removeprefix("/vectors/"))
            return str(target if target is not None else Path(self.directory) / "no-such-file")
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@contextmanager
def static_server(root: Path = WEB_ROOT, files: Mapping[str, Path] | None = None) -> Iterator[str]:
    """Serve `root` on a free loopback port (a secure context for WebCrypto); yield its URL.

    `files` maps names to files served at `/vectors/<name>`.
    """
    handler = functools.partial(_QuietHandler, directory=str(root), files=files or {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="static-http", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run axe-core in the page (its context must bypass the CSP) and return violations."""
    if not AXE.is_file():
        raise FileNotFoundError(f"{AXE} is missing: run `npm ci` in web_client/test")
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => n.target.join(" ")),
            }));
        }"""
    )
    return found


def serious(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the serious and critical ones."""
    return [v for v in violations if v.get("impact") in {"serious", "critical"}]


def axe_serious(page: Page) -> list[dict[str, Any]]:
    """Serious and critical axe-core findings on the page as it is (CSP stays on: DevTools)."""
    page.evaluate(AXE.read_text("utf-8"))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => n.target.join(" ")),
            }));
        }"""
    )
    return serious(found)


def save_screenshot(page: Page, name: str, docs_name: str | None = None) -> Path:
    """Save to tests/artifacts/; copy to docs/screenshots/ if missing or UPDATE_SCREENSHOTS=1."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    if docs_name is not None:
        target = SCREENSHOTS / docs_name
        if not target.exists() or os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return path


def watch_page(page: Page, name: str, problems: list[str]) -> None:
    """Collect CSP refusals and uncaught page errors of ``page`` into ``problems``."""

    def on_console(msg: ConsoleMessage) -> None:
        if "Content Security Policy" in msg.text or "Refused to" in msg.text:
            problems.append(f"{name} CSP: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda err: problems.append(f"{name} page error: {err}"))


def login_demo(page: Page, url: str, login: str) -> None:
    """Log a demo account in at ``url`` and acknowledge its recovery key."""
    page.goto(url)
    page.locator("#login-name").fill(login)
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    ack_recovery_key(page)


def ack_recovery_key(page: Page) -> str:
    """On the recovery-key screen: tick "J'ai noté…" and continue; return the key shown."""
    key = page.locator("#recovery-key")
    expect(key).to_be_visible()
    text = (key.text_content() or "").strip()
    page.get_by_label("J'ai noté ma clé de récupération").check()
    page.get_by_role("button", name="Continuer").click()
    return text


def activate_app(page: Page, app_url: str, code: str, password: str) -> str:
    """Activate a beneficiary's account in the app at ``app_url`` with ``code`` and a new
    ``password``, then acknowledge the recovery key; return the key shown."""
    page.goto(app_url)
    page.get_by_role("button", name="J'ai un code d'activation").click()
    page.get_by_label("Code d'activation").fill(code)
    page.locator("#act-password").fill(password)
    page.get_by_label("Confirmer le mot de passe").fill(password)
    page.get_by_role("button", name="Activer").click()
    return ack_recovery_key(page)


DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass
class DemoPair:
    """The demo counsellor's console and the demo young person's phone, both logged in."""

    server: ServerProcess
    console_ctx: BrowserContext
    app_ctx: BrowserContext
    console: Page
    app: Page
    problems: list[str] = field(default_factory=list)


@contextmanager
def demo_pair(server: ServerProcess, browser: Browser, young: str) -> Iterator[DemoPair]:
    """Log ``jeune1.demo`` in on a phone-sized page (keys first), then ``conseiller.demo``
    in the console with ``young``'s thread open; CSP refusals and page errors go to
    ``problems``."""
    console_ctx = browser.new_context(
        viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris", accept_downloads=True
    )
    app_ctx = browser.new_context(
        viewport=PHONE, locale="fr-FR", timezone_id="Europe/Paris", has_touch=True
    )
    try:
        w = DemoPair(server, console_ctx, app_ctx, console_ctx.new_page(), app_ctx.new_page())
        watch_page(w.console, "console", w.problems)
        watch_page(w.app, "app", w.problems)
        login_demo(w.app, server.url + "/app/", "jeune1.demo")
        expect(w.app.locator("#peer-name")).to_have_text("Karim Benali")
        login_demo(w.console, server.url + "/console/", "conseiller.demo")
        w.console.locator(".conv", has_text=young).click()
        expect(w.console.locator("#thread-title")).to_contain_text(young)
        yield w
    finally:
        console_ctx.close()
        app_ctx.close()
