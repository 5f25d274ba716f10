"""Onboarding in Chromium, two people (issue #15, point 3): the counsellor creates a beneficiary
(a bad login refused in French), the activation dialog shows the login, the code, its expiry,
a link and a QR code that decodes to that link, and prints as a sheet; the counsellor issues a
new code (made on the console, like the first), the old one is refused on the phone, the new
one activates the account and, console closed, the first phone reads what was written before
(the new code's activation box carries the keys); then a
password reset: the phone sets a new password with the third code, the used codes stay dead."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import zxingcpp
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.web.harness import (
    DEMO_PASSWORD,
    ServerProcess,
    axe_violations,
    chromium,
    run_server,
    save_screenshot,
    serious,
)

pytestmark = pytest.mark.browser

DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
NAME = "Lina Haddad"
LOGIN = "lina.haddad"
FIRST_PASSWORD = "premier mot de passe"
NEW_PASSWORD = "mot de passe retrouvé"
WELCOME = "Bienvenue Lina, voici la liste des documents à apporter"
CLIENT_CODE = re.compile(r"^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$")

expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Browser]]:
    with run_server(tmp_path_factory.mktemp("onboarding-web")) as server, chromium() as browser:
        yield server, browser


def _phone(browser: Browser) -> Page:
    ctx = browser.new_context(viewport=PHONE, locale="fr-FR", timezone_id="Europe/Paris")
    return ctx.new_page()


def _ack_recovery_key(page: Page) -> None:
    expect(page.locator("#recovery-key")).to_be_visible()
    page.get_by_label("J'ai noté ma clé de récupération").check()
    page.get_by_role("button", name="Continuer").click()


def _qr_text(page: Page) -> str:
    """Rebuild the dialog's QR code from its SVG path and decode it with zxing-cpp."""
    d = page.locator("#activation-qr svg path").get_attribute("d") or ""
    side = int((page.locator("#activation-qr svg").get_attribute("viewBox") or "").split()[2])
    cells = {(int(x), int(y)) for x, y in re.findall(r"M(\d+) (\d+)h1v1h-1z", d)}
    assert cells
    scale = 3
    px = side * scale
    pixels = bytearray(b"\xff" * px * px)
    for x, y in cells:
        for dy in range(scale):
            start = (y * scale + dy) * px + x * scale
            pixels[start : start + scale] = b"\x00" * scale
    image = memoryview(bytes(pixels)).cast("B", (px, px))
    texts = [str(b.text) for b in zxingcpp.read_barcodes(image)]
    assert len(texts) == 1
    return texts[0]


def _dialog_code(page: Page) -> str:
    code = (page.locator("#activation-code").text_content() or "").strip()
    assert code
    return code


def _activate(page: Page, link: str, password: str) -> None:
    page.goto(link)
    expect(page.locator("#act-password")).to_be_focused()
    page.locator("#act-password").fill(password)
    page.locator("#act-password2").fill(password)
    page.get_by_role("button", name="Activer").click()


