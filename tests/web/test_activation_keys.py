"""Activation carries the keys, in Chromium (issue #10, point 1, browser test (a)).

The counsellor creates a beneficiary in the console (the code is made in her
browser; the server gets only its proof), writes a welcome message, and closes
her browser. The young person activates on a phone: the welcome message is
readable at once, and the phone is the account's one trusted device. The
server never saw the code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ViewportSize, expect

from tests.web.harness import (
    DEMO_PASSWORD,
    ack_recovery_key,
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
NAME = "Yanis Haddad"
PASSWORD = "mon-mot-de-passe-2026"
WELCOME = "Bonjour Yanis, bienvenue ! Premier rendez-vous mardi à 10 h."

expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir: Path = tmp_path_factory.mktemp("activation-server")
    with run_server(data_dir) as server:
        yield server.url, data_dir


def test_welcome_written_before_activation_is_read_on_the_first_phone(
    server_url: tuple[str, Path],
) -> None:
    url, data_dir = server_url
    problems: list[str] = []
    sent: list[str] = []
    with chromium() as browser:
        console_ctx = browser.new_context(
            viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris"
        )
        console = console_ctx.new_page()
        console.on("pageerror", lambda err: problems.append(f"console: {err}"))
        console.on("request", lambda r: sent.append(r.post_data or ""))
        console.goto(url + "/console/")
        console.locator("#login-name").fill("conseiller.demo")
        console.locator("#login-password").fill(DEMO_PASSWORD)
        console.get_by_role("button", name="Se connecter").click()
        ack_recovery_key(console)
        console.get_by_role("button", name="Nouveau bénéficiaire").click()
        dialog = console.get_by_role("dialog", name="Nouveau bénéficiaire")
        dialog.get_by_label("Nom et prénom").fill(NAME)
        dialog.get_by_label("Identifiant").fill("yanis.haddad")
        dialog.get_by_role("button", name="Créer").click()
        code_el = console.locator("#activation-code")
        expect(code_el).to_have_text(re.compile(r"^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$"))
        code = (code_el.text_content() or "").strip()
        console.locator("#dlg-code").get_by_role("button", name="Fermer").click()
        console.get_by_label("Votre message").fill(WELCOME)
        console.get_by_label("Votre message").press("Enter")
        expect(
            console.locator(".msg-mine", has=console.locator(".msg-text", has_text=WELCOME))
            .locator(".status-sent")
        ).to_be_visible()
        console_ctx.close()  # the counsellor's browser is closed from now on

        app_ctx = browser.new_context(
            viewport=PHONE,
            locale="fr-FR",
            timezone_id="Europe/Paris",
            has_touch=True,
            bypass_csp=True,  # for axe-core
        )
        app = app_ctx.new_page()
        app.on("pageerror", lambda err: problems.append(f"app: {err}"))
        app.on("request", lambda r: sent.append(r.post_data or ""))
        activate_app(app, url + "/app/", code.lower(), PASSWORD)
        expect(app.locator("#peer-name")).to_have_text("Karim Benali")
        welcome = app.locator(".msg-peer", has=app.locator(".msg-text", has_text=WELCOME))
        expect(welcome).to_have_count(1)
        expect(app.locator(".msg-text", has_text="illisible")).to_have_count(0)
        expect(app.locator(".msg-text", has_text="en attente de la clé")).to_have_count(0)
        save_screenshot(app, "app-activation-welcome.png", "app-activation-welcome.png")
        assert serious(axe_violations(app)) == []
        app_ctx.close()
    assert problems == []
    # The code itself never left the two browsers (only its PBKDF2 proof did).
    normalised = code.replace("-", "")
    assert not any(code in body or normalised in body.upper() for body in sent)
    log = "\n".join(p.read_text("utf-8", "replace") for p in data_dir.rglob("*.log"))
    assert normalised not in log.upper()
