"""The portfolio dashboard in Chromium (issue #15, point 2), with data seeded end to end by the
Python SDK (real E2EE): the counsellor's table sorted by "waiting for an answer" and by
"overdue actions", a filter, the CSV export; the supervisor's table per counsellor."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from chat_server.sdk import Client
from chat_server.sdk import items as it
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
DAY = 86400


async def _seed(url: str) -> None:
    """Inès and Yasmine write (Yasmine first), nobody answers them; Lucas has two overdue
    actions, Yasmine one; Inès an action due next week and an appointment tomorrow."""
    ines = await Client.login(url, "jeune1.demo", DEMO_PASSWORD)
    yasmine = await Client.login(url, "jeune3.demo", DEMO_PASSWORD)
    karim = await Client.login(url, "conseiller.demo", DEMO_PASSWORD)
    clients = [ines, yasmine, karim]
    try:
        await karim.connect()
        listing = await karim.request("GET", "/api/conversations")
        conv = {s["peer"]["login"]: s["id"] for s in listing["conversations"]}
        now = int(time.time())

        def late(title: str) -> it.Draft:
            draft = it.action(title, now + DAY)
            return replace(draft, meta={**draft.meta, "due": now - 120})

        for login in ("jeune1.demo", "jeune2.demo", "jeune3.demo"):
            await karim.send_text(conv[login], "Bonjour, voici votre espace d'échange.")
        await karim.send_draft(conv["jeune2.demo"], late("Envoyer mon CV"))
        await karim.send_draft(conv["jeune2.demo"], late("Appeler la mission locale"))
        await karim.send_draft(conv["jeune3.demo"], late("Déposer le dossier CAF"))
        await karim.send_draft(
            conv["jeune1.demo"], it.action("Préparer l'entretien", now + 7 * DAY)
        )
        await karim.send_draft(
            conv["jeune1.demo"], it.appointment(now + DAY, title="Point mensuel", place="Salle 2")
        )
        for person, login in ((yasmine, "jeune3.demo"), (ines, "jeune1.demo")):
            await person.connect()
            await person.fetch_envelopes()
            await person.send_text(conv[login], "Bonjour, j'ai une question.")
            await asyncio.sleep(1.1)
    finally:
        for c in clients:
            await c.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Browser]]:
    with run_server(tmp_path_factory.mktemp("portfolio-web")) as server:
        asyncio.run(_seed(server.url))
        with chromium() as browser:
            yield server, browser


def _login(browser: Browser, server: ServerProcess, login: str) -> Page:
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 800},
        locale="fr-FR",
        timezone_id="Europe/Paris",
        accept_downloads=True,
        bypass_csp=True,  # axe-core is injected inline
    )
    page = ctx.new_page()
    page.goto(server.url + "/console/")
    page.locator("#login-name").fill(login)
    page.locator("#login-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    expect(page.locator("#recovery-key")).to_be_visible()
    page.get_by_label("J'ai noté ma clé de récupération").check()
    page.get_by_role("button", name="Continuer").click()
    page.get_by_role("button", name="Tableau de bord").click()
    expect(page.locator("#portfolio-body tr")).to_have_count(3)
    return page


def _logins(page: Page) -> list[str]:
    return [
        str(v)
        for v in page.locator("#portfolio-body tr").evaluate_all(
            "(rows) => rows.map((r) => r.dataset.login)"
        )
    ]


def _sort_by(page: Page, label: str) -> None:
    page.locator("#portfolio-headers").get_by_role("button", name=label).click()


def test_counsellor_dashboard_sorted_filtered_exported(
    env: tuple[ServerProcess, Browser],
) -> None:
    server, browser = env
    page = _login(browser, server, "conseiller.demo")
    _sort_by(page, "En attente de réponse depuis")
    header = page.locator("th", has=page.get_by_role("button", name="En attente de réponse depuis"))
    expect(header).to_have_attribute("aria-sort", "ascending")
    assert _logins(page) == ["jeune3.demo", "jeune1.demo", "jeune2.demo"]
    waiting = page.locator("#portfolio-body tr[data-login='jeune2.demo'] td[data-col='waiting']")
    expect(waiting).to_have_text("—")

    _sort_by(page, "Démarches en retard")
    expect(page.locator("th[aria-sort='descending']")).to_contain_text("Démarches en retard")
    assert _logins(page) == ["jeune2.demo", "jeune3.demo", "jeune1.demo"]
    overdue = page.locator("#portfolio-body td[data-col='overdue']")
    expect(overdue).to_have_text(["2 sur 2", "1 sur 1", "0 sur 1"])
    appointment = page.locator(
        "#portfolio-body tr[data-login='jeune1.demo'] td[data-col='appointment']"
    )
    expect(appointment).not_to_have_text("—")
    bad = serious(axe_violations(page))
    assert not bad, bad
    save_screenshot(page, "portfolio.png", "portfolio.png")

    page.get_by_label("Démarches en retard").check()
    expect(page.locator("#portfolio-body tr")).to_have_count(2)
    page.get_by_label("Démarches en retard").uncheck()
    page.get_by_label("Rechercher", exact=True).fill("ines")
    assert _logins(page) == ["jeune1.demo"]
    page.get_by_label("Rechercher", exact=True).fill("")

    with page.expect_download() as info:
        page.get_by_role("button", name="Exporter (CSV)").click()
    text = Path(info.value.path()).read_text("utf-8-sig")
    table = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert table[0][0] == "Bénéficiaire"
    by_login = {row[1]: dict(zip(table[0], row, strict=True)) for row in table[1:]}
    assert set(by_login) == {"jeune1.demo", "jeune2.demo", "jeune3.demo"}
    assert by_login["jeune2.demo"]["Démarches en retard"] == "2"
    assert "question" not in text  # only server-visible fields

    # A name opens the conversation.
    page.locator("#portfolio-body").get_by_role("button", name="Lucas Petit").click()
    expect(page.locator("#thread-title")).to_contain_text("Lucas Petit")
    expect(page.locator("#portfolio")).to_be_hidden()
    page.context.close()


def test_supervisor_dashboard_per_counsellor(env: tuple[ServerProcess, Browser]) -> None:
    server, browser = env
    page = _login(browser, server, "superviseur.demo")
    counsellors = page.locator("#portfolio-body tr td:nth-of-type(1)")
    expect(counsellors).to_have_text(["Karim Benali"] * 3)
    page.get_by_label("Conseiller", exact=True).select_option(label="Karim Benali")
    expect(page.locator("#portfolio-body tr")).to_have_count(3)
    bad = serious(axe_violations(page))
    assert not bad, bad
    page.context.close()
