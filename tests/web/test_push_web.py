"""Push notifications in Chromium: two people, real server (E2EE on), the real service workers.

Chromium's DevTools protocol delivers a push (``ServiceWorker.deliverPushMessage``)
to each app's registered service worker, with the payload the worker builds
(``notifications.payload.message_payloads`` over the stored message, still
encrypted). The service worker decrypts the preview with the keys the browser
holds and shows "<prénom> : <début du message>"; with a key it does not hold,
the generic text; nothing for the conversation on screen; a click opens the
conversation. The invitation to turn notifications on (French explanation)
comes after the person's first message and passes axe-core.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    BrowserContext,
    CDPSession,
    Page,
    ViewportSize,
    Worker,
    expect,
)

from notifications.payload import message_payloads
from tests.web.harness import (
    ServerProcess,
    chromium,
    login_demo,
    run_server,
    save_screenshot,
    watch_page,
)
from tests.web.test_thread_items import _axe

pytestmark = pytest.mark.browser

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
YOUNG = "Inès Moreau"
COUNSELLOR = "Karim Benali"

expect.set_options(timeout=20_000)


@dataclass
class World:
    server: ServerProcess
    console_ctx: BrowserContext
    app_ctx: BrowserContext
    console: Page
    app: Page
    problems: list[str] = field(default_factory=list)
    conversation: str = ""


def _service_worker(ctx: BrowserContext, scope: str) -> Worker:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for w in ctx.service_workers:
            if f"{scope}sw.js" in w.url:
                return w
        time.sleep(0.1)
    raise AssertionError(f"no service worker for {scope}")


def _registration_id(cdp: CDPSession, scope_url: str) -> str:
    found: dict[str, str] = {}

    def on_update(event: dict[str, Any]) -> None:
        for reg in event.get("registrations", []):
            if reg["scopeURL"] == scope_url and not reg.get("isDeleted"):
                found["id"] = reg["registrationId"]

    cdp.on("ServiceWorker.workerRegistrationUpdated", on_update)
    cdp.send("ServiceWorker.enable")
    deadline = time.monotonic() + 20
    while "id" not in found and time.monotonic() < deadline:
        cdp.send("Runtime.evaluate", {"expression": "1"})  # lets events arrive
        time.sleep(0.1)
    assert "id" in found, f"no registration for {scope_url}"
    return found["id"]


def _deliver(page: Page, scope: str, data: bytes) -> None:
    cdp = page.context.new_cdp_session(page)
    try:
        origin = page.url.split("/", 3)[:3]
        base = "/".join(origin)
        reg = _registration_id(cdp, base + scope)
        cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": base, "registrationId": reg, "data": data.decode()},
        )
    finally:
        cdp.detach()


def _notifications(worker: Worker) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = worker.evaluate(
        """async () => (await self.registration.getNotifications()).map(
            (n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }))"""
    )
    return found


def _wait_notification(worker: Worker, body: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = _notifications(worker)
        for n in seen:
            if n["body"] == body:
                return n
        time.sleep(0.1)
    raise AssertionError(f"no notification {body!r}; shown: {seen}")


def _clear(worker: Worker) -> None:
    worker.evaluate(
        "async () => (await self.registration.getNotifications()).forEach((n) => n.close())"
    )


def _click(worker: Worker, tag: str) -> None:
    """The notification's click, as the system would dispatch it to the service worker."""
    worker.evaluate(
        """async (tag) => {
            const [n] = await self.registration.getNotifications({ tag });
            self.dispatchEvent(new NotificationEvent("notificationclick", { notification: n }));
        }""",
        tag,
    )


def _history(page: Page, token_js: str, conversation: str) -> list[dict[str, Any]]:
    """The conversation's stored messages as the page's session reads them (still encrypted)."""
    answer: dict[str, Any] = page.evaluate(
        """async ([tokenJs, conv]) => {
            const token = await (new Function(`return (async () => ${tokenJs})()`))();
            const r = await fetch(`/api/conversations/${conv}/messages?limit=50`, {
                headers: { Authorization: `Bearer ${token}` } });
            return r.json();
        }""",
        [token_js, conversation],
    )
    return list(answer["messages"])


APP_SESSION = "(await (await import('/shared/idb.js')).idbGet('kv', 'session'))"
APP_TOKEN = f"{APP_SESSION}.token"
CONSOLE_TOKEN = "sessionStorage.getItem('cejchat.console.session')"


def _payload(message: dict[str, Any], name: str, role: str) -> bytes:
    full, _ = message_payloads(message["conversation"], message["seq"], name, role, message)
    return full


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("push-web-server")
    with run_server(data_dir) as server, chromium() as browser:
        console_ctx = browser.new_context(
            viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris"
        )
        app_ctx = browser.new_context(
            viewport=PHONE, locale="fr-FR", timezone_id="Europe/Paris", has_touch=True
        )
        try:
            w = World(server, console_ctx, app_ctx, console_ctx.new_page(), app_ctx.new_page())
            watch_page(w.console, "console", w.problems)
            watch_page(w.app, "app", w.problems)
            login_demo(w.app, server.url + "/app/", "jeune1.demo")
            expect(w.app.locator("#peer-name")).to_have_text(COUNSELLOR)
            login_demo(w.console, server.url + "/console/", "conseiller.demo")
            expect(w.console.locator(".conv", has_text=YOUNG)).to_be_visible()
            yield w
        finally:
            console_ctx.close()
            app_ctx.close()


