"""The web client's end-to-end trust rules against a lying server, in Chromium.

`web_client/test/e2ee-test.js` builds conversations with real keys and
serves them to the real `KeyManager` (shared/e2ee.js) and `ChatClient`
(shared/chat.js) through a fake key API that forges what a compromised
server could: envelopes from devices outside the conversation or signed
with the key the server hands out, epochs beyond the current one, keys that
do not decrypt the epoch's messages, messages relabelled to another sender,
and key requests for devices nobody approved. One scenario per test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.web.harness import chromium, static_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    """A page of the static web_client/ (its own origin, so its IndexedDB is its own)."""
    with static_server() as url, chromium() as browser:
        context = browser.new_context()
        try:
            p = context.new_page()
            errors: list[str] = []
            p.on("pageerror", lambda err: errors.append(str(err)))
            p.goto(url + "/test/e2ee.html")
            yield p
            assert errors == []
        finally:
            context.close()


def _run(page: Page, name: str) -> None:
    result = page.evaluate("async (name) => (await import('/test/e2ee-test.js')).run(name)", name)
    failures = [m for m in result["messages"] if not m.startswith("ok:")]
    assert result["pass"], "\n".join(failures or result["messages"])


# Finding 1: an epoch key only from an entitled, verified sender, checked against the thread.


def test_poisoned_envelope_is_detected_and_the_committed_key_used(page: Page) -> None:
    _run(page, "poisonedEnvelopeDetected")


def test_a_junk_structure_envelope_is_detected_and_the_committed_key_used(page: Page) -> None:
    _run(page, "poisonedStructureEnvelopeDetected")


def test_a_removed_counsellor_device_is_forgotten_a_previous_counsellors_kept(
    page: Page,
) -> None:
    _run(page, "removedPeerForgotten")


def test_no_epoch_is_sealed_to_a_device_listed_as_escrow(page: Page) -> None:
    _run(page, "escrowNeverSealedTo")


def test_envelope_from_a_device_outside_the_conversation_is_refused(page: Page) -> None:
    _run(page, "foreignSenderRefused")


def test_envelope_from_a_device_with_an_invalid_registration_is_refused(page: Page) -> None:
    _run(page, "invalidRegistrationRefused")


def test_envelope_beyond_the_current_epoch_is_refused(page: Page) -> None:
    _run(page, "futureEpochRefused")


def test_member_envelope_is_preferred_to_escrow(page: Page) -> None:
    _run(page, "memberPreferredOverEscrow")


def test_epoch_key_is_checked_against_a_stored_message(page: Page) -> None:
    _run(page, "keyCheckedAgainstStoredMessage")


def test_previous_counsellor_only_for_epochs_they_held(page: Page) -> None:
    _run(page, "formerCounsellorOnlyForHeldEpochs")


# Finding 3: a message's device must be its sender's.


def test_message_from_another_users_device_is_not_verifiable(page: Page) -> None:
    _run(page, "deviceMustBelongToSender")


# Finding 2: re-wrapping only on approval, for members' verified devices.


def test_beneficiary_client_never_rewraps(page: Page) -> None:
    _run(page, "beneficiaryNeverRewraps")


def test_console_rewrap_policy(page: Page) -> None:
    _run(page, "counsellorPolicy")


# Finding 4: the backup holds the device keys; restoring takes the device over.


def test_backup_restore_takes_over_the_device(page: Page) -> None:
    _run(page, "backupTakesOverDevice")
