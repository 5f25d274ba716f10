"""A code re-issued in a structure that has a structure key (issue #15 point 3 with #10 point 2):
the console's new activation box holds every epoch key it can open and names the structure key
it seals to (the first phone pins it), and the first phone reads what was written before, with
the console closed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from chat_server.crypto.activation import derive, open_box_contents
from chat_server.sdk import Client
from tests.web.harness import (
    DEMO_PASSWORD,
    PHONE,
    ServerProcess,
    chromium,
    run_server,
    watch_page,
)
from tests.web.test_structure_transfer import _approve, _console, _run, _structure_key_exists

pytestmark = pytest.mark.browser

expect.set_options(timeout=30_000)
NAME = "Nora Belkacem"
LOGIN = "nora.belkacem"
WELCOME = "Bonjour Nora, voici les pièces à apporter jeudi"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Browser]]:
    with run_server(tmp_path_factory.mktemp("reissue-structure")) as server, chromium() as b:
        yield server, b


async def _structure_key_id(url: str) -> str:
    karim = await Client.login(url, "conseiller.demo", DEMO_PASSWORD)
    try:
        return str((await karim.request("GET", "/api/structure-key"))["key"]["key_id"])
    finally:
        await karim.close()


def test_reissued_box_names_the_structure_key(env: tuple[ServerProcess, Browser]) -> None:
    server, browser = env
    problems: list[str] = []
    sup_ctx, sup = _console(browser, server, "superviseur.demo", problems)
    try:
        assert _run(lambda: _structure_key_exists(server.url))
        ctx, page = _console(browser, server, "conseiller.demo", problems)
        _approve(sup, "Karim Benali")
        page.get_by_role("button", name="Nouveau bénéficiaire").click()
        page.locator("#dlg-beneficiary").get_by_label("Nom et prénom").fill(NAME)
        page.locator("#dlg-beneficiary").get_by_label("Identifiant").fill(LOGIN)
        page.get_by_role("button", name="Créer").click()
        page.locator("#dlg-code").get_by_role("button", name="Fermer").click()
        expect(page.locator("#thread-title")).to_contain_text(NAME)
        page.locator("#message").fill(WELCOME)
        page.locator("#composer [type=submit]").click()
        expect(page.locator("#messages .msg", has_text=WELCOME)).to_contain_text("Envoyé")

        page.get_by_role("button", name="Code d'activation").click()
        with page.expect_request(
            lambda r: r.method == "PUT" and r.url.endswith("/activation-box")
        ) as put:
            page.get_by_role("button", name="Émettre un nouveau code").click()
        title = f"Nouveau code d'activation pour {NAME}"
        expect(page.locator("#dlg-code-title")).to_have_text(title)
        code = (page.locator("#activation-code").text_content() or "").strip()
        link = page.locator("#activation-link").get_attribute("href") or ""
        conversation = put.value.url.split("/api/conversations/")[1].split("/")[0]
        box = put.value.post_data_json
        assert isinstance(box, dict)
        keys, named = open_box_contents(derive(code).box_key, conversation, box)
        assert keys, "the box holds the epoch keys written before"
        assert named == _run(lambda: _structure_key_id(server.url))
        ctx.close()  # nobody but the supervisor online; the phone needs no one

        phone_ctx = browser.new_context(viewport=PHONE, locale="fr-FR", timezone_id="Europe/Paris")
        phone = phone_ctx.new_page()
        watch_page(phone, "phone", problems)
        phone.goto(link)
        phone.locator("#act-password").fill("mot de passe de Nora")
        phone.locator("#act-password2").fill("mot de passe de Nora")
        phone.get_by_role("button", name="Activer").click()
        expect(phone.locator("#recovery-key")).to_be_visible()
        phone.get_by_label("J'ai noté ma clé de récupération").check()
        phone.get_by_role("button", name="Continuer").click()
        expect(phone.locator("#messages .msg", has_text=WELCOME)).to_be_visible()
        expect(phone.locator("#messages")).not_to_contain_text("Message illisible")
        pinned = phone.evaluate(
            """async () => {
                const { idbGet } = await import("/shared/idb.js");
                const session = await idbGet("kv", "session");
                return (await idbGet("kv", `structure-pin-box|${session.user.id}`))?.keyId ?? null;
            }"""
        )
        assert pinned == named
        phone_ctx.close()
        assert not problems, problems
    finally:
        sup_ctx.close()
