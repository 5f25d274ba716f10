"""The console and the app in Chromium, end to end, against a real server with E2EE on.

One server process and one browser for the module; the tests run in order
and build on each other (a counsellor's device, a beneficiary created in the
console and activated in the app, a conversation). Every plaintext typed is
recorded, and the last tests search the database files, every collection
and the server log for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    ViewportSize,
    expect,
)

from tests.web.harness import (
    DEMO_PASSWORD,
    ServerProcess,
    activate_app,
    axe_violations,
    chromium,
    run_server,
    save_screenshot,
    serious,
)

pytestmark = pytest.mark.browser

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
BENEFICIARY_NAME = "Sarah Lefèvre"
BENEFICIARY_LOGIN = "sarah.lefevre"
BENEFICIARY_PASSWORD = "mon-mot-de-passe-2026"
RECOVERY_KEY = re.compile(r"^[0-9A-Z]{4}(-[0-9A-Z]{4}){12}$")
# Requests that hand keys to another device (re-wraps, approvals).
KEY_SHARING = re.compile(r"/api/(conversations/[^/?]+/envelopes|keys/requests/approve)(\?|$)")

expect.set_options(timeout=20_000)


@dataclass
class World:
    """What the ordered tests share."""

    server: ServerProcess
    browser: Browser
    console_ctx: BrowserContext
    app_ctx: BrowserContext
    console: Page
    app: Page
    problems: list[str] = field(default_factory=list)
    plaintexts: list[str] = field(default_factory=list)
    app_key_sharing: list[str] = field(default_factory=list)
    counsellor_recovery: str = ""
    activation_code: str = ""

    def say(self, text: str) -> str:
        """Record a plaintext typed in the test (searched for in the database later)."""
        self.plaintexts.append(text)
        return text


def _watch(page: Page, name: str, problems: list[str]) -> None:
    def on_console(msg: ConsoleMessage) -> None:
        text = msg.text
        if "Content Security Policy" in text or "Refused to" in text:
            problems.append(f"{name} CSP: {text}")

    page.on("console", on_console)
    page.on("pageerror", lambda err: problems.append(f"{name} page error: {err}"))


def _watch_key_sharing(page: Page, found: list[str]) -> None:
    """Record every request by which `page` would share keys with another device."""

    def on_request(request: Request) -> None:
        if request.method == "POST" and KEY_SHARING.search(request.url):
            found.append(request.url)

    page.on("request", on_request)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("web-server")
    with run_server(data_dir) as server, chromium() as browser:
        console_ctx = browser.new_context(
            viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris"
        )
        app_ctx = browser.new_context(
            viewport=PHONE, locale="fr-FR", timezone_id="Europe/Paris", has_touch=True
        )
        try:
            w = World(
                server, browser, console_ctx, app_ctx, console_ctx.new_page(), app_ctx.new_page()
            )
            _watch(w.console, "console", w.problems)
            _watch(w.app, "app", w.problems)
            # The beneficiary's app never re-wraps keys for anyone (checked at the end).
            _watch_key_sharing(w.app, w.app_key_sharing)
            yield w
        finally:
            console_ctx.close()
            app_ctx.close()


def _ack_recovery_key(page: Page) -> str:
    key = page.locator("#recovery-key")
    expect(key).to_be_visible()
    text = (key.text_content() or "").strip()
    assert RECOVERY_KEY.match(text), text
    page.get_by_label("J'ai noté ma clé de récupération").check()
    page.get_by_role("button", name="Continuer").click()
    return text


def _bubble(page: Page, cls: str, text: str) -> Locator:
    return page.locator(f".{cls}", has=page.locator(".msg-text", has_text=text))


def _device_id(page: Page) -> str:
    """This console's device id, as its security dialog shows it."""
    page.get_by_role("button", name="Sécurité", exact=True).click()
    device = page.locator("#this-device")
    expect(device).not_to_be_empty()
    text = (device.text_content() or "").strip()
    page.keyboard.press("Escape")
    expect(page.locator("#dlg-security")).to_be_hidden()
    return text


