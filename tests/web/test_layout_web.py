"""Accessibility and layout in Chromium (issue #15, point 5): every control of the phone app is
at least 44 x 44 CSS px (measured on each screen and dialog), and the message box stays in the
window without scrolling the page when the console is zoomed to 200 % and 400 % (a 1280 x 800
window) and the app to 200 %; axe-core finds nothing serious on those views."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

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

expect.set_options(timeout=30_000)

# Every visible control's size; a checkbox or radio counts with its label (24 px box, 44 px row).
MEASURE = """() => {
    const small = [];
    const all = document.querySelectorAll("button, input, select, textarea, summary, a[href]");
    for (const el of all) {
        if (el.closest(".msg-text, .card-note, .visually-hidden, [hidden]")) continue;
        const r = el.getBoundingClientRect();
        const style = getComputedStyle(el);
        if (r.width === 0 || r.height === 0) continue;
        if (style.visibility === "hidden" || style.display === "none") continue;
        const text = (el.textContent || el.getAttribute("aria-label") || "").trim();
        const name = `${el.tagName.toLowerCase()}#${el.id || ""} "${text.slice(0, 30)}"`;
        if (el.type === "checkbox" || el.type === "radio") {
            const label = el.labels && el.labels[0] ? el.labels[0].getBoundingClientRect() : null;
            const ok = r.width >= 23.5 && r.height >= 23.5 && label && label.height >= 43.5;
            if (!ok) small.push([name, r.width, r.height]);
            continue;
        }
        if (el.closest(".msg-meta") || el.id === "btn-older") {
            // In a line of text (a message's time, the top of the thread): a 44 px tall area.
            const x = r.left + r.width / 2;
            const y = r.top + r.height / 2;
            const hit = (yy) => el.contains(document.elementFromPoint(x, yy));
            const hits = [hit(y - 21), hit(y + 21)];
            if (r.width < 43.5 || !hits.every(Boolean)) small.push([name, r.width, r.height]);
            continue;
        }
        if (r.width < 43.5 || r.height < 43.5) small.push([name, r.width, r.height]);
    }
    return small;
}"""

# Whether the message box and its send button are wholly inside the window, page not scrolled.
IN_WINDOW = """() => {
    const box = document.querySelector("#message").getBoundingClientRect();
    const send = document.querySelector("#composer [type=submit]").getBoundingClientRect();
    return {
        scrolled: window.scrollY,
        top: Math.min(box.top, send.top), bottom: Math.max(box.bottom, send.bottom),
        left: Math.min(box.left, send.left), right: Math.max(box.right, send.right),
        width: window.innerWidth, height: window.innerHeight,
    };
}"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Browser]]:
    with run_server(tmp_path_factory.mktemp("layout-web")) as server, chromium() as browser:
        yield server, browser


def _small_controls(page: Page) -> list[Any]:
    found: list[Any] = page.evaluate(MEASURE)
    return found


def _ack_recovery_key(page: Page) -> None:
    expect(page.locator("#recovery-key")).to_be_visible()
    assert _small_controls(page) == []
    page.get_by_label("J'ai noté ma clé de récupération").check()
    page.get_by_role("button", name="Continuer").click()


def _assert_reachable(page: Page, label: str) -> None:
    box = page.evaluate(IN_WINDOW)
    assert box["scrolled"] == 0, (label, box)
    assert box["top"] >= 0, (label, box)
    assert box["bottom"] <= box["height"], (label, box)
    assert box["left"] >= 0, (label, box)
    assert box["right"] <= box["width"], (label, box)


def test_phone_controls_are_44_px(env: tuple[ServerProcess, Browser]) -> None:
    server, browser = env
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844},
        locale="fr-FR",
        timezone_id="Europe/Paris",
        has_touch=True,
        is_mobile=True,
        bypass_csp=True,
    )
    page = ctx.new_page()
    page.goto(server.url + "/app/")
    expect(page.locator("#login-name")).to_be_visible()
    assert _small_controls(page) == []
    page.get_by_role("button", name="J'ai un code d'activation").click()
    expect(page.locator("#act-code")).to_be_visible()
    assert _small_controls(page) == []
    page.get_by_role("button", name="J'ai déjà un compte").click()
    page.locator("#login-name").fill("jeune2.demo")
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    _ack_recovery_key(page)
    expect(page.locator("#peer-name")).not_to_have_text("Mon conseiller")
    expect(page.get_by_label("Votre message")).to_be_visible()
    assert _small_controls(page) == []
    menu = page.get_by_role("button", name="Menu")
    box = menu.bounding_box()
    assert box is not None
    assert box["height"] >= 44
    assert box["width"] >= 44
    menu.click()
    expect(page.locator("#menu")).to_be_visible()
    assert _small_controls(page) == []
    menu.click()
    page.locator("#items-box summary").click()
    assert _small_controls(page) == []
    for opener in ("Partager une offre", "Créer une démarche"):
        page.get_by_role("button", name=opener).click()
        dialog = page.locator("dialog[open]")
        expect(dialog).to_be_visible()
        assert _small_controls(page) == [], opener
        bad = serious(axe_violations(page))
        assert not bad, bad
        page.keyboard.press("Escape")
        expect(page.locator("dialog[open]")).to_have_count(0)
    bad = serious(axe_violations(page))
    assert not bad, bad
    _assert_reachable(page, "app")
    save_screenshot(page, "layout-phone.png")

    # The app at 200 %: the message box is still in the window.
    page.set_viewport_size({"width": 195, "height": 422})
    _assert_reachable(page, "app 200 %")
    save_screenshot(page, "layout-app-200.png")
    ctx.close()


def test_console_message_box_reachable_at_200_and_400_percent(
    env: tuple[ServerProcess, Browser],
) -> None:
    server, browser = env
    # A 1280 x 800 window at 200 %: 640 x 400 CSS px, two device pixels per CSS pixel.
    ctx = browser.new_context(
        viewport={"width": 640, "height": 400},
        device_scale_factor=2,
        locale="fr-FR",
        timezone_id="Europe/Paris",
        bypass_csp=True,
    )
    page = ctx.new_page()
    page.goto(server.url + "/console/")
    page.locator("#login-name").fill("conseiller.demo")
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    expect(page.locator("#recovery-key")).to_be_visible()
    page.get_by_label("J'ai noté ma clé de récupération").check()
    page.get_by_role("button", name="Continuer").click()
    page.locator(".conv", has_text="Inès Moreau").click()
    expect(page.locator("#thread-title")).to_contain_text("Inès Moreau")
    page.evaluate("window.scrollTo(0, 0)")
    _assert_reachable(page, "console 200 %")
    bad = serious(axe_violations(page))
    assert not bad, bad
    save_screenshot(page, "layout-console-200.png")
    for zoom in (4, 2):
        page.set_viewport_size({"width": 1280 // zoom, "height": 800 // zoom})
        page.evaluate("window.scrollTo(0, 0)")
        _assert_reachable(page, f"console {zoom * 100} %")
        text = f"Message écrit à {zoom * 100} %"
        page.get_by_label("Votre message").fill(text)
        page.get_by_label("Votre message").press("Enter")
        expect(page.locator(".msg-mine .msg-text", has_text=text)).to_have_count(1)
        # Still there once the page has scrolled to the end.
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        box = page.evaluate(IN_WINDOW)
        assert box["top"] >= 0, box
        assert box["bottom"] <= box["height"], box
        page.evaluate("window.scrollTo(0, 0)")
        save_screenshot(page, f"layout-console-{zoom * 100}.png")
    ctx.close()
