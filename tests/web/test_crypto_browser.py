"""web_client/shared/crypto.js in Chromium: RFC 9180 vector, Python vectors, browser vectors.

A loopback HTTP server (a secure context for WebCrypto) serves `web_client/`
and, under `/vectors/`, the RFC 9180 A.1.1 vector and `tests/vectors/python.json`.
`web_client/test/crypto.html` runs every check in the page and leaves a summary
on `window.__cryptoResults`; the tests read it. The browser's vectors are
written to `tests/vectors/browser.json`, which the Python side checks.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage

from tests.web.harness import WEB_ROOT, chromium, static_server

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
VECTORS_DIR = REPO / "tests" / "vectors"
PYTHON_VECTORS = VECTORS_DIR / "python.json"
BROWSER_VECTORS = VECTORS_DIR / "browser.json"
RFC_VECTOR_NAME = "hpke-rfc9180-a1-base.json"
COMMIT_VECTOR_NAME = "epoch-commitment-v1.json"
ACTIVATION_VECTOR_NAME = "activation-v1.json"
STRUCTURE_VECTOR_NAME = "structure-key-v1.json"
# The repository's copy first, then the project's shared/ folder beside the checkout.
RFC_VECTOR_CANDIDATES = (
    REPO / "tests" / "crypto" / RFC_VECTOR_NAME,
    REPO.parent / "shared" / "vectors" / RFC_VECTOR_NAME,
)
VECTOR_SEED = "cejchat/browser-vectors/v1"
PAGE_TIMEOUT_MS = 120_000
PYTHON_VECTORS_MODULE = "chat_server.crypto.vectors"


def _vector_path(name: str) -> Path:
    candidates = (REPO / "tests" / "crypto" / name, REPO.parent / "shared" / "vectors" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"vector {name} not found; tried {tried}")


def _rfc_vector_path() -> Path:
    return _vector_path(RFC_VECTOR_NAME)


def _ensure_python_vectors() -> str | None:
    """Make sure tests/vectors/python.json exists; return why not if it can't."""
    if PYTHON_VECTORS.is_file():
        return None
    if importlib.util.find_spec(PYTHON_VECTORS_MODULE) is None:
        return f"{PYTHON_VECTORS} is missing and {PYTHON_VECTORS_MODULE} does not exist yet"
    module = importlib.import_module(PYTHON_VECTORS_MODULE)
    module.main(["--write", str(PYTHON_VECTORS)])
    return None


@pytest.fixture(scope="module")
def python_vectors_missing() -> str | None:
    """None when tests/vectors/python.json is there (written if needed), else the reason."""
    return _ensure_python_vectors()


