"""Cross-implementation vectors: ours build and check, the files on disk check."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.errors import VectorMismatch
from chat_server.crypto.vectors import build_vectors, check_vectors, main

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / name).read_text("utf-8"))
    return doc


def test_built_vectors_check() -> None:
    doc = build_vectors()
    check_vectors(doc)
    for section in ("devices", "envelopes", "messages", "commitments", "safety_numbers", "backups"):
        assert len(doc[section]) >= 2
    assert any("é" in m["plaintext"] for m in doc["messages"])
    assert {m["v"] for m in doc["messages"]} == {1, 2}


def test_build_is_deterministic() -> None:
    assert build_vectors() == build_vectors()


def test_python_file_checks_and_is_up_to_date() -> None:
    doc = _load("python.json")
    assert doc["producer"] == "python"
    check_vectors(doc)
    assert doc == build_vectors(), "regenerate: python -m chat_server.crypto.vectors --write ..."


def test_browser_file_checks() -> None:
    if not (VECTORS / "browser.json").exists():
        pytest.skip("tests/vectors/browser.json not written yet by the browser implementation")
    doc = _load("browser.json")
    assert doc["producer"] == "browser"
    check_vectors(doc)


def _flip(text: str) -> str:
    data = b64decode(text)
    return b64encode(bytes([data[0] ^ 1]) + data[1:])


MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "producer": lambda d: d.update(producer="someone"),
    "empty section": lambda d: d.update(messages=[]),
    "registration sig": lambda d: d["devices"][1].update(
        registration_sig=_flip(d["devices"][1]["registration_sig"])
    ),
    "dh_pub mismatch": lambda d: d["devices"][0].update(dh_pub=d["devices"][1]["dh_pub"]),
    "envelope ct": lambda d: d["envelopes"][2].update(ct=_flip(d["envelopes"][2]["ct"])),
    "envelope epoch": lambda d: d["envelopes"][0].update(epoch=d["envelopes"][0]["epoch"] + 1),
    "envelope key": lambda d: d["envelopes"][1].update(
        epoch_key=_flip(d["envelopes"][1]["epoch_key"])
    ),
    "commitment key": lambda d: d["commitments"][0].update(
        epoch_key=_flip(d["commitments"][0]["epoch_key"])
    ),
    "commitment sig": lambda d: d["commitments"][1].update(sig=_flip(d["commitments"][1]["sig"])),
    "commitment epoch": lambda d: d["commitments"][2].update(epoch=7),
    "commitment creator": lambda d: d["commitments"][3].update(creator_device="dev-j2"),
    "unknown device": lambda d: d["envelopes"][0].update(sender_device="nobody"),
    "message ciphertext": lambda d: d["messages"][1].update(
        ciphertext=_flip(d["messages"][1]["ciphertext"])
    ),
    "message plaintext": lambda d: d["messages"][0].update(plaintext="autre chose"),
    "message sig": lambda d: d["messages"][3].update(sig=_flip(d["messages"][3]["sig"])),
    "message meta": lambda d: d["messages"][3]["meta"].update(event="cancelled"),
    "message meta canonical": lambda d: d["messages"][3].update(
        meta_canonical=d["messages"][3]["meta_canonical"].replace(":", ": ")
    ),
    "message version": lambda d: d["messages"][0].update(v=2, meta={}, meta_canonical="{}"),
    "message unknown version": lambda d: d["messages"][2].update(v=3),
    "no v2 meta": lambda d: d.update(messages=d["messages"][:3]),
    "message padding": lambda d: d["messages"][0].update(nonce=d["messages"][0]["nonce"] + "="),
    "safety number": lambda d: d["safety_numbers"][0].update(number="0" * 30),
    "backup plaintext": lambda d: d["backups"][0].update(plaintext="{}"),
    "backup blob": lambda d: d["backups"][1]["backup"].update(
        blob=_flip(d["backups"][1]["backup"]["blob"])
    ),
    "backup user": lambda d: d["backups"][0].update(user_id="conseiller-42"),
    "recovery key form": lambda d: d["backups"][0].update(
        recovery_key=d["backups"][0]["recovery_key"].lower()
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_check_refuses_altered_vectors(name: str) -> None:
    doc = copy.deepcopy(build_vectors())
    MUTATIONS[name](doc)
    with pytest.raises(VectorMismatch):
        check_vectors(doc)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "v.json"
    assert main(["--write", str(path)]) == 0
    assert main(["--check", str(path)]) == 0
    doc = json.loads(path.read_text("utf-8"))
    doc["safety_numbers"][0]["number"] = "1" * 30
    path.write_text(json.dumps(doc), "utf-8")
    assert main(["--check", str(path)]) == 1
    assert "safety_numbers[0]" in capsys.readouterr().err
