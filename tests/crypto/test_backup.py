"""Recovery keys and encrypted key backups."""

from __future__ import annotations

import dataclasses

import pytest

from chat_server.crypto.backup import (
    Backup,
    BackupContents,
    DeviceSecret,
    EpochKeyEntry,
    format_recovery_key,
    generate_recovery_key,
    open_backup,
    parse_recovery_key,
    seal_backup,
)
from chat_server.crypto.encoding import b64encode
from chat_server.crypto.errors import DecryptError, MalformedInput
from chat_server.crypto.keys import DeviceKeys

DEVICE = DeviceKeys.generate()
CONTENTS = BackupContents(
    user_id="jeune-amélie",
    devices=(DeviceSecret("dev-j1", DEVICE.dh_priv, DEVICE.sig_priv),),
    epoch_keys=(EpochKeyEntry("conv-1", 1, b"k" * 32), EpochKeyEntry("conv-2", 0, b"q" * 32)),
)


def test_recovery_key_known_answers() -> None:
    one = format_recovery_key(b"\x00" * 31 + b"\x01")
    assert one == "-".join(["0000"] * 12 + ["000G"])
    assert format_recovery_key(b"\xff" * 32) == "-".join(["ZZZZ"] * 12 + ["ZZZG"])
    assert parse_recovery_key(one) == b"\x00" * 31 + b"\x01"


def test_recovery_key_round_trip_and_shape() -> None:
    key = generate_recovery_key()
    text = format_recovery_key(key)
    groups = text.split("-")
    assert [len(g) for g in groups] == [4] * 13
    assert text == text.upper()
    assert parse_recovery_key(text) == key


def test_recovery_key_parsing_is_tolerant() -> None:
    key = generate_recovery_key()
    text = format_recovery_key(key)
    assert parse_recovery_key(text.lower()) == key
    assert parse_recovery_key(text.replace("-", "")) == key
    assert parse_recovery_key(" " + text.replace("-", " - ") + "\n") == key
    confusable = text.replace("0", "o").replace("1", "l")
    assert parse_recovery_key(confusable) == key


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0" * 51,
        "0" * 53,
        "0" * 51 + "U",
        "0" * 51 + "1",  # padding bits set: not the canonical last symbol
        "0" * 50 + "!0",
    ],
)
def test_malformed_recovery_keys_are_refused(bad: str) -> None:
    with pytest.raises(MalformedInput):
        parse_recovery_key(bad)


def test_seal_open_round_trip() -> None:
    recovery_key = generate_recovery_key()
    backup = seal_backup(CONTENTS, recovery_key)
    assert len(backup.nonce) == 12
    doc = backup.to_json()
    assert doc["v"] == 1
    assert Backup.from_json(doc) == backup
    assert open_backup(Backup.from_json(doc), recovery_key, "jeune-amélie") == CONTENTS
    restored = open_backup(backup, recovery_key, "jeune-amélie").devices[0]
    assert DeviceKeys.from_private_bytes(restored.dh_priv, restored.sig_priv).public == (
        DEVICE.public
    )


def test_plaintext_shape() -> None:
    plaintext = CONTENTS.to_plaintext()
    assert plaintext.startswith(b'{"v":1,"user_id":"jeune-am\xc3\xa9lie","devices":[')
    assert b64encode(DEVICE.dh_priv).encode() in plaintext
    assert BackupContents.from_plaintext(plaintext) == CONTENTS


def test_wrong_recovery_key_is_refused() -> None:
    backup = seal_backup(CONTENTS, generate_recovery_key())
    with pytest.raises(DecryptError):
        open_backup(backup, generate_recovery_key(), "jeune-amélie")


def test_wrong_user_is_refused() -> None:
    recovery_key = generate_recovery_key()
    backup = seal_backup(CONTENTS, recovery_key)
    with pytest.raises(DecryptError):
        open_backup(backup, recovery_key, "someone-else")


def test_tampered_blob_is_refused() -> None:
    recovery_key = generate_recovery_key()
    backup = seal_backup(CONTENTS, recovery_key)
    tampered = dataclasses.replace(backup, blob=backup.blob[:-1] + bytes([backup.blob[-1] ^ 1]))
    with pytest.raises(DecryptError):
        open_backup(tampered, recovery_key, "jeune-amélie")


@pytest.mark.parametrize(
    "doc",
    [
        {"v": 2, "nonce": "AAAAAAAAAAAAAAAA", "blob": "AA"},
        {"v": 1, "nonce": "AAAA", "blob": "AA"},
        {"v": 1, "nonce": "AAAAAAAAAAAAAAAA", "blob": "A=="},
        {"v": 1, "nonce": "AAAAAAAAAAAAAAAA"},
    ],
)
def test_malformed_backup_json_is_refused(doc: dict[str, object]) -> None:
    with pytest.raises(MalformedInput):
        Backup.from_json(doc)


@pytest.mark.parametrize(
    "plaintext",
    [
        b"not json",
        b'{"v":2,"user_id":"u","devices":[],"epoch_keys":[]}',
        b'{"v":1,"user_id":"u","devices":{},"epoch_keys":[]}',
        b'{"v":1,"user_id":"u","devices":[],"epoch_keys":[{"conversation":"c","epoch":-1,'
        b'"key":"AAAA"}]}',
        b'{"v":1,"user_id":"u","devices":[{"device_id":"d","dh_priv":"AA","sig_priv":"AA"}],'
        b'"epoch_keys":[]}',
    ],
)
def test_malformed_backup_plaintext_is_refused(plaintext: bytes) -> None:
    with pytest.raises(MalformedInput):
        BackupContents.from_plaintext(plaintext)
