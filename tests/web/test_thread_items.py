"""The accompaniment thread in Chromium, two people, end to end (E2EE on, real server).

The young person's app (phone-sized) and the counsellor's console share
offers, actions and appointments, edit and delete messages, and the
counsellor posts a notice shown in the app between two dates (the app's
clock is Playwright's, moved forward). The tests run in order and build on
each other; each new view passes axe-core (no serious or critical finding).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import (
    Locator,
    Page,
    Route,
    expect,
)

from tests.web.harness import (
    DemoPair,
    axe_serious,
    chromium,
    demo_pair,
    run_server,
    save_screenshot,
    watch_page,
)

pytestmark = pytest.mark.browser

YOUNG = "Inès Moreau"
OFFER_URL = "https://emploi.example.org/offres/12345?ref=cej"
DAY = 86400

expect.set_options(timeout=20_000)


def _axe(page: Page) -> list[dict[str, Any]]:
    """Serious and critical axe-core findings (run through DevTools: the CSP stays on)."""
    return axe_serious(page)


def _card(page: Page, kind: str, title: str) -> Locator:
    return page.locator(f".card-{kind}", has=page.locator(".card-title", has_text=title))


def _bubble(page: Page, cls: str, text: str) -> Locator:
    return page.locator(f".{cls}", has=page.locator(".msg-text", has_text=text))


def _dialog(page: Page, name: str) -> Locator:
    return page.get_by_role("dialog", name=name)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoPair]:
    data_dir: Path = tmp_path_factory.mktemp("thread-server")
    with (
        run_server(data_dir) as server,
        chromium() as browser,
        demo_pair(server, browser, YOUNG) as w,
    ):
        yield w


def test_offer_shared_by_the_counsellor_and_opened_in_the_app(world: DemoPair) -> None:
    console, app = world.console, world.app
    console.get_by_role("button", name="Partager une offre").click()
    dialog = _dialog(console, "Partager une offre")
    dialog.get_by_label("Type").select_option("alternance")
    dialog.get_by_label("Titre").fill("Alternance vendeur·se en boulangerie")
    dialog.get_by_label("Entreprise ou organisme").fill("Boulangerie du Marché")
    dialog.get_by_label("Lieu").fill("Lyon 3e")
    # A link that is not http(s) is refused on the device; nothing is sent.
    dialog.get_by_label("Lien vers l'offre").fill("javascript:alert(1)")
    dialog.get_by_role("button", name="Partager une offre").click()
    expect(dialog.get_by_role("alert")).to_have_text(
        "Le lien doit commencer par https:// ou http://."
    )
    dialog.get_by_label("Lien vers l'offre").fill(OFFER_URL)
    dialog.get_by_label("Note (facultatif)").fill("Début en janvier, 2 jours par semaine.")
    dialog.get_by_role("button", name="Partager une offre").click()
    expect(dialog).to_be_hidden()

    card = _card(app, "offer", "Alternance vendeur·se en boulangerie")
    expect(card).to_contain_text("Alternance")
    expect(card).to_contain_text("Boulangerie du Marché · Lyon 3e")
    expect(card).to_contain_text("Début en janvier")
    link = card.get_by_role("link", name="Voir l'offre")
    expect(link).to_have_attribute("href", OFFER_URL)
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("title", OFFER_URL)
    expect(link).to_have_attribute("target", "_blank")

    # Opened: a new tab on the offer (served here by the test, never the Internet).
    def offer_page(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body="<title>Offre 12345</title>")

    world.app_ctx.route(re.compile(r"^https://emploi\.example\.org/"), offer_page)
    with world.app_ctx.expect_page() as opened:
        link.click()
    tab = opened.value
    expect(tab).to_have_url(OFFER_URL)
    assert tab.evaluate("() => window.opener") is None
    tab.close()

    # The young person shares one too (service civique); the console shows it.
    app.get_by_role("button", name="Partager une offre").click()
    dialog = _dialog(app, "Partager une offre")
    dialog.get_by_label("Type").select_option("service_civique")
    dialog.get_by_label("Titre").fill("Service civique : aide aux devoirs")
    dialog.get_by_role("button", name="Partager une offre").click()
    expect(_card(console, "offer", "Service civique : aide aux devoirs")).to_contain_text(
        "Service civique"
    )


def test_action_created_by_the_counsellor_done_by_the_young_person(world: DemoPair) -> None:
    console, app = world.console, world.app
    console.get_by_role("button", name="Créer une démarche").click()
    dialog = _dialog(console, "Créer une démarche")
    dialog.get_by_label("Titre").fill("Mettre à jour mon CV")
    dialog.get_by_label("Description").fill("Ajouter le stage de juin.")
    # A due date before today is refused on the device.
    dialog.get_by_label("À réaliser avant le").fill("2020-01-15")
    dialog.get_by_role("button", name="Créer une démarche").click()
    expect(dialog.get_by_role("alert")).to_have_text("Cette date est déjà passée.")
    expect(dialog.get_by_label("À réaliser avant le")).to_have_attribute("aria-invalid", "true")
    due = console.evaluate(
        "() => { const d = new Date(Date.now() + 10 * 86400000);"
        " return d.toISOString().slice(0, 10); }"
    )
    dialog.get_by_label("À réaliser avant le").fill(due)
    dialog.get_by_role("button", name="Créer une démarche").click()
    expect(dialog).to_be_hidden()

    console_card = _card(console, "action", "Mettre à jour mon CV")
    app_card = _card(app, "action", "Mettre à jour mon CV")
    expect(console_card.locator(".status")).to_have_text("À faire")
    expect(app_card.locator(".status")).to_have_text("À faire")
    expect(app_card).to_contain_text("Ajouter le stage de juin.")
    expect(console.locator("#items-panel")).to_contain_text("Mettre à jour mon CV")

    # The counsellor comments; the young person sets it done: both cards follow live.
    console_card.get_by_role("button", name="Commenter").click()
    dialog = _dialog(console, "Commenter la démarche")
    dialog.get_by_label("Commentaire").fill(
        "Pouvez-vous compléter la description de cette action ?"
    )
    dialog.get_by_role("button", name="Envoyer").click()
    expect(app.locator(".msg-comment")).to_contain_text("Pouvez-vous compléter la description")
    app_card.get_by_role("button", name="Terminer").click()
    expect(app_card.locator(".status")).to_have_text("Terminée")
    expect(console_card.locator(".status")).to_have_text("Terminée")
    expect(
        console.locator(".msg-event", has_text="« Mettre à jour mon CV » : Terminée")
    ).to_be_visible()
    expect(console.locator("#items-panel")).to_contain_text("Aucune démarche en cours.")
    # Done: it can be reopened, not cancelled.
    expect(console_card.get_by_role("button", name="Rouvrir")).to_be_visible()
    expect(console_card.get_by_role("button", name="Annuler la démarche")).to_have_count(0)

    # The young person creates an action of their own.
    app.get_by_role("button", name="Créer une démarche").click()
    dialog = _dialog(app, "Créer une démarche")
    dialog.get_by_label("Titre").fill("Appeler la Mission Locale de Vénissieux")
    dialog.get_by_role("button", name="Créer une démarche").click()
    expect(_card(console, "action", "Appeler la Mission Locale de Vénissieux")).to_be_visible()
    assert _axe_console_with_dialog(world) == []


def _axe_console_with_dialog(world: DemoPair) -> list[dict[str, Any]]:
    console = world.console
    found = _axe(console)
    console.get_by_role("button", name="Fixer un rendez-vous").click()
    found += _axe(console)
    console.keyboard.press("Escape")
    expect(_dialog(console, "Fixer un rendez-vous")).to_have_count(0)
    return found


def test_appointment_created_changed_answered_cancelled(world: DemoPair) -> None:
    console, app = world.console, world.app
    day = console.evaluate("() => new Date(Date.now() + 3 * 86400000).toISOString().slice(0, 10)")
    console.get_by_role("button", name="Fixer un rendez-vous").click()
    dialog = _dialog(console, "Fixer un rendez-vous")
    dialog.get_by_label("Type").select_option("atelier")
    dialog.get_by_label("Titre").fill("Atelier CV et lettre de motivation")
    dialog.get_by_label("Date").fill(day)
    dialog.get_by_label("Heure").fill("14:30")
    dialog.get_by_label("Durée (minutes)").fill("90")
    dialog.get_by_label("Lieu").fill("Mission Locale, salle 2")
    dialog.get_by_role("button", name="Fixer un rendez-vous").click()
    expect(dialog).to_be_hidden()
    app_card = _card(app, "appointment", "Atelier CV et lettre de motivation")
    console_card = _card(console, "appointment", "Atelier CV et lettre de motivation")
    expect(app_card).to_contain_text("à 14:30 (90 min)")
    expect(app_card).to_contain_text("Mission Locale, salle 2")
    expect(console_card).to_contain_text("En attente de réponse")
    # The young person cannot change or cancel it.
    expect(app_card.get_by_role("button", name="Annuler le rendez-vous")).to_have_count(0)

    console_card.get_by_role("button", name="Modifier").click()
    dialog = _dialog(console, "Modifier le rendez-vous")
    dialog.get_by_label("Heure").fill("15:00")
    dialog.get_by_role("button", name="Enregistrer").click()
    expect(app_card).to_contain_text("à 15:00 (90 min)")
    expect(app.locator(".msg-event", has_text="Rendez-vous modifié.")).to_be_visible()

    app_card.get_by_role("button", name="Je serai présent·e").click()
    expect(console_card.locator(".card-answer")).to_have_text("Présence confirmée")
    expect(app_card.locator(".card-answer")).to_have_text("Vous avez confirmé votre présence.")
    app.locator("#items-box summary").click()
    expect(app.locator("#items-panel")).to_contain_text("Atelier CV et lettre de motivation")
    expect(app.locator("#items-panel")).to_contain_text("à 15:00")
    expect(console.locator("#items-panel")).to_contain_text("à 15:00")
    assert _axe(app) == []
    app.locator("#items-box summary").click()
    expect(app.locator("#items-panel")).to_be_hidden()
    app.locator("#log").evaluate("(el) => { el.scrollTop = el.scrollHeight; }")
    save_screenshot(app, "app-thread-cards.png", "app-cards.png")
    save_screenshot(console, "console-thread-cards.png", "console-cards.png")

    console_card.get_by_role("button", name="Annuler le rendez-vous").click()
    console.get_by_role("alertdialog").get_by_role("button", name="Annuler le rendez-vous").click()
    expect(app_card.locator(".tag-late")).to_have_text("Rendez-vous annulé")
    expect(console_card.get_by_role("button", name="Modifier")).to_have_count(0)
    expect(app_card.get_by_role("button", name="Je serai présent·e")).to_have_count(0)
    expect(app.locator("#items-panel")).to_contain_text("Aucun rendez-vous prévu.")


def test_edit_and_delete_seen_by_the_other_side_and_the_list_follows(world: DemoPair) -> None:
    console, app = world.console, world.app
    app.get_by_label("Votre message").fill("Je suis dispo mardi à 10h")
    app.get_by_role("button", name="Envoyer").click()
    mine = _bubble(app, "msg-mine", "Je suis dispo mardi à 10h")
    expect(mine.locator(".status-read")).to_have_text("Lu")
    mine.get_by_role("button", name=re.compile("^Modifier")).click()
    dialog = _dialog(app, "Modifier le message")
    dialog.get_by_label("Votre message").fill(
        "Je suis dispo mardi à 11h, voir https://exemple.fr/plan."
    )
    dialog.get_by_role("button", name="Enregistrer").click()
    edited = _bubble(console, "msg-peer", "Je suis dispo mardi à 11h")
    expect(edited.locator(".msg-edited")).to_have_text("(modifié)")
    link = edited.get_by_role("link", name="https://exemple.fr/plan")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("href", "https://exemple.fr/plan")
    expect(link).to_have_attribute("title", "https://exemple.fr/plan")  # shown on hover
    expect(_bubble(console, "msg-peer", "10h")).to_have_count(0)
    conv = console.locator(".conv", has_text=YOUNG)
    expect(conv.locator(".preview")).to_contain_text("Je suis dispo mardi à 11h")

    # "À répondre": the young person wrote last.
    console.get_by_role("button", name="À répondre").click()
    expect(console.locator("#conv-list .conv")).to_have_count(1)
    console.get_by_role("button", name="À répondre").click()
    expect(console.locator("#conv-list .conv")).to_have_count(3)

    _bubble(app, "msg-mine", "Je suis dispo mardi à 11h").get_by_role(
        "button", name=re.compile("^Supprimer")
    ).click()
    app.get_by_role("alertdialog").get_by_role("button", name="Supprimer").click()
    expect(_bubble(console, "msg-peer", "(message supprimé)")).to_have_count(1)
    expect(_bubble(app, "msg-mine", "(message supprimé)")).to_have_count(1)
    expect(_bubble(console, "msg-peer", "11h")).to_have_count(0)
    expect(conv.locator(".preview")).to_have_text("(message supprimé)")
    # One day separator for today on each side.
    expect(console.locator(".day-label", has_text="Aujourd'hui")).to_have_count(1)
    expect(app.locator(".day-label", has_text="Aujourd'hui")).to_have_count(1)


def test_the_device_refuses_oversized_fields_and_impossible_dates_in_french(
    world: DemoPair,
) -> None:
    console, app = world.console, world.app
    cards_before = app.locator(".card").count()
    console.get_by_role("button", name="Créer une démarche").click()
    dialog = _dialog(console, "Créer une démarche")
    title = dialog.get_by_label("Titre")
    # A pasted text longer than the field allows (maxlength stops typing, not scripts).
    title.evaluate("(el) => { el.removeAttribute('maxlength'); el.value = 'x'.repeat(121); }")
    dialog.get_by_role("button", name="Créer une démarche").click()
    expect(dialog.get_by_role("alert")).to_have_text("« Titre » dépasse 120 caractères.")
    expect(title).to_have_attribute("aria-invalid", "true")
    title.fill("Préparer l'entretien")
    far = console.evaluate(
        "() => new Date(Date.now() + 3 * 366 * 86400000).toISOString().slice(0, 10)"
    )
    dialog.get_by_label("À réaliser avant le").fill(far)
    dialog.get_by_role("button", name="Créer une démarche").click()
    expect(dialog.get_by_role("alert")).to_have_text("Cette date est à plus de deux ans.")
    console.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    console.get_by_role("button", name="Fixer un rendez-vous").click()
    dialog = _dialog(console, "Fixer un rendez-vous")
    dialog.get_by_label("Durée (minutes)").fill("601")
    dialog.get_by_label("Lieu").fill("Mission Locale")
    dialog.get_by_role("button", name="Fixer un rendez-vous").click()
    expect(dialog.get_by_role("alert")).to_have_text(
        "La durée doit être comprise entre 5 et 600 minutes."
    )
    dialog.get_by_label("Durée (minutes)").fill("60")
    dialog.get_by_label("Lieu").fill("")
    dialog.get_by_role("button", name="Fixer un rendez-vous").click()
    expect(dialog.get_by_role("alert")).to_have_text("Indiquez un lieu ou un lien de visio.")
    console.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    # Nothing was sent.
    expect(console.locator(".msg-pending")).to_have_count(0)
    assert app.locator(".card").count() == cards_before


def _focused(page: Page) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate(
        """() => {
            const el = document.activeElement;
            const card = el && el.closest(".card");
            return {
                text: el ? (el.textContent || "").trim() : "",
                tag: el ? el.tagName : "",
                card: card ? card.querySelector(".card-title")?.textContent || "" : "",
                dialog: el ? Boolean(el.closest("dialog")) : false,
            };
        }"""
    )
    return found


def _tab_to(page: Page, name: str, *, card: str = "", back: bool = False) -> None:
    """Press Tab (or Shift+Tab) until the button or link `name` (in `card`) has the focus."""
    key = "Shift+Tab" if back else "Tab"
    seen = []
    for _ in range(80):
        page.keyboard.press(key)
        got = _focused(page)
        seen.append(got["text"][:30])
        if got["text"] == name and (not card or got["card"] == card):
            return
    raise AssertionError(f"{name!r} not reached by {key}: {seen}")


def test_items_are_made_and_answered_with_the_keyboard_alone(world: DemoPair) -> None:
    console, app = world.console, world.app
    title = "Appeler France Travail pour l'inscription"
    console.get_by_label("Votre message").focus()
    _tab_to(console, "Créer une démarche", back=True)
    console.keyboard.press("Enter")
    dialog = _dialog(console, "Créer une démarche")
    expect(dialog).to_be_visible()
    assert _focused(console)["dialog"]  # the focus moved into the dialog
    console.keyboard.type(title)
    console.keyboard.press("Enter")  # submits the form
    expect(dialog).to_have_count(0)
    app_card = _card(app, "action", title)
    expect(app_card.locator(".status")).to_have_text("À faire")

    # The young person reaches the card's buttons from the composer, backwards.
    app.get_by_label("Votre message").focus()
    _tab_to(app, "Commencer", card=title, back=True)
    app.keyboard.press("Enter")
    expect(_card(console, "action", title).locator(".status")).to_have_text("En cours")
    app.get_by_label("Votre message").focus()
    _tab_to(app, "Commenter", card=title, back=True)
    app.keyboard.press("Enter")
    dialog = _dialog(app, "Commenter la démarche")
    expect(dialog).to_be_visible()
    app.keyboard.type("J'ai rendez-vous jeudi.")
    _tab_to(app, "Envoyer")
    app.keyboard.press("Enter")
    expect(console.locator(".msg-comment", has_text="J'ai rendez-vous jeudi.")).to_have_count(1)
    # The follow-up panel opens with the keyboard too.
    app.locator("#items-box summary").focus()
    app.keyboard.press("Enter")
    expect(app.locator("#items-panel")).to_contain_text(title)
    app.keyboard.press("Enter")
    expect(app.locator("#items-panel")).to_be_hidden()


def _axe_dialog(page: Page, button: Locator, name: str) -> list[dict[str, Any]]:
    button.click()
    dialog = page.get_by_role("dialog", name=name).or_(page.get_by_role("alertdialog"))
    expect(dialog).to_be_visible()
    found = [dict(f, view=name) for f in _axe(page)]
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    return found


def test_every_dialog_of_both_apps_passes_axe(world: DemoPair) -> None:
    console, app = world.console, world.app
    found: list[dict[str, Any]] = []
    for page in (console, app):
        for name in ("Partager une offre", "Créer une démarche"):
            found += _axe_dialog(page, page.get_by_role("button", name=name), name)
        card = page.locator(".card-action").last
        found += _axe_dialog(
            page, card.get_by_role("button", name="Commenter"), "Commenter la démarche"
        )
    found += _axe_dialog(
        console, console.get_by_role("button", name="Message important"), "Message important"
    )
    app.get_by_label("Votre message").fill("Un message à modifier")
    app.get_by_role("button", name="Envoyer").click()
    mine = _bubble(app, "msg-mine", "Un message à modifier")
    found += _axe_dialog(
        app, mine.get_by_role("button", name=re.compile("^Modifier")), "Modifier le message"
    )
    found += _axe_dialog(
        app, mine.get_by_role("button", name=re.compile("^Supprimer")), "Supprimer"
    )
    assert found == []


def test_notice_shown_between_its_dates_and_lifted_at_the_end(world: DemoPair) -> None:
    console = world.console
    # A new page of the app on Playwright's clock (time runs, and can jump ahead).
    world.app_ctx.clock.install()
    app = world.app_ctx.new_page()
    watch_page(app, "app (clock)", world.problems)
    app.goto(world.server.url + "/app/")
    expect(app.locator("#conn")).to_have_text("En ligne")

    console.get_by_role("button", name="Message important").click()
    dialog = _dialog(console, "Message important")
    dialog.get_by_label("Message").fill("Je serai absent demain, contactez l'accueil au besoin.")
    tomorrow = console.evaluate("() => new Date(Date.now() + 86400000).toLocaleDateString('fr-CA')")
    dialog.get_by_label("Du").fill(tomorrow)
    dialog.get_by_label("Au (inclus)").fill("2020-01-01")
    dialog.get_by_role("button", name="Publier").click()
    expect(dialog.get_by_role("alert")).to_have_text("Cette date est déjà passée.")
    dialog.get_by_label("Au (inclus)").fill(tomorrow)
    dialog.get_by_role("button", name="Publier").click()
    expect(console.locator("#notice-status")).to_have_text(
        "Message important publié dans 3 conversation(s)."
    )
    # The app has it (its line is in the thread), but its dates have not begun.
    expect(app.locator(".msg-notice-item", has_text="Je serai absent demain")).to_have_count(1)
    banner = app.locator("#notice-banner")
    expect(banner).to_be_hidden()
    # A day later it is shown, by itself.
    app.clock.fast_forward("24:00:00")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Je serai absent demain")
    assert _axe(app) == []
    # Two days later it is gone, by itself.
    app.clock.fast_forward("48:00:00")
    expect(banner).to_be_hidden()
    app.close()


FR_DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
FR_MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)


def _app_at(world: DemoPair, seconds: float) -> Page:
    """A new page of the app whose clock reads `seconds` (the server's stays real)."""
    page = world.app_ctx.new_page()
    watch_page(page, "app (later)", world.problems)
    page.clock.set_fixed_time(seconds)
    page.goto(world.server.url + "/app/")
    expect(page.locator("#conn")).to_have_text("En ligne")
    return page


def test_day_separators_and_overdue_actions_follow_the_clock(world: DemoPair) -> None:
    now = time.time()
    today = datetime.fromtimestamp(now, ZoneInfo("Europe/Paris"))
    # The next day, today's messages are "Hier".
    app = _app_at(world, now + DAY)
    expect(app.locator(".day-label", has_text="Hier")).to_have_count(1)
    expect(app.locator(".day-label", has_text="Aujourd'hui")).to_have_count(0)
    app.close()
    # Nine days later: the weekday and date; the actions due in a week are late.
    app = _app_at(world, now + 9 * DAY)
    label = f"{FR_DAYS[today.weekday()]} {today.day} {FR_MONTHS[today.month - 1]}"
    expect(app.locator(".day-label").first).to_have_text(re.compile(f"^{label}( {today.year})?$"))
    late = _card(app, "action", "Appeler la Mission Locale de Vénissieux")
    expect(late).to_have_class(re.compile(r"\bcard-late\b"))
    expect(_card(app, "action", "Mettre à jour mon CV")).not_to_have_class(re.compile("card-late"))
    app.locator("#items-box summary").click()
    row = app.locator("#items-panel li", has_text="Appeler la Mission Locale de Vénissieux")
    expect(row.locator(".tag-late")).to_have_text("En retard")
    assert _axe(app) == []
    app.close()


def test_pages_ran_without_csp_violation_or_error(world: DemoPair) -> None:
    assert world.problems == []