def test_invitation_after_the_first_message_in_french(world: World) -> None:
    app = world.app
    # Never on first load.
    expect(app.locator("#push-invite")).to_be_hidden()
    app.locator("#message").fill("Bonjour, j'ai une question sur mon contrat")
    app.get_by_role("button", name="Envoyer").click()
    invite = app.locator("#push-invite")
    expect(invite).to_be_visible()
    expect(invite).to_contain_text("Être prévenu·e quand votre conseiller vous écrit ?")
    expect(invite).to_contain_text("seul cet appareil peut l'afficher")
    expect(invite.get_by_role("button", name="Activer les notifications")).to_be_visible()
    save_screenshot(app, "push-invite-app.png")
    assert _axe(app) == []
    invite.get_by_role("button", name="Plus tard").click()
    expect(invite).to_be_hidden()
    # "Plus tard" is remembered on this device.
    app.locator("#message").fill("Et aussi pour la formation")
    app.get_by_role("button", name="Envoyer").click()
    expect(app.locator(".msg-mine", has_text="Et aussi pour la formation")).to_be_visible()
    expect(invite).to_be_hidden()


def test_settings_dialog_in_french(world: World) -> None:
    app = world.app
    app.get_by_role("button", name="Menu").click()
    app.get_by_role("button", name="Notifications").click()
    dialog = app.get_by_role("dialog", name="Notifications")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Désactivées sur cet appareil.")
    expect(dialog.get_by_label("les messages")).to_be_checked()
    expect(dialog.get_by_label("De", exact=True)).to_have_value("20:00")
    expect(dialog.get_by_label("À", exact=True)).to_have_value("08:00")
    assert _axe(app) == []
    save_screenshot(app, "push-settings-app.png")
    dialog.get_by_role("button", name="Fermer").click()
    expect(dialog).to_be_hidden()


def test_counsellor_message_preview_decrypted_by_the_phone(world: World) -> None:
    app, console = world.app, world.console
    world.app_ctx.grant_permissions(["notifications"], origin=world.server.url)
    console.locator(".conv", has_text=YOUNG).click()
    text = "Bonjour Inès, on se voit jeudi à 14 h pour le CV ?"
    console.locator("#message").fill(text)
    console.get_by_role("button", name="Envoyer").click()
    expect(app.locator(".msg-text", has_text=text)).to_be_visible()
    session = app.evaluate(f"async () => {APP_SESSION}")
    world.conversation = session["conversation"]
    message = _history(app, APP_TOKEN, world.conversation)[-1]
    payload = _payload(message, COUNSELLOR, "counsellor")
    assert text.encode() not in payload
    worker = _service_worker(world.app_ctx, "/app/")
    # The app shows that conversation right now: no notification.
    _deliver(app, "/app/", payload)
    time.sleep(1.0)
    assert [n for n in _notifications(worker) if n["tag"] == world.conversation] == []
    # The app is closed (another site in the tab): the push shows the decrypted preview.
    app.goto(world.server.url + "/healthz")
    _deliver_from_origin(world, payload)
    shown = _wait_notification(worker, f"Karim : {text}")
    assert shown["title"] == "CEJ Messagerie"
    assert shown["data"]["conversation"] == world.conversation
    assert shown["data"]["url"] == f"/app/?c={world.conversation}"


def _deliver_from_origin(world: World, payload: bytes) -> None:
    """Deliver through a page of the origin that is outside the app's scope."""
    _deliver(world.app, "/app/", payload)


def test_missing_key_shows_the_generic_text(world: World) -> None:
    app = world.app
    worker = _service_worker(world.app_ctx, "/app/")
    _clear(worker)
    app.goto(world.server.url + "/app/")
    expect(app.locator("#peer-name")).to_have_text(COUNSELLOR)
    message = dict(_history(app, APP_TOKEN, world.conversation)[-1])
    message["epoch"] = message["epoch"] + 1000  # an epoch this phone holds no key for
    app.goto(world.server.url + "/healthz")
    _deliver(app, "/app/", _payload(message, COUNSELLOR, "counsellor"))
    _wait_notification(worker, "Nouveau message de votre conseiller")
    # The short form (no ciphertext: too large, or refused by the push service) too.
    _clear(worker)
    short = dict(json.loads(_payload(message, COUNSELLOR, "counsellor")))
    short.pop("message")
    _deliver(app, "/app/", json.dumps(short).encode())
    _wait_notification(worker, "Nouveau message de votre conseiller")


def test_click_opens_the_conversation_in_the_console(world: World) -> None:
    app, console = world.app, world.console
    world.console_ctx.grant_permissions(["notifications"], origin=world.server.url)
    app.goto(world.server.url + "/app/")
    expect(app.locator("#peer-name")).to_have_text(COUNSELLOR)
    # The counsellor looks at another conversation.
    console.locator(".conv").filter(has_not_text=YOUNG).first.click()
    expect(console.locator("#thread-title")).not_to_contain_text(YOUNG)
    text = "Merci, jeudi 14 h c'est parfait"
    app.locator("#message").fill(text)
    app.get_by_role("button", name="Envoyer").click()
    expect(console.locator(".conv", has_text=YOUNG)).to_contain_text(text)
    message = _history(console, CONSOLE_TOKEN, world.conversation)[-1]
    assert message["msg_type"] == "text"
    worker = _service_worker(world.console_ctx, "/console/")
    _deliver(console, "/console/", _payload(message, YOUNG, "beneficiary"))
    shown = _wait_notification(worker, f"Inès : {text}")
    _click(worker, shown["tag"])
    expect(console.locator("#thread-title")).to_contain_text(YOUNG)
    assert _notifications(worker) == []
    assert world.problems == []