def _no_local_storage(page: Page) -> None:
    assert page.evaluate("() => localStorage.length") == 0


def test_console_login_and_device_setup(world: World) -> None:
    page = world.console
    page.goto(world.server.url + "/")
    expect(page).to_have_url(re.compile(r"/console/$"))
    page.locator("#login-name").fill("conseiller.demo")
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    world.counsellor_recovery = _ack_recovery_key(page)
    expect(page.locator("#conv-list .conv")).to_have_count(3)
    expect(page.locator("#conn")).to_have_text("En ligne")
    _no_local_storage(page)
    # The session token is in this tab's sessionStorage only.
    assert page.evaluate("() => sessionStorage.length") == 1


def test_create_beneficiary_and_activate_in_app(world: World) -> None:
    page = world.console
    page.get_by_role("button", name="Nouveau bénéficiaire").click()
    dialog = page.get_by_role("dialog", name="Nouveau bénéficiaire")
    dialog.get_by_label("Nom et prénom").fill(BENEFICIARY_NAME)
    dialog.get_by_label("Identifiant").fill(BENEFICIARY_LOGIN)
    dialog.get_by_role("button", name="Créer").click()
    code = page.locator("#activation-code")
    expect(code).not_to_be_empty()
    world.activation_code = (code.text_content() or "").strip()
    page.locator("#dlg-code").get_by_role("button", name="Fermer").click()
    expect(page.locator("#thread-title")).to_contain_text(BENEFICIARY_NAME)

    app = world.app
    key = activate_app(app, world.server.url + "/app/", world.activation_code, BENEFICIARY_PASSWORD)
    assert RECOVERY_KEY.match(key), key
    expect(app.locator("#peer-name")).to_have_text("Karim Benali")
    expect(app.locator("#conn")).to_have_text("En ligne")
    _no_local_storage(app)


def test_exchange_with_read_receipts_typing_and_presence(world: World) -> None:
    console, app = world.console, world.app
    expect(console.locator("#thread-presence")).to_contain_text("En ligne")
    hello = world.say("Bonjour Sarah, bienvenue ! Rendez-vous jeudi à 14 h ?")
    console.get_by_label("Votre message").fill(hello)
    console.get_by_label("Votre message").press("Enter")
    expect(_bubble(app, "msg-peer", hello)).to_have_count(1)

    reply = world.say("Oui, jeudi ça me va. Merci 🙂")
    app.get_by_label("Votre message").fill(reply)
    expect(console.locator("#typing")).to_contain_text("est en train d'écrire")
    app.get_by_role("button", name="Envoyer").click()
    expect(_bubble(console, "msg-peer", reply)).to_have_count(1)

    # Each side has read the other's message: "Lu" under one's own.
    expect(_bubble(console, "msg-mine", hello).locator(".status-read")).to_have_text("Lu")
    expect(_bubble(app, "msg-mine", reply).locator(".status-read")).to_have_text("Lu")
    expect(console.locator("#typing")).to_be_empty()
    save_screenshot(console, "console-thread.png", "console.png")
    save_screenshot(app, "app-thread.png", "app.png")


