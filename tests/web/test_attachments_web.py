"""Attachments in Chromium, two people, end to end (E2EE on, real server, GridFS on the
embedded engine): a PDF from the phone opened in the console, a photo from the console
previewed and shown in the app, a photo from the phone's camera input, upload progress,
and files refused on the device (wrong type by content, too large). axe-core clean."""

from __future__ import annotations

import base64
import json
import struct
import threading
import urllib.request
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import (
    FilePayload,
    Locator,
    Page,
    Route,
    expect,
)

from chat_server.crypto.attachment import AttachmentBody, decrypt_blob
from tests.web.harness import (
    AXE,
    DemoPair,
    chromium,
    demo_pair,
    run_server,
    save_screenshot,
    serious,
)

pytestmark = pytest.mark.browser

YOUNG = "Inès Moreau"
REPO = Path(__file__).resolve().parents[2]
PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% attestation de stage\n"
    + bytes(range(256)) * 40
    + b"\n%%EOF\n"
)

expect.set_options(timeout=30_000)


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG (so that the browser can decode and re-encode it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    raw = row * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _axe(page: Page) -> list[dict[str, object]]:
    page.evaluate(AXE.read_text("utf-8"))
    found: list[dict[str, object]] = page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => n.target.join(" ")),
            }));
        }"""
    )
    return serious(found)


def _record_uploads(page: Page) -> None:
    """Remember every upload progress bar that appears (they can be brief)."""
    page.evaluate(
        """() => {
            window.__uploadBars = [];
            new MutationObserver(() => {
                for (const bar of document.querySelectorAll("progress[id^=up-]")) {
                    if (!window.__uploadBars.includes(bar.id)) window.__uploadBars.push(bar.id);
                }
            }).observe(document.body, { subtree: true, childList: true });
        }"""
    )


def _file(name: str, mime: str, data: bytes) -> FilePayload:
    return {"name": name, "mimeType": mime, "buffer": data}


def _attachment(page: Page, name: str) -> Locator:
    return page.locator(".msg-attachment", has=page.locator(".attachment-name", has_text=name))


EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


class _Scanner(BaseHTTPRequestHandler):
    """The structure's scanning service, written here: fetch with the grant, decrypt,
    check the digest, look for the EICAR test string. Called by the browser (CORS)."""

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "POST")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self._cors()
        self.end_headers()

    def do_POST(self) -> None:
        job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert job["url"].startswith("http://127.0.0.1:")
        with urllib.request.urlopen(job["url"], timeout=30) as r:  # noqa: S310 (loopback)
            blob = r.read()
        data = decrypt_blob(_unb64(job["key"]), [blob])
        AttachmentBody(b"\0" * 32, "", "", job["size"], _unb64(job["sha256"])).check(data)
        verdict = (
            {"status": "infected", "threat": "EICAR-Test-File"}
            if EICAR in data
            else {"status": "clean"}
        )
        out = json.dumps(verdict).encode()
        self.send_response(200)
        self._cors()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:
        return


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def scanner() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scanner)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/scan"
    finally:
        httpd.shutdown()
        thread.join(10)
        httpd.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, scanner: str) -> Iterator[DemoPair]:
    data_dir: Path = tmp_path_factory.mktemp("attachments-server")
    extra = {"ATTACHMENT_SCAN_URL": scanner}
    with (
        run_server(data_dir, env_extra=extra) as server,
        chromium() as browser,
        demo_pair(server, browser, YOUNG) as w,
    ):
        yield w


def test_a_pdf_from_the_phone_is_downloaded_in_the_console(world: DemoPair) -> None:
    console, app = world.console, world.app
    _record_uploads(app)
    app.locator("#attach-file").set_input_files(
        files=[_file("attestation-stage.pdf", "application/pdf", PDF)]
    )
    mine = app.locator(".msg-attachment", has_text="attestation-stage.pdf")
    expect(mine).to_be_visible()
    expect(mine).to_contain_text("PDF")
    assert app.evaluate("() => window.__uploadBars.length") >= 1
    bubble = console.locator(".msg-attachment", has_text="attestation-stage.pdf")
    expect(bubble).to_contain_text("PDF · 10 ko")
    with console.expect_download() as got:
        bubble.get_by_role("button", name="Télécharger").click()
    download = got.value
    assert download.suggested_filename == "attestation-stage.pdf"
    path = download.path()
    assert path is not None
    assert Path(path).read_bytes() == PDF


def test_a_pdf_from_the_console_is_opened_and_downloaded_on_the_phone(world: DemoPair) -> None:
    console, app = world.console, world.app
    console.locator("#attach-file").set_input_files(
        files=[_file("offre-alternance.pdf", "application/pdf", PDF)]
    )
    expect(console.locator(".msg-attachment", has_text="offre-alternance.pdf")).to_be_visible()
    bubble = app.locator(".msg-attachment", has_text="offre-alternance.pdf")
    expect(bubble).to_contain_text("PDF · 10 ko")
    with app.expect_download() as got:
        bubble.get_by_role("button", name="Télécharger").click()
    path = got.value.path()
    assert path is not None
    assert Path(path).read_bytes() == PDF
    with app.context.expect_page() as opened:
        bubble.get_by_role("button", name="Ouvrir").click()
    assert opened.value.url.startswith("blob:")
    opened.value.close()


def test_a_photo_from_the_console_is_previewed_and_shown_in_the_app(world: DemoPair) -> None:
    console, app = world.console, world.app
    photo = png(320, 200, (200, 60, 40))
    console.locator("#attach-file").set_input_files(
        files=[_file("courrier-caf.png", "image/png", photo)]
    )
    bubble = app.locator(".msg-attachment", has_text="courrier-caf.png")
    thumb = bubble.locator("img.attachment-thumb")
    expect(thumb).to_be_visible()
    expect(thumb).to_have_attribute("alt", "Aperçu de courrier-caf.png")
    bubble.get_by_role("button", name="Afficher l'image").click()
    full = bubble.locator("img.attachment-full")
    expect(full).to_be_visible()
    width = full.evaluate("(img) => img.naturalWidth")
    assert width == 320
    assert _axe(app) == []
    assert _axe(console) == []
    save_screenshot(app, "attachments-app.png", "attachments-app.png")
    save_screenshot(console, "attachments-console.png", "attachments-console.png")


def test_a_photo_loses_its_exif_location_before_it_leaves_the_phone(world: DemoPair) -> None:
    console, app = world.console, world.app
    plain: list[int] = app.evaluate(
        """async () => {
            const canvas = new OffscreenCanvas(64, 48);
            const ctx = canvas.getContext("2d");
            ctx.fillStyle = "#3a7"; ctx.fillRect(0, 0, 64, 48);
            const blob = await canvas.convertToBlob({ type: "image/jpeg" });
            return [...new Uint8Array(await blob.arrayBuffer())];
        }"""
    )
    gps = b"Exif\x00\x00GPS-LOCATION-48.8566N-2.3522E"
    app1 = b"\xff\xe1" + struct.pack(">H", len(gps) + 2) + gps
    photo = bytes(plain[:2]) + app1 + bytes(plain[2:])
    app.locator("#attach-camera").set_input_files(
        files=[_file("IMG_0042.jpg", "image/jpeg", photo)]
    )
    bubble = console.locator(".msg-attachment", has_text="IMG_0042.jpg")
    expect(bubble).to_contain_text("JPEG")
    with console.expect_download() as got:
        bubble.get_by_role("button", name="Télécharger").click()
    path = got.value.path()
    assert path is not None
    received = Path(path).read_bytes()
    assert received[:3] == b"\xff\xd8\xff"
    assert b"GPS-LOCATION" not in received
    assert b"Exif" not in received


def test_a_photo_from_the_phone_camera(world: DemoPair) -> None:
    console, app = world.console, world.app
    expect(app.locator("#attach-camera")).to_have_attribute("capture", "environment")
    app.locator("#attach-camera").set_input_files(
        files=[_file("photo.png", "image/png", png(64, 48, (0, 90, 200)))]
    )
    bubble = console.locator(".msg-attachment", has_text="photo.png")
    expect(bubble.locator("img.attachment-thumb")).to_be_visible()


def test_the_young_person_has_a_file_scanned(world: DemoPair) -> None:
    console, app = world.console, world.app
    console.locator("#attach-file").set_input_files(
        files=[_file("facture.pdf", "application/pdf", b"%PDF-1.4\n" + EICAR + b"\n%%EOF")]
    )
    bubble = app.locator(".msg-attachment", has_text="facture.pdf")
    bubble.get_by_role("button", name="Faire analyser").click()
    expect(bubble.locator(".attachment-status")).to_have_text(
        "Attention, menace détectée : EICAR-Test-File. N'ouvrez pas ce fichier."
    )
    # The sender's own copy has no scan button; a clean file is reported clean.
    expect(
        console.locator(".msg-attachment", has_text="facture.pdf").get_by_role(
            "button", name="Faire analyser"
        )
    ).to_have_count(0)
    console.locator("#attach-file").set_input_files(
        files=[_file("contrat.pdf", "application/pdf", b"%PDF-1.4\ncontrat\n%%EOF")]
    )
    clean = app.locator(".msg-attachment", has_text="contrat.pdf")
    clean.get_by_role("button", name="Faire analyser").click()
    expect(clean.locator(".attachment-status")).to_have_text("Analyse : aucune menace détectée.")
    assert _axe(app) == []


def test_a_refused_upload_is_retried_from_the_outbox(world: DemoPair) -> None:
    console, app = world.console, world.app

    def refuse(route: Route) -> None:
        body = {"error": {"code": "attachment_rate_limited", "message": "retry later"}}
        route.fulfill(status=429, content_type="application/json", body=json.dumps(body))

    app.route("**/api/conversations/*/attachments", refuse)
    app.locator("#attach-file").set_input_files(
        files=[_file("releve-notes.pdf", "application/pdf", b"%PDF-1.4\nnotes\n%%EOF")]
    )
    pending = app.locator(".msg-pending", has_text="releve-notes.pdf")
    expect(pending).to_contain_text("Échec de l'envoi")
    expect(pending).to_contain_text("Trop d'envois de fichiers : réessayez dans quelques minutes.")
    app.unroute("**/api/conversations/*/attachments", refuse)
    pending.get_by_role("button", name="Réessayer").click()
    expect(console.locator(".msg-attachment", has_text="releve-notes.pdf")).to_be_visible()
    expect(app.locator(".msg-pending", has_text="releve-notes.pdf")).to_have_count(0)


def test_wrong_type_and_too_large_are_refused_on_the_device(world: DemoPair) -> None:
    app = world.app
    before = app.locator(".msg-attachment").count()
    app.locator("#attach-file").set_input_files(
        files=[_file("cv.pdf", "application/pdf", b"PK\x03\x04 zip")]
    )
    expect(app.locator("#attach-error")).to_have_text(
        "Ce type de fichier n'est pas accepté : PDF, PNG, JPEG ou WEBP uniquement."
    )
    big = b"%PDF-1.4\n" + b"0" * (5 * 1024 * 1024)
    app.locator("#attach-file").set_input_files(files=[_file("gros.pdf", "application/pdf", big)])
    expect(app.locator("#attach-error")).to_have_text("Fichier trop volumineux : 5 Mo au maximum.")
    assert app.locator(".msg-attachment").count() == before
    assert world.problems == []


def test_the_browser_writes_and_reads_the_python_vectors(world: DemoPair) -> None:
    """web_client/shared/attachment.js against tests/crypto/attachment-v1.json (which the
    Python implementation checks in tests/crypto/test_attachment.py)."""
    vectors = json.loads((REPO / "tests" / "crypto" / "attachment-v1.json").read_text())
    report: dict[str, object] = world.app.evaluate(
        """async (cases) => {
            const A = await import("/shared/attachment.js");
            const hex = (b) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
            const out = { cases: [], tampered: null, truncated: null, reordered: null };
            for (const c of cases) {
                const key = new Uint8Array(c.key.match(/../g).map((x) => parseInt(x, 16)));
                const plain = new Uint8Array(c.size);
                for (let i = 0; i < c.size; i++) plain[i] = (i * 7 + c.size) % 251;
                const blob = await A.encryptBlob(key, plain);
                const back = await A.decryptBlob(key, blob);
                out.cases.push({
                    size: c.size,
                    blob: hex(await A.sha256(blob)) === c.blob_sha256,
                    length: blob.length === c.blob_size && A.ciphertextSize(c.size) === c.blob_size,
                    back: hex(await A.sha256(back)) === c.plaintext_sha256,
                });
            }
            const key = A.newFileKey();
            const plain = new Uint8Array(65536 * 2 + 7).map((_, i) => (i * 31) % 256);
            const blob = await A.encryptBlob(key, plain);
            const code = async (bytes) => {
                try { await A.decryptBlob(key, bytes); return "ok"; } catch (e) { return e.code; }
            };
            const bad = blob.slice(); bad[8 + 65552 + 3] ^= 1;
            out.tampered = await code(bad);
            out.truncated = await code(blob.slice(0, 8 + 2 * 65552));
            const swapped = new Uint8Array(blob.length);
            swapped.set(blob.subarray(0, 8));
            swapped.set(blob.subarray(8 + 65552, 8 + 2 * 65552), 8);
            swapped.set(blob.subarray(8, 8 + 65552), 8 + 65552);
            swapped.set(blob.subarray(8 + 2 * 65552), 8 + 2 * 65552);
            out.reordered = await code(swapped);
            return out;
        }""",
        vectors["cases"],
    )
    cases = report["cases"]
    assert isinstance(cases, list)
    assert len(cases) == len(vectors["cases"])
    for case in cases:
        assert case == {"size": case["size"], "blob": True, "length": True, "back": True}
    assert (report["tampered"], report["truncated"], report["reordered"]) == (
        "tampered",
        "truncated",
        "tampered",
    )


def test_the_young_persons_export_names_every_attachment(world: DemoPair) -> None:
    app = world.app
    app.get_by_role("button", name="Menu").click()
    app.get_by_role("button", name="Exporter ma conversation").click()
    view = app.locator("#export-view")
    expect(view).to_be_visible(timeout=60_000)
    expect(view.locator(".export-attachment", has_text="attestation-stage.pdf")).to_be_visible()
    with app.expect_download() as info:
        view.get_by_role("button", name="Télécharger (JSON)").click()
    path = info.value.path()
    assert path is not None
    data = json.loads(Path(path).read_text("utf-8"))
    named = {m["attachment"] for m in data["messages"] if m["type"] == "attachment"}
    assert {"attestation-stage.pdf", "courrier-caf.png", "offre-alternance.pdf"} <= named
    view.get_by_role("button", name="Fermer").click()
    expect(view).to_be_hidden()
