"""Devices and recovery key in the apps, in Chromium (issue #15, point 4).

- "A device removed from the app's settings": the young person has two phones; from the
  first one's "Mes appareils et ma clé" they see both with names and dates, remove the
  second after a confirmation; the second phone is logged out at once, the list updates,
  and the counsellor's console shows the removal in the thread.
- "Recovery key renewal": after a clear warning and the password (a wrong one refused in
  French), the app shows a new key; the thread still reads on that phone and what it writes
  reaches the counsellor; then, console closed, a fresh phone refuses the old key and the new
  key restores the whole history.
- The counsellor's "Sécurité" dialog lists their devices with names and dates too.
Every new view: axe-core clean, every control at least 44 by 44 px on the phone, a screenshot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.web.harness import (
    DEMO_PASSWORD,
    DESKTOP,
    PHONE,
    ServerProcess,
    axe_serious,
    chromium,
    demo_pair,
    login_demo,
    run_server,
    save_screenshot,
    watch_page,
)
from tests.web.test_layout_web import MEASURE

pytestmark = pytest.mark.browser

expect.set_options(timeout=30_000)
RECOVERY_KEY = re.compile(r"^[0-9A-Z]{4}(-[0-9A-Z]{4}){12}$")
YOUNG = "Inès Moreau"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with run_server(tmp_path) as s:
        yield s


def _phone(browser: Browser) -> BrowserContext:
    return browser.new_context(
        viewport=PHONE, locale="fr-FR", timezone_id="Europe/Paris", has_touch=True
    )


def _login(page: Page, url: str) -> None:
    page.goto(url + "/app/")
    page.locator("#login-name").fill("jeune1.demo")
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()


def _ack_key(page: Page, box: str = "#recovery-key") -> str:
    key = page.locator(box)
    expect(key).to_be_visible()
    text = (key.text_content() or "").strip()
    assert RECOVERY_KEY.match(text), text
    return text


def _clean(page: Page, what: str) -> None:
    found = axe_serious(page)
    assert not found, f"{what}: {found}"
    small = page.evaluate(MEASURE)
    assert not small, f"{what}: controls under 44 px: {small}"


def _open_devices(page: Page) -> None:
    page.get_by_role("button", name="Menu").click()
    page.get_by_role("button", name="Mes appareils et ma clé").click()
    expect(page.locator("#dlg-devices")).to_be_visible()


def test_a_device_removed_from_the_apps_settings(server: ServerProcess, browser: Browser) -> None:
    with demo_pair(server, browser, YOUNG) as w:
        second_ctx = _phone(browser)
        try:
            second = second_ctx.new_page()
            watch_page(second, "second phone", w.problems)
            _login(second, server.url)
            # A second phone without the recovery key: a new device, waiting for approval.
            second.get_by_role("button", name="Je n'ai pas ma clé de récupération").click()
            second.get_by_role("button", name="Continuer avec un nouvel appareil").click()
            _ack_key(second)
            second.get_by_label("J'ai noté ma clé de récupération").check()
            second.get_by_role("button", name="Continuer").click()
            expect(second.locator("#peer-name")).to_have_text("Karim Benali")

            phone = w.app
            _open_devices(phone)
            dlg = phone.locator("#dlg-devices")
            devices = dlg.locator(".device")
            expect(devices).to_have_count(2)
            expect(devices.nth(0)).to_contain_text("Cet appareil")
            for i in range(2):
                expect(devices.nth(i)).to_contain_text("Chrome sur Linux")
                expect(devices.nth(i)).to_contain_text("Ajouté le")
                expect(devices.nth(i)).to_contain_text("Dernière connexion le")
            expect(devices.nth(0).get_by_role("button")).to_have_count(0)  # not this one
            expect(dlg.get_by_role("button", name="Voir le numéro de sécurité")).to_be_visible()
            _clean(phone, "device list")
            save_screenshot(phone, "app-devices.png", "app-devices.png")

            remove = "Retirer l'appareil « Chrome sur Linux »"
            devices.nth(1).get_by_role("button", name=remove).click()
            expect(dlg.get_by_role("alert")).to_contain_text("Il sera déconnecté tout de suite")
            _clean(phone, "removal confirmation")
            save_screenshot(phone, "app-device-remove.png", "app-device-remove.png")
            dlg.get_by_role("button", name="Oui, retirer").click()

            expect(dlg.locator(".device")).to_have_count(1)
            expect(dlg.locator(".device-status")).to_contain_text("a été retiré")
            # The removed phone is logged out at once, its keys are no use any more.
            expect(second.locator("#screen-login")).to_be_visible()
            expect(second.locator("#screen-thread")).to_be_hidden()
            # The counsellor sees it in the thread.
            expect(w.console.locator("#messages")).to_contain_text(f"Appareil retiré pour {YOUNG}")

            # The safety number is one tap away, and it is the same on both sides.
            dlg.get_by_role("button", name="Voir le numéro de sécurité").click()
            number = phone.locator("#safety-number")
            expect(number).to_have_text(re.compile(r"^[\d ]{30,}$"))
            w.console.get_by_role("button", name="Numéro de sécurité").click()
            expect(w.console.locator("#safety-number")).to_have_text(number.text_content() or "")
            assert not w.problems, w.problems
        finally:
            second_ctx.close()


def test_recovery_key_renewal(server: ServerProcess, browser: Browser) -> None:
    problems: list[str] = []
    phone_ctx = _phone(browser)
    console_ctx = browser.new_context(viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris")
    fresh_ctx = _phone(browser)
    try:
        phone = phone_ctx.new_page()
        watch_page(phone, "phone", problems)
        _login(phone, server.url)
        old_key = _ack_key(phone)
        phone.get_by_label("J'ai noté ma clé de récupération").check()
        phone.get_by_role("button", name="Continuer").click()
        expect(phone.locator("#peer-name")).to_have_text("Karim Benali")

        console = console_ctx.new_page()
        watch_page(console, "console", problems)
        login_demo(console, server.url + "/console/", "conseiller.demo")
        console.locator(".conv", has_text=YOUNG).click()
        console.locator("#message").fill("Historique avant le renouvellement")
        console.locator("#composer [type=submit]").click()
        expect(phone.locator("#messages")).to_contain_text("Historique avant le renouvellement")

        _open_devices(phone)
        phone.get_by_role("button", name="Renouveler ma clé de récupération").click()
        dlg = phone.locator("#dlg-renew")
        expect(dlg).to_be_visible()
        expect(dlg.locator(".warning")).to_contain_text(
            "votre clé de récupération actuelle ne fonctionnera plus"
        )
        _clean(phone, "renewal form")
        save_screenshot(phone, "app-recovery-renew.png", "app-recovery-renew.png")
        # Not without the box ticked, not with a wrong password.
        dlg.get_by_label("Mot de passe (pour confirmer)").fill("pas le bon mot de passe")
        dlg.get_by_role("button", name="Renouveler la clé").click()
        expect(dlg.get_by_role("alert")).to_have_text("Cochez la case pour confirmer.")
        dlg.get_by_label("Je comprends que mon ancienne clé ne fonctionnera plus").check()
        dlg.get_by_role("button", name="Renouveler la clé").click()
        expect(dlg.get_by_role("alert")).to_have_text("Mot de passe incorrect.")
        dlg.get_by_label("Mot de passe (pour confirmer)").fill(DEMO_PASSWORD)
        # The server takes the new backup, then the page loses the network before it
        # re-wraps: the page says the old key is already gone and to renew again.
        armed = {"renewed": False, "failed": False}

        def after_renewal(route: Any) -> None:
            if armed["renewed"] and not armed["failed"]:
                armed["failed"] = True
                route.fulfill(status=503, json={"error": {"code": "store_unavailable"}})
            else:
                route.continue_()

        def on_request(request: Any) -> None:
            if request.url.endswith("/api/keys/backup/renew"):
                armed["renewed"] = True

        phone.on("request", on_request)
        phone.route("**/api/conversations", after_renewal)
        seen = len(problems)
        dlg.get_by_role("button", name="Renouveler la clé").click()
        expect(dlg.get_by_role("alert")).to_contain_text(
            "Votre ancienne clé ne fonctionne déjà plus : renouvelez à nouveau"
        )
        assert armed["failed"]
        phone.unroute("**/api/conversations")
        del problems[seen:]  # the refused request the test made, logged by the browser
        dlg.get_by_role("button", name="Renouveler la clé").click()
        new_key = _ack_key(phone, "#renewed-key")
        assert new_key != old_key
        _clean(phone, "new key")
        save_screenshot(phone, "app-recovery-new-key.png", "app-recovery-new-key.png")
        finish = dlg.get_by_role("button", name="Terminer")
        expect(finish).to_be_disabled()
        dlg.get_by_label("J'ai noté ma nouvelle clé de récupération").check()
        finish.click()

        # The same phone, now the new device: the history still reads, and it writes.
        expect(phone.locator("#peer-name")).to_have_text("Karim Benali")
        expect(phone.locator("#messages")).to_contain_text("Historique avant le renouvellement")
        phone.locator("#message").fill("Écrit après le renouvellement")
        phone.locator("#composer [type=submit]").click()
        expect(console.locator("#messages")).to_contain_text("Écrit après le renouvellement")
        _open_devices(phone)
        expect(phone.locator("#dlg-devices .device")).to_have_count(1)
        console_ctx.close()  # nobody online to re-share anything

        # A fresh phone: the old key is refused, the new one restores the whole history.
        fresh = fresh_ctx.new_page()
        watch_page(fresh, "fresh phone", problems)
        _login(fresh, server.url)
        fresh.locator("#restore-key").fill(old_key)
        fresh.get_by_role("button", name="Restaurer").click()
        expect(fresh.get_by_role("alert")).to_have_text(
            "Cette clé de récupération ne correspond pas."
        )
        fresh.locator("#restore-key").fill(new_key)
        fresh.get_by_role("button", name="Restaurer").click()
        expect(fresh.locator("#peer-name")).to_have_text("Karim Benali")
        messages = fresh.locator("#messages")
        expect(messages).to_contain_text("Historique avant le renouvellement")
        expect(messages).to_contain_text("Écrit après le renouvellement")
        expect(messages).not_to_contain_text("Message illisible")
        assert not problems, problems
    finally:
        for ctx in (phone_ctx, console_ctx, fresh_ctx):
            ctx.close()


def test_console_security_lists_devices(server: ServerProcess, browser: Browser) -> None:
    ctx = browser.new_context(viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris")
    try:
        page = ctx.new_page()
        problems: list[str] = []
        watch_page(page, "console", problems)
        login_demo(page, server.url + "/console/", "conseiller.demo")
        page.get_by_role("button", name="Sécurité", exact=True).click()
        dlg = page.locator("#dlg-security")
        expect(dlg.locator(".device")).to_have_count(1)
        expect(dlg.locator(".device")).to_contain_text("Chrome sur Linux")
        expect(dlg.locator(".device")).to_contain_text("Cet appareil")
        expect(dlg.get_by_role("button", name="Renouveler ma clé de récupération")).to_be_visible()
        found = axe_serious(page)
        assert not found, found
        save_screenshot(page, "console-devices.png", "console-devices.png")
        assert not problems, problems
    finally:
        ctx.close()


def test_console_recovery_key_renewal(server: ServerProcess, browser: Browser) -> None:
    problems: list[str] = []
    ctx = browser.new_context(viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris")
    fresh_ctx = browser.new_context(viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris")
    try:
        page = ctx.new_page()
        watch_page(page, "console", problems)
        page.goto(server.url + "/console/")
        page.locator("#login-name").fill("conseiller.demo")
        page.locator("#login-password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Se connecter").click()
        old_key = _ack_key(page)
        page.get_by_label("J'ai noté ma clé de récupération").check()
        page.get_by_role("button", name="Continuer").click()
        page.locator(".conv", has_text=YOUNG).click()
        page.locator("#message").fill("Écrit avant le renouvellement")
        page.locator("#composer [type=submit]").click()
        expect(page.locator("#messages .msg", has_text="Écrit avant")).to_contain_text("Envoyé")

        page.get_by_role("button", name="Sécurité", exact=True).click()
        page.get_by_role("button", name="Renouveler ma clé de récupération").click()
        dlg = page.locator("#dlg-renew")
        dlg.get_by_label("Mot de passe (pour confirmer)").fill(DEMO_PASSWORD)
        dlg.get_by_label("Je comprends que mon ancienne clé ne fonctionnera plus").check()
        dlg.get_by_role("button", name="Renouveler la clé").click()
        new_key = _ack_key(page, "#renewed-key")
        assert new_key != old_key
        found = axe_serious(page)
        assert not found, found
        dlg.get_by_label("J'ai noté ma nouvelle clé de récupération").check()
        dlg.get_by_role("button", name="Terminer").click()
        page.locator(".conv", has_text=YOUNG).click()
        expect(page.locator("#messages")).to_contain_text("Écrit avant le renouvellement")
        page.locator("#message").fill("Écrit après le renouvellement")
        page.locator("#composer [type=submit]").click()
        # Acknowledged by the server: the new device rotated the keys and sent it.
        expect(page.locator("#messages .msg", has_text="Écrit après")).to_contain_text("Envoyé")
        ctx.close()

        fresh = fresh_ctx.new_page()
        watch_page(fresh, "fresh console", problems)
        fresh.goto(server.url + "/console/")
        fresh.locator("#login-name").fill("conseiller.demo")
        fresh.locator("#login-password").fill(DEMO_PASSWORD)
        fresh.get_by_role("button", name="Se connecter").click()
        fresh.locator("#restore-key").fill(old_key)
        fresh.get_by_role("button", name="Restaurer").click()
        expect(fresh.get_by_role("alert")).to_have_text(
            "Cette clé de récupération ne correspond pas."
        )
        fresh.locator("#restore-key").fill(new_key)
        fresh.get_by_role("button", name="Restaurer").click()
        fresh.locator(".conv", has_text=YOUNG).click()
        messages = fresh.locator("#messages")
        expect(messages).to_contain_text("Écrit avant le renouvellement")
        expect(messages).to_contain_text("Écrit après le renouvellement")
        expect(messages).not_to_contain_text("Message illisible")
        assert not problems, problems
    finally:
        ctx.close()
        fresh_ctx.close()


def test_device_names_from_the_user_agent(server: ServerProcess, browser: Browser) -> None:
    ctx = browser.new_context(viewport=DESKTOP, locale="fr-FR")
    try:
        page = ctx.new_page()
        page.goto(server.url + "/app/")
        names = page.evaluate(
            """async (uas) => {
                const { deviceName } = await import("/shared/device-name.js");
                return uas.map((ua) => deviceName(ua));
            }""",
            [
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
                " Chrome/120.0 Mobile Safari/537.36",
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15"
                " (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
                " Chrome/120.0 Safari/537.36 Edg/120.0",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
                " HeadlessChrome/120.0 Safari/537.36",
                "curl/8.0",
            ],
        )
        assert names == [
            "Chrome sur Android",
            "Safari sur iPhone",
            "Firefox sur Windows",
            "Edge sur Windows",
            "Chrome sur Linux",
            "",
        ]
    finally:
        ctx.close()