@pytest.fixture(scope="module")
def base_url(python_vectors_missing: str | None) -> Iterator[str]:
    """The harness's loopback server, with the vectors under `/vectors/`."""
    files = {
        RFC_VECTOR_NAME: _rfc_vector_path(),
        COMMIT_VECTOR_NAME: _vector_path(COMMIT_VECTOR_NAME),
        ACTIVATION_VECTOR_NAME: _vector_path(ACTIVATION_VECTOR_NAME),
        STRUCTURE_VECTOR_NAME: _vector_path(STRUCTURE_VECTOR_NAME),
    }
    if python_vectors_missing is None:
        files["python.json"] = PYTHON_VECTORS
    with static_server(WEB_ROOT, files) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright (the harness's launcher)."""
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def results(browser: Browser, base_url: str, python_vectors_missing: str | None) -> dict[str, Any]:
    """Load the test page once and return `window.__cryptoResults` plus the page's errors."""
    query = {
        "rfc": f"/vectors/{RFC_VECTOR_NAME}",
        "commit": f"/vectors/{COMMIT_VECTOR_NAME}",
        "activation": f"/vectors/{ACTIVATION_VECTOR_NAME}",
        "structure": f"/vectors/{STRUCTURE_VECTOR_NAME}",
        "seed": VECTOR_SEED,
    }
    if python_vectors_missing is None:
        query["peer"] = "/vectors/python.json"
    page = browser.new_page()
    page_errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            page_errors.append(f"console.error: {msg.text}")

    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("console", on_console)
    try:
        page.goto(f"{base_url}/test/crypto.html?{urllib.parse.urlencode(query)}")
        page.wait_for_function(
            "() => window.__cryptoResults !== undefined && window.__cryptoResults.done",
            timeout=PAGE_TIMEOUT_MS,
        )
        summary: dict[str, Any] = page.evaluate("() => window.__cryptoResults")
    finally:
        page.close()
    summary["pageErrors"] = page_errors
    return summary


def _failures(part: Mapping[str, Any]) -> str:
    lines = [m for m in part.get("messages", []) if not m.startswith("ok:")]
    lines += part.get("errors", [])
    return "\n".join(lines)


def test_page_ran_without_errors(results: dict[str, Any]) -> None:
    assert results.get("error") is None, results.get("error")
    assert results["pageErrors"] == []


def test_rfc9180_vector(results: dict[str, Any]) -> None:
    rfc = results["rfc9180"]
    assert rfc["pass"], _failures(rfc)
    checked = "\n".join(rfc["messages"])
    for part in ("shared_secret", "key_schedule_context", "exporter_secret", "open seq 256"):
        assert part in checked


def test_commitment_vector(results: dict[str, Any]) -> None:
    commitment = results["commitment"]
    assert commitment["pass"], _failures(commitment)
    assert sum(m.startswith("ok: commitment ") for m in commitment["messages"]) == 3


def test_activation_vector_both_ways(results: dict[str, Any]) -> None:
    """The browser checks Python's activation vector; Python opens the browser's box."""
    from chat_server.crypto.activation import derive, open_box
    from chat_server.crypto.encoding import b64decode

    activation = results["activation"]
    assert activation["pass"], _failures(activation)
    assert sum(m.startswith("ok: box sealed again ") for m in activation["messages"]) == 3
    assert sum(m.startswith("ok: structure key id in the box") for m in activation["messages"]) == 1
    produced = activation["produced"]
    keys = open_box(derive(produced["code"]).box_key, produced["conversation"], produced["box"])
    assert keys == {k["epoch"]: b64decode(k["key"]) for k in produced["keys"]}


def test_structure_key_vector_both_ways(results: dict[str, Any]) -> None:
    """The browser makes Python's structure-key vector again (the endorsement's statement
    and signature included) and opens it; Python checks and opens a key, grant,
    structure envelope and endorsement made in the browser."""
    from chat_server.crypto.encoding import b64decode
    from chat_server.crypto.envelope import Envelope
    from chat_server.crypto.keys import DeviceKeys
    from chat_server.crypto.structure_key import (
        StructureGrant,
        open_grant,
        open_structure_envelope,
        structure_key_id,
        verify_endorsement,
        verify_structure_key,
    )

    structure = results["structure"]
    assert structure["pass"], _failures(structure)
    assert sum(m.startswith("ok: ") for m in structure["messages"]) == 17
    made = structure["produced"]
    pub = b64decode(made["public_key"])
    creator_sig = b64decode(made["creator_sig_pub"])
    assert structure_key_id(pub) == made["key_id"]
    assert verify_structure_key(
        creator_sig, made["structure"], pub, "dev-b-sup", b64decode(made["key_sig"])
    )
    recipient = DeviceKeys.from_private_bytes(
        b64decode(made["recipient"]["dh_priv"]), b64decode(made["recipient"]["sig_priv"])
    )
    private = open_grant(StructureGrant.from_json(made["grant"]), recipient, creator_sig, pub)
    env = Envelope.from_json(made["envelope"])
    assert open_structure_envelope(env, private, creator_sig) == b64decode(made["epoch_key"])
    e = made["endorsement"]
    assert b64decode(e["sig_pub"]) == recipient.public.sig_pub
    args = (made["structure"], made["key_id"], pub, e["device_id"], b64decode(e["sig"]))
    assert verify_endorsement(recipient.public.sig_pub, *args)
    assert not verify_endorsement(creator_sig, *args)


def test_self_checks(results: dict[str, Any]) -> None:
    assert results["self"]["pass"], _failures(results["self"])


def test_python_vectors_check_in_browser(
    results: dict[str, Any], python_vectors_missing: str | None
) -> None:
    if python_vectors_missing is not None:
        pytest.skip(python_vectors_missing)
    peer = results["peer"]
    assert peer["producer"] == "python"
    assert peer["pass"], _failures(peer)
    assert all(count > 0 for count in peer["counts"].values()), peer["counts"]


def test_browser_vectors_are_written(results: dict[str, Any]) -> None:
    check = results["browserVectorsCheck"]
    assert check["reproducible"], "buildVectors with a seed must give the same document"
    assert check["pass"], _failures(check)
    doc = results["browserVectors"]
    assert doc["producer"] == "browser"
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    # Rewrite only on change, so a checkout stays clean when nothing moved.
    if not BROWSER_VECTORS.is_file() or BROWSER_VECTORS.read_text("utf-8") != text:
        BROWSER_VECTORS.write_text(text, "utf-8")
    assert json.loads(BROWSER_VECTORS.read_text("utf-8")) == doc


def test_python_checks_browser_vectors(results: dict[str, Any]) -> None:
    if importlib.util.find_spec(PYTHON_VECTORS_MODULE) is None:
        pytest.skip(f"{PYTHON_VECTORS_MODULE} does not exist yet")
    module = importlib.import_module(PYTHON_VECTORS_MODULE)
    module.check_vectors(results["browserVectors"])  # raises VectorMismatch on any failure