def test_network_cut_loses_nothing_and_doubles_nothing(world: World) -> None:
    console, app = world.console, world.app
    app.evaluate("async () => { await navigator.serviceWorker.ready; }")
    world.app_ctx.set_offline(True)
    expect(app.locator("#conn")).to_have_text("Hors ligne")
    expect(app.locator("#offline-banner")).to_be_visible()
    typed = [world.say("Message écrit hors ligne n°1"), world.say("Message écrit hors ligne n°2")]
    for text in typed:
        app.get_by_label("Votre message").fill(text)
        app.get_by_role("button", name="Envoyer").click()
        expect(_bubble(app, "msg-mine", text).locator(".status-pending")).to_have_text("En attente")
    missed = world.say("Pendant la coupure : pensez à votre CV")
    console.get_by_label("Votre message").fill(missed)
    console.get_by_label("Votre message").press("Enter")
    expect(_bubble(console, "msg-mine", missed).locator(".status-sent")).to_be_visible()

    # The app is closed and opened again while still offline: the service
    # worker serves the shell and the outbox comes back from IndexedDB.
    after_reload = world.say("Écrit après avoir rouvert l'application hors ligne")
    app.reload()
    expect(app.locator("#composer")).to_be_visible()
    expect(_bubble(app, "msg-mine", typed[0])).to_have_count(1)
    app.get_by_label("Votre message").fill(after_reload)
    app.get_by_role("button", name="Envoyer").click()
    expect(_bubble(app, "msg-mine", after_reload)).to_have_count(1)

    world.app_ctx.set_offline(False)
    expect(app.locator("#conn")).to_have_text("En ligne")
    for text in [*typed, after_reload]:
        expect(_bubble(console, "msg-peer", text)).to_have_count(1)
        expect(_bubble(app, "msg-mine", text).locator(".status-read")).to_have_text("Lu")
    expect(_bubble(app, "msg-peer", missed)).to_have_count(1)
    # In order, once each, on both sides.
    peer_texts = console.locator(".msg-peer .msg-text").all_text_contents()
    positions = [peer_texts.index(t) for t in [*typed, after_reload]]
    assert positions == sorted(positions)
    for text in [*typed, after_reload]:
        assert peer_texts.count(text) == 1
    mine = app.locator(".msg-mine .msg-text").all_text_contents()
    for text in [*typed, after_reload]:
        assert mine.count(text) == 1
    expect(app.locator(".msg-pending")).to_have_count(0)


