"""The activation code's proof and box (docs/crypto-format.md, "Activation").

`activation-v1.json` is the fixed vector both implementations check (the
browser in tests/web/test_crypto_browser.py, which also seals a box that the
Python side opens there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chat_server.crypto.activation import (
    CODE_LEN,
    ITERATIONS,
    derive,
    is_client_code,
    new_code,
    open_box,
    open_box_contents,
    seal_box,
)
from chat_server.crypto.encoding import b64decode
from chat_server.crypto.errors import DecryptError, MalformedInput

VECTOR = Path(__file__).with_name("activation-v1.json")


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(VECTOR.read_text("utf-8"))
    return doc


def test_vector() -> None:
    doc = _doc()
    assert doc["iterations"] == ITERATIONS
    for case in doc["cases"]:
        made = derive(case["code"])
        assert made.proof_text == case["proof"]
        assert made.box_key == b64decode(case["box_key"])
        keys = {k["epoch"]: b64decode(k["key"]) for k in case["keys"]}
        assert open_box(made.box_key, case["conversation"], case["box"]) == keys
        structure_key = case.get("structure_key")
        assert open_box_contents(made.box_key, case["conversation"], case["box"]) == (
            keys,
            structure_key,
        )
        sealed = seal_box(
            made.box_key, case["conversation"], keys, b64decode(case["nonce"]), structure_key
        )
        assert sealed == case["box"]
    assert sum("structure_key" in case for case in doc["cases"]) == 1


def test_codes() -> None:
    code = new_code()
    assert len(code) == CODE_LEN + 3
    assert is_client_code(code)
    assert is_client_code(code.lower().replace("-", " "))
    assert not is_client_code("ABCD-EFGH-JKLM")  # a server-made code: sent as is
    with pytest.raises(MalformedInput):
        derive("ABCD-EFGH-JKLM")
    with pytest.raises(MalformedInput):
        derive("ABCD-EFGH-JKLM-NPQ1")  # 1 is not in the alphabet


def test_box_is_bound_to_code_and_conversation() -> None:
    case = _doc()["cases"][0]
    made = derive(case["code"])
    with pytest.raises(DecryptError):
        open_box(made.box_key, "another-conversation", case["box"])
    with pytest.raises(DecryptError):
        open_box(bytes(32), case["conversation"], case["box"])
    forged = dict(case["box"], box=case["box"]["box"][:-2] + "AA")
    with pytest.raises(DecryptError):
        open_box(made.box_key, case["conversation"], forged)