def _login_status(server: ServerProcess, password: str) -> int:
    body = json.dumps({"login": LOGIN, "password": password}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback
        server.url + "/api/login", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310 - loopback
            status: int = r.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_activation_dialog_reissue_and_reset(env: tuple[ServerProcess, Browser]) -> None:
    server, browser = env
    # axe-core is injected as an inline script: this context bypasses the CSP (the phones do not).
    console = browser.new_context(
        viewport=DESKTOP, locale="fr-FR", timezone_id="Europe/Paris", bypass_csp=True
    )
    page = console.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url + "/console/")
    page.locator("#login-name").fill("conseiller.demo")
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    _ack_recovery_key(page)

    # A bad login: refused in French before anything is created.
    page.get_by_role("button", name="Nouveau bénéficiaire").click()
    page.locator("#dlg-beneficiary").get_by_label("Nom et prénom").fill(NAME)
    page.locator("#dlg-beneficiary").get_by_label("Identifiant").fill("lina haddad!")
    page.get_by_role("button", name="Créer").click()
    expect(page.locator("#b-error")).to_contain_text("L'identifiant doit compter de 2 à 64")
    page.locator("#dlg-beneficiary").get_by_label("Identifiant").fill(LOGIN)
    page.get_by_role("button", name="Créer").click()

    dialog = page.locator("#dlg-code")
    expect(dialog).to_be_visible()
    expect(page.locator("#dlg-code-title")).to_have_text(f"Compte créé pour {NAME}")
    expect(page.locator("#activation-login")).to_have_text(LOGIN)
    expect(page.locator("#activation-expires")).not_to_be_empty()
    first = _dialog_code(page)
    link = page.locator("#activation-link").get_attribute("href")
    assert link == f"{server.url}/app/?code={first}"
    assert _qr_text(page) == link
    bad = serious(axe_violations(page))
    assert not bad, bad
    save_screenshot(page, "onboarding-activation.png", "activation.png")
    # The printable sheet: only the dialog's sheet, no buttons.
    page.evaluate("document.body.classList.add('printing-sheet')")
    page.emulate_media(media="print")
    expect(page.locator("#screen-app")).to_be_hidden()
    expect(page.locator("#btn-print-sheet")).to_be_hidden()
    expect(page.locator("#activation-code")).to_be_visible()
    expect(page.locator("#activation-qr svg")).to_be_visible()
    save_screenshot(page, "onboarding-sheet.png")
    page.emulate_media(media="screen")
    page.evaluate("document.body.classList.remove('printing-sheet')")
    dialog.get_by_role("button", name="Fermer").click()

    # Written before activation: the first phone must read it at once.
    expect(page.locator("#thread-title")).to_contain_text(NAME)
    page.locator("#message").fill(WELCOME)
    page.locator("#composer [type=submit]").click()
    expect(page.locator("#messages .msg", has_text=WELCOME)).to_be_visible()

    # A new code, made on the console like the first one: the first one dies.
    page.get_by_role("button", name="Code d'activation").click()
    expect(page.locator("#dlg-reissue")).to_be_visible()
    page.get_by_role("button", name="Émettre un nouveau code").click()
    expect(page.locator("#dlg-code-title")).to_have_text(f"Nouveau code d'activation pour {NAME}")
    second = _dialog_code(page)
    assert second != first
    assert CLIENT_CODE.match(second), second  # made on the console, the server saw its proof
    second_link = page.locator("#activation-link").get_attribute("href") or ""
    page.locator("#dlg-code").get_by_role("button", name="Fermer").click()
    expect(page.locator("#messages")).to_contain_text("a émis un nouveau code d'activation")
    page.close()  # nobody online: the new code's activation box carries the keys

    phone = _phone(browser)
    _activate(phone, f"{server.url}/app/?code={first}", FIRST_PASSWORD)
    expect(phone.locator("#act-error")).to_have_text(
        "Ce code d'activation est inconnu, déjà utilisé ou expiré."
    )
    _activate(phone, second_link, FIRST_PASSWORD)
    _ack_recovery_key(phone)
    expect(phone.locator("#messages")).to_contain_text("a émis un nouveau code d'activation")
    expect(phone.locator("#messages .msg", has_text=WELCOME)).to_be_visible()
    expect(phone.locator("#messages")).not_to_contain_text("Message illisible")
    expect(phone.locator("#reshare-banner")).to_be_hidden()
    assert _login_status(server, FIRST_PASSWORD) == 200

    page = console.new_page()
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url + "/console/")
    page.locator("#login-name").fill("conseiller.demo")
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    page.locator(".conv", has_text=NAME).click()
    expect(page.locator("#thread-title")).to_contain_text(NAME)

    # A forgotten password: a third code resets it (on a new phone).
    page.get_by_role("button", name="Code d'activation").click()
    page.get_by_role("button", name="Émettre un nouveau code").click()
    expect(page.locator("#dlg-code-title")).to_have_text(f"Nouveau mot de passe pour {NAME}")
    third = _dialog_code(page)
    third_link = page.locator("#activation-link").get_attribute("href") or ""
    assert third not in (first, second)
    page.locator("#dlg-code").get_by_role("button", name="Fermer").click()
    expect(page.locator("#messages")).to_contain_text("choisir un nouveau mot de passe")

    new_phone = _phone(browser)
    _activate(new_phone, second_link, NEW_PASSWORD)
    expect(new_phone.locator("#act-error")).to_have_text(
        "Ce code d'activation est inconnu, déjà utilisé ou expiré."
    )
    _activate(new_phone, third_link, NEW_PASSWORD)
    expect(new_phone.locator("#screen-activate")).to_be_hidden()
    assert _login_status(server, FIRST_PASSWORD) == 401
    assert _login_status(server, NEW_PASSWORD) == 200
    assert errors == []
    for ctx in (console, phone.context, new_phone.context):
        ctx.close()