def test_hidden_console_signals_new_messages(world: World) -> None:
    console, app = world.console, world.app
    base_title = console.title()
    console.evaluate(
        """() => {
            const prop = (name, value) =>
                Object.defineProperty(document, name, { configurable: true, get: () => value });
            prop("hidden", true);
            prop("visibilityState", "hidden");
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    text = world.say("Je vous envoie mon CV ce soir")
    app.get_by_label("Votre message").fill(text)
    app.get_by_role("button", name="Envoyer").click()
    expect(console).to_have_title(re.compile(r"^\(1\) Nouveau message"))
    expect(console.locator("link[rel=icon]")).to_have_attribute(
        "href", "/shared/icons/favicon-alert.png"
    )
    # Hidden: not read yet.
    expect(_bubble(app, "msg-mine", text).locator(".status-sent")).to_have_text("Envoyé")
    console.evaluate(
        """() => {
            delete document.hidden;
            delete document.visibilityState;
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    expect(console).to_have_title(base_title)
    expect(console.locator("link[rel=icon]")).to_have_attribute("href", "/shared/icons/favicon.png")
    expect(_bubble(app, "msg-mine", text).locator(".status-read")).to_have_text("Lu")


def test_console_search_flag_and_keyboard(world: World) -> None:
    console = world.console
    search = console.get_by_label("Rechercher un bénéficiaire")
    search.fill("lefevre")
    expect(console.locator("#conv-list .conv")).to_have_count(1)
    search.fill("")
    expect(console.locator("#conv-list .conv")).to_have_count(4)
    console.locator("#btn-flag").click()
    expect(console.locator("#btn-flag")).to_have_attribute("aria-pressed", "true")
    sarah = console.locator(".conv", has_text=BENEFICIARY_NAME)
    expect(sarah.locator(".tag-flag")).to_have_text("Prioritaire")
    # Keyboard alone: arrows move in the list, Enter opens a conversation.
    console.locator("#conv-list .conv").first.focus()
    console.keyboard.press("ArrowDown")
    focused = console.evaluate("() => document.activeElement.textContent")
    assert focused == console.locator("#conv-list .conv").nth(1).text_content()
    console.keyboard.press("Enter")
    expect(console.locator("#conv-list .conv").nth(1)).to_have_attribute("aria-current", "true")
    sarah.focus()
    console.keyboard.press("Enter")
    expect(console.locator("#thread-title")).to_contain_text(BENEFICIARY_NAME)
    console.locator("#btn-safety").click()
    expect(console.locator("#safety-number")).to_have_text(re.compile(r"^(\d{5} ){5}\d{5}$"))
    console.keyboard.press("Escape")
    expect(console.locator("#dlg-safety")).not_to_be_visible()


def test_console_restores_from_recovery_key_and_passes_axe(world: World) -> None:
    ctx = world.browser.new_context(viewport=DESKTOP, locale="fr-FR", bypass_csp=True)
    try:
        page = ctx.new_page()
        page.goto(world.server.url + "/console/")
        expect(page.get_by_role("button", name="Se connecter")).to_be_visible()
        assert serious(axe_violations(page)) == []
        page.locator("#login-name").fill("conseiller.demo")
        page.locator("#login-password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Se connecter").click()
        page.get_by_label("Clé de récupération").fill(world.counsellor_recovery.lower())
        page.get_by_role("button", name="Restaurer").click()
        page.locator(".conv", has_text=BENEFICIARY_NAME).click()
        # The restored device reads the whole history: the backup holds no epoch
        # key, this browser took over the backed-up device (same id) and opens
        # the envelopes addressed to it.
        expect(_bubble(page, "msg-mine", world.plaintexts[0])).to_have_count(1)
        expect(_bubble(page, "msg-peer", world.plaintexts[1])).to_have_count(1)
        assert _device_id(page) == _device_id(world.console)
        violations = axe_violations(page)
        assert serious(violations) == [], violations
        save_screenshot(page, "console-restored.png")
    finally:
        ctx.close()


def test_new_phone_waits_for_counsellor_reshare_and_passes_axe(world: World) -> None:
    ctx = world.browser.new_context(viewport=PHONE, locale="fr-FR", bypass_csp=True)
    try:
        page = ctx.new_page()
        page.goto(world.server.url + "/app/")
        page.get_by_role("button", name="J'ai un code d'activation").click()
        expect(page.get_by_label("Code d'activation")).to_be_visible()
        assert serious(axe_violations(page)) == []
        save_screenshot(page, "app-activation.png")
        page.get_by_role("button", name="J'ai déjà un compte").click()
        page.locator("#login-name").fill(BENEFICIARY_LOGIN)
        page.locator("#login-password").fill(BENEFICIARY_PASSWORD)
        page.get_by_role("button", name="Se connecter").click()
        page.get_by_role("button", name="Je n'ai pas ma clé de récupération").click()
        page.get_by_role("button", name="Continuer avec un nouvel appareil").click()
        _ack_recovery_key(page)
        expect(page.locator("#reshare-banner")).to_be_visible()
        expect(page.locator(".msg-error").first).to_be_visible()
        violations = axe_violations(page)
        assert serious(violations) == [], violations

        new_phone_sharing: list[str] = []
        _watch_key_sharing(page, new_phone_sharing)
        # Nothing is shared before the counsellor's click; the phone says why, plainly.
        expect(page.locator("#reshare-banner")).to_contain_text("Ce téléphone est nouveau")
        # Written while waiting: queued ("En attente"), sent once approved.
        queued = world.say("Écrit sur le nouveau téléphone avant l'accord")
        page.get_by_label("Votre message").fill(queued)
        page.get_by_role("button", name="Envoyer").click()
        expect(_bubble(page, "msg-mine", queued).locator(".status-pending")).to_be_visible()
        # The request is in the conversation list: one click approves; the console
        # re-wraps the history and says so in the thread.
        request = world.console.locator(".conv-request")
        expect(request).to_contain_text(f"Nouveau téléphone de {BENEFICIARY_NAME}")
        save_screenshot(world.console, "console-new-phone-request.png")
        world.console.get_by_role(
            "button", name=f"Autoriser le nouveau téléphone de {BENEFICIARY_NAME}"
        ).click()
        expect(request).to_have_count(0)
        expect(
            world.console.locator(".msg-notice", has_text="Clés partagées avec le nouvel appareil")
        ).to_have_text(f"Clés partagées avec le nouvel appareil de {BENEFICIARY_NAME}.")
        expect(_bubble(page, "msg-peer", world.plaintexts[0])).to_have_count(1, timeout=30_000)
        expect(page.locator("#reshare-banner")).to_be_hidden()
        expect(_bubble(world.console, "msg-peer", queued)).to_have_count(1, timeout=30_000)
        expect(_bubble(page, "msg-mine", queued)).to_have_count(1)
        expect(_bubble(page, "msg-mine", queued).locator(".status-pending")).to_have_count(0)
        assert new_phone_sharing == []
        text = world.say("Nouveau téléphone : c'est toujours moi")
        page.get_by_label("Votre message").fill(text)
        page.get_by_role("button", name="Envoyer").click()
        expect(_bubble(world.console, "msg-peer", text)).to_have_count(1)
        expect(_bubble(world.app, "msg-mine", text)).to_have_count(1)
        save_screenshot(page, "app-new-phone.png")
    finally:
        ctx.close()


def test_supervisor_transfers_temporarily_then_takes_back(world: World) -> None:
    ctx = world.browser.new_context(viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris")
    try:
        page = ctx.new_page()
        _watch(page, "supervisor", world.problems)
        page.goto(world.server.url + "/console/")
        page.locator("#login-name").fill("superviseur.demo")
        page.locator("#login-password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Se connecter").click()
        _ack_recovery_key(page)
        rows = page.locator("#supervision-body tr")
        expect(rows).to_have_count(4)
        dialog = page.get_by_role("dialog", name="Transférer")

        def transfer(mode: str) -> None:
            page.get_by_role("button", name=f"Transférer {BENEFICIARY_NAME}").click()
            dialog.get_by_role("radio", name=mode).check()
            if mode == "Temporaire":
                dialog.get_by_label("Nouveau conseiller").select_option(label="Léa Dubois")
                tomorrow = page.evaluate(
                    "() => new Date(Date.now() + 86400000).toISOString().slice(0, 10)"
                )
                dialog.get_by_label("Jusqu'au (transfert temporaire)").fill(tomorrow)
            dialog.get_by_role("button", name="Transférer").click()
            expect(page.locator("#supervision-status")).to_have_text("Transfert effectué.")

        transfer("Temporaire")
        expect(page.locator("#supervision-body tr", has_text=BENEFICIARY_NAME)).to_contain_text(
            "Léa Dubois"
        )
        # The usual counsellor no longer sees the conversation; the beneficiary is told.
        expect(world.console.locator("#conv-list .conv")).to_have_count(3)
        expect(world.console.locator("#thread-view")).to_be_hidden()
        expect(world.app.locator("#peer-name")).to_have_text("Léa Dubois")
        # System events name who did what (issue #10, point 7).
        expect(
            world.app.locator(
                ".msg-system",
                has_text="Léa Dubois (conseiller·ère) assure le suivi jusqu'au",
            )
        ).to_contain_text("en remplacement de Karim Benali (conseiller·ère).")
        # The supervisor's new console is announced by name, and is not news.
        expect(
            world.app.locator(
                ".msg-system.msg-quiet",
                has_text="Nouvel appareil pour Sophie Bernard (responsable de structure).",
            )
        ).to_have_count(1)
        during = world.say("Message pendant le remplacement de mon conseiller")
        world.app.get_by_label("Votre message").fill(during)
        world.app.get_by_role("button", name="Envoyer").click()
        expect(_bubble(world.app, "msg-mine", during).locator(".status-sent")).to_be_visible()
        _replacement_sees_sides(world, during, page)

        transfer("Reprise par le conseiller habituel")
        expect(world.console.locator("#conv-list .conv")).to_have_count(4)
        expect(world.app.locator("#peer-name")).to_have_text("Karim Benali")
        expect(
            world.app.locator(
                ".msg-system",
                has_text="Karim Benali (conseiller·ère) reprend le suivi (fin du remplacement par "
                "Léa Dubois (conseiller·ère)).",
            )
        ).to_have_count(1)
        # Back with the whole history: the epoch written meanwhile is sealed to the
        # structure key (the supervisor's console made it at her login; no escrow
        # since), which she hands to Karim's console with one click; the
        # beneficiary's app does not re-wrap.
        page.get_by_role("button", name="Confier la clé de la structure à Karim Benali").click()
        expect(page.locator("#structure-key-status")).to_have_text(
            "Clé de la structure confiée à l'appareil de Karim Benali."
        )
        world.console.locator(".conv", has_text=BENEFICIARY_NAME).click()
        expect(_bubble(world.console, "msg-peer", during)).to_have_count(1, timeout=30_000)
        expect(_bubble(world.console, "msg-mine", world.plaintexts[0])).to_have_count(1)
        assert world.app_key_sharing == []
    finally:
        ctx.close()


def _replacement_sees_sides(world: World, during: str, supervisor: Page) -> None:
    """The replacing counsellor sees each message on the side of its real sender:
    Karim's on the counsellors' side, named; Sarah's on the other. Sarah's, written
    after the transfer, before this console existed, comes from the structure key,
    which the supervisor hands to this new device with one click."""
    ctx = world.browser.new_context(viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris")
    try:
        page = ctx.new_page()
        _watch(page, "replacement", world.problems)
        page.goto(world.server.url + "/console/")
        page.locator("#login-name").fill("conseillere2.demo")
        page.locator("#login-password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Se connecter").click()
        _ack_recovery_key(page)
        supervisor.get_by_role("button", name="Confier la clé de la structure à Léa Dubois").click()
        expect(supervisor.locator("#structure-key-status")).to_have_text(
            "Clé de la structure confiée à l'appareil de Léa Dubois."
        )
        page.locator(".conv", has_text=BENEFICIARY_NAME).click()
        # Karim's messages are on the counsellors' side, named, and readable: Karim's
        # console (online, the previous counsellor) re-wraps the history for Léa's
        # new device (the beneficiary's app never does).
        karim = _bubble(page, "msg-mine", world.plaintexts[0])
        expect(karim).to_have_count(1, timeout=30_000)
        expect(karim.locator(".msg-author")).to_have_text("Karim Benali")
        expect(page.locator(".msg-peer .msg-author")).to_have_count(0)
        expect(_bubble(page, "msg-peer", during)).to_have_count(1)
        event = page.locator(".msg-system", has_text="en remplacement de Karim Benali")
        expect(event).to_have_count(1)
        save_screenshot(page, "console-replacement.png")
    finally:
        ctx.close()


def test_no_plaintext_on_the_server(world: World) -> None:
    from pymongo import MongoClient  # noqa: TID251 - the test reads the store directly

    assert len(world.plaintexts) >= 8
    needles = [t.encode("utf-8") for t in world.plaintexts]
    client: MongoClient[dict[str, Any]] = MongoClient(
        world.server.engine_url(), serverSelectionTimeoutMS=10_000
    )
    try:
        scanned = 0
        for db_name in client.list_database_names():
            db = client[db_name]
            for coll in db.list_collection_names():
                for doc in db[coll].find():
                    blob = repr(doc).encode("utf-8")
                    scanned += 1
                    for needle, text in zip(needles, world.plaintexts, strict=True):
                        assert needle not in blob, f"{text!r} in {db_name}.{coll}"
                        assert text not in repr(doc)
        assert scanned > 0
        messages = client["cejchat"]["messages"].count_documents({})
        assert messages >= len(world.plaintexts)
    finally:
        client.close()
    files = [p for p in (world.server.data_dir / "mongo").rglob("*") if p.is_file()]
    assert files
    for path in files:
        raw = path.read_bytes()
        for needle, text in zip(needles, world.plaintexts, strict=True):
            assert needle not in raw, f"{text!r} in {path}"
    log = world.server.log_path.read_bytes()
    for needle, text in zip(needles, world.plaintexts, strict=True):
        assert needle not in log, f"{text!r} in the server log"


def test_pages_ran_without_csp_violation_or_error(world: World) -> None:
    assert world.problems == []
