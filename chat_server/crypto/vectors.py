"""Cross-implementation test vectors (tests/vectors/python.json, tests/vectors/browser.json).

`build_vectors()` makes a vector document in the shape of
docs/crypto-format.md: a few devices, envelopes, messages (French text with
non-ASCII characters), safety numbers and backups. Every random input is
derived from a fixed seed, so the output is the same on every run.

`check_vectors(doc)` checks a document made by either implementation and
raises `VectorMismatch` naming the first entry that does not check: it
verifies every signature, opens every envelope with the recipient's private
key, decrypts every message, recomputes and checks every epoch key
commitment, recomputes every safety number and opens every backup.

Command line: `python -m chat_server.crypto.vectors --write PATH` writes the
Python vectors; `--check PATH` checks a file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chat_server.crypto import hpke
from chat_server.crypto.backup import (
    Backup,
    BackupContents,
    DeviceSecret,
    EpochKeyEntry,
    format_recovery_key,
    open_backup,
    open_backup_plaintext,
    parse_recovery_key,
    seal_backup,
)
from chat_server.crypto.commitment import (
    epoch_commitment,
    sign_commitment,
    verify_commitment_signature,
)
from chat_server.crypto.encoding import MAX_EPOCH, b64encode, bytes_field, epoch_field, str_field
from chat_server.crypto.envelope import Envelope, open_envelope, wrap_epoch_key
from chat_server.crypto.errors import CryptoError, VectorMismatch
from chat_server.crypto.keys import (
    KEY_LEN,
    SIG_LEN,
    DeviceKeys,
    DevicePublicKeys,
    sign_registration,
    verify_registration,
)
from chat_server.crypto.message import (
    SUPPORTED_VERSIONS,
    decrypt_message,
    encrypt_message,
    text_plaintext,
)
from chat_server.crypto.meta import canonical_meta
from chat_server.crypto.safety import safety_number

__all__ = ["build_vectors", "check_vectors", "main"]

_SEED = b"cejchat/vectors/python/v1"
_PRODUCERS = ("python", "browser")


def _det(label: str, length: int = 32) -> bytes:
    """Deterministic pseudo-random bytes for `label` (test vectors only)."""
    return hashlib.sha256(_SEED + b"/" + label.encode("utf-8")).digest()[:length]


@dataclass(frozen=True)
class _Device:
    user_id: str
    device_id: str
    keys: DeviceKeys


def _json_dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def build_vectors(producer: str = "python") -> dict[str, Any]:
    """Build a vector document (deterministic) labelled with `producer`."""
    devices = {
        device_id: _Device(
            user_id,
            device_id,
            DeviceKeys.from_private_bytes(_det(f"dh/{device_id}"), _det(f"sig/{device_id}")),
        )
        for user_id, device_id in [
            ("conseiller-42", "dev-c1"),
            ("jeune-amélie", "dev-j1"),
            ("jeune-amélie", "dev-j2"),
            ("superviseur-1", "dev-s1"),
        ]
    }
    epoch_keys = {
        ("conv-1", 1): _det("epoch/conv-1/1"),
        ("conv-1", 2): _det("epoch/conv-1/2"),
        ("conv-2", 0): _det("epoch/conv-2/0"),
        ("conv-2", MAX_EPOCH): _det(f"epoch/conv-2/{MAX_EPOCH}"),
    }

    def envelope(sender: str, recipient: str, conversation: str, epoch: int) -> dict[str, Any]:
        label = f"eph/{conversation}/{epoch}/{sender}/{recipient}"
        env = wrap_epoch_key(
            epoch_keys[conversation, epoch],
            sender=devices[sender].keys,
            sender_device=sender,
            recipient_device=recipient,
            recipient_dh_pub=devices[recipient].keys.public.dh_pub,
            conversation=conversation,
            epoch=epoch,
            ephemeral=hpke.derive_key_pair(_det(label)),
        )
        return {
            "recipient_device": recipient,
            "sender_device": sender,
            "conversation": conversation,
            "epoch": epoch,
            "epoch_key": b64encode(epoch_keys[conversation, epoch]),
            "enc": b64encode(env.enc),
            "ct": b64encode(env.ct),
            "sig": b64encode(env.sig),
        }

    def message(spec: _MessageSpec) -> dict[str, Any]:
        sender, conversation, epoch, client_id, msg_type, pt = spec[:6]
        version, meta = spec[6], spec[7]
        encrypted = encrypt_message(
            epoch_keys[conversation, epoch],
            devices[sender].keys,
            conversation=conversation,
            epoch=epoch,
            sender_device=sender,
            client_id=client_id,
            msg_type=msg_type,
            plaintext=pt.encode("utf-8"),
            meta=meta,
            nonce=_det(f"nonce/{client_id}", 12),
            version=version,
        )
        extra: dict[str, Any] = {}
        if version >= 2:
            extra = {"meta": meta, "meta_canonical": canonical_meta(meta).decode("utf-8")}
        return {
            "v": version,
            **extra,
            "conversation": conversation,
            "epoch": epoch,
            "epoch_key": b64encode(epoch_keys[conversation, epoch]),
            "sender_device": sender,
            "client_id": client_id,
            "msg_type": msg_type,
            "plaintext": pt,
            "nonce": b64encode(encrypted.nonce),
            "ciphertext": b64encode(encrypted.ciphertext),
            "sig": b64encode(encrypted.sig),
        }

    def commitment(creator: str, conversation: str, epoch: int) -> dict[str, Any]:
        key = epoch_keys[conversation, epoch]
        value = epoch_commitment(key, conversation, epoch)
        return {
            "conversation": conversation,
            "epoch": epoch,
            "epoch_key": b64encode(key),
            "creator_device": creator,
            "commitment": b64encode(value),
            "sig": b64encode(
                sign_commitment(devices[creator].keys, conversation, epoch, creator, value)
            ),
        }

    def member(user_id: str, device_ids: Sequence[str]) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "sig_pubs": [b64encode(devices[d].keys.public.sig_pub) for d in device_ids],
        }

    def safety(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        number = safety_number(
            a["user_id"],
            [_b64(k) for k in a["sig_pubs"]],
            b["user_id"],
            [_b64(k) for k in b["sig_pubs"]],
        )
        return {"a": a, "b": b, "number": number}

    def backup(user_id: str, conversations: Sequence[tuple[str, int]]) -> dict[str, Any]:
        contents = BackupContents(
            user_id=user_id,
            devices=tuple(
                DeviceSecret(d.device_id, d.keys.dh_priv, d.keys.sig_priv)
                for d in devices.values()
                if d.user_id == user_id
            ),
            epoch_keys=tuple(EpochKeyEntry(c, e, epoch_keys[c, e]) for c, e in conversations),
        )
        recovery_key = _det(f"recovery/{user_id}")
        sealed = seal_backup(contents, recovery_key, nonce=_det(f"backup-nonce/{user_id}", 12))
        return {
            "user_id": user_id,
            "recovery_key": format_recovery_key(recovery_key),
            "backup": sealed.to_json(),
            "plaintext": contents.to_plaintext().decode("utf-8"),
        }

    return {
        "producer": producer,
        "devices": [
            {
                "user_id": d.user_id,
                "device_id": d.device_id,
                "dh_priv": b64encode(d.keys.dh_priv),
                "dh_pub": b64encode(d.keys.public.dh_pub),
                "sig_priv": b64encode(d.keys.sig_priv),
                "sig_pub": b64encode(d.keys.public.sig_pub),
                "registration_sig": b64encode(sign_registration(d.keys, d.user_id, d.device_id)),
            }
            for d in devices.values()
        ],
        "envelopes": [
            envelope("dev-c1", "dev-c1", "conv-1", 1),
            envelope("dev-c1", "dev-j1", "conv-1", 1),
            envelope("dev-j1", "dev-j2", "conv-1", 2),
            envelope("dev-c1", "dev-s1", "conv-1", 2),
            envelope("dev-s1", "dev-c1", "conv-2", 0),
            envelope("dev-c1", "dev-j2", "conv-2", MAX_EPOCH),
        ],
        "messages": [message(spec) for spec in _MESSAGES],
        "commitments": [
            commitment("dev-c1", "conv-1", 1),
            commitment("dev-j1", "conv-1", 2),
            commitment("dev-s1", "conv-2", 0),
            commitment("dev-c1", "conv-2", MAX_EPOCH),
        ],
        "safety_numbers": [
            safety(
                member("conseiller-42", ["dev-c1"]), member("jeune-amélie", ["dev-j1", "dev-j2"])
            ),
            safety(
                member("jeune-amélie", ["dev-j2", "dev-j1"]), member("conseiller-42", ["dev-c1"])
            ),
            # "u-10" < "u-9" as bytes, though lp("u-9") < lp("u-10").
            safety(member("u-9", ["dev-s1"]), member("u-10", ["dev-c1", "dev-j1"])),
            # U+FF5A < U+1F600 in UTF-8 byte order but not in UTF-16 code units.
            safety(member("\U0001f600-jeune", ["dev-j2"]), member("\uff5a-conseil", ["dev-c1"])),
            safety(member("superviseur-1", ["dev-s1"]), member("sans-appareil", [])),
        ],
        "backups": [
            backup("jeune-amélie", [("conv-1", 1), ("conv-1", 2), ("conv-2", MAX_EPOCH)]),
            backup("conseiller-42", [("conv-1", 1), ("conv-1", 2), ("conv-2", 0)]),
        ],
    }


def _text(text: str) -> str:
    return text_plaintext(text).decode("utf-8")


# sender, conversation, epoch, client id, type, plaintext, format version, meta
_MessageSpec = tuple[str, str, int, str, str, str, int, dict[str, Any]]

_MESSAGES: list[_MessageSpec] = [
    # Version 1, as stored before version 2: still read, meta not bound.
    (
        "dev-c1",
        "conv-1",
        1,
        "c1-0001",
        "text",
        _text(
            "Bonjour Amélie ! Ton rendez-vous à l'agence France Travail est confirmé : "
            "jeudi à 14 h. Ça te convient ?"
        ),
        1,
        {},
    ),
    (
        "dev-j1",
        "conv-1",
        1,
        "j1-0001",
        "text",
        _text("Oui, c'est noté — merci beaucoup ! 🙂 J'apporterai mon CV « mis à jour »."),
        1,
        {},
    ),
    (
        "dev-j2",
        "conv-1",
        2,
        "j2-0001",
        "text",
        _text("Nouveau téléphone ; même élève. Noël, naïveté, cœur."),
        2,
        {},
    ),
    (
        "dev-c1",
        "conv-1",
        2,
        "c1-0002",
        "appointment",
        _json_dumps(
            {
                "titre": "Atelier CV",
                "lieu": "Mission Locale de Besançon",
                "note": "Prévoir une pièce d'identité",
            }
        ),
        2,
        {"item": "rdv-7f3a", "event": "created", "starts_at": 1_795_000_000},
    ),
    (
        "dev-c1",
        "conv-1",
        2,
        "c1-0004",
        "action",
        _json_dumps({"titre": "Envoyer le CV à l'entreprise « Boulangerie Noël »"}),
        2,
        {
            "status": "in_progress",
            "item": 'act-élan\n\t\u0001"\\\u2028',
            "event": "status_changed",
            "due": MAX_EPOCH,
            "Z_last": [True, False, None, -(2**53 - 1), {"b": "", "a": "😀"}],
        },
    ),
    ("dev-s1", "conv-2", 0, "s1-0001", "text", _text(""), 2, {}),
    (
        "dev-c1",
        "conv-2",
        MAX_EPOCH,
        "c1-0003",
        "edit",
        _text("Époque maximale : 2⁵³ - 1."),
        2,
        {"target_seq": 0},
    ),
]


def _b64(text: str) -> bytes:
    return bytes_field({"v": text}, "v", "vector")


@contextmanager
def _entry(where: str) -> Iterator[None]:
    """Turn any failure inside the block into a `VectorMismatch` naming the entry."""
    try:
        yield
    except VectorMismatch:
        raise
    except (CryptoError, KeyError, TypeError, ValueError) as exc:
        raise VectorMismatch(f"{where}: {type(exc).__name__}: {exc}") from exc


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise VectorMismatch(message)


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise VectorMismatch(f"{what}: expected an object")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise VectorMismatch(f"{what}: expected a list")
    return value


def _entries(doc: Mapping[str, Any], section: str) -> list[Mapping[str, Any]]:
    items = _list(doc.get(section), section)
    _expect(len(items) > 0, f"{section}: expected at least one entry")
    return [_object(item, f"{section}[{i}]") for i, item in enumerate(items)]


def _each(
    doc: Mapping[str, Any], section: str, check: Callable[[str, Mapping[str, Any]], None]
) -> None:
    for index, item in enumerate(_entries(doc, section)):
        where = f"{section}[{index}]"
        with _entry(where):
            check(where, item)


def check_vectors(doc: Mapping[str, Any]) -> None:
    """Check every entry of a vector document; raise `VectorMismatch` on the first failure.

    Devices are looked up by `device_id`, which must be unique in the file.
    """
    _expect(isinstance(doc, Mapping), "vector document must be a JSON object")
    _expect(doc.get("producer") in _PRODUCERS, f"producer must be one of {_PRODUCERS}")
    devices: dict[str, tuple[DeviceKeys, DevicePublicKeys]] = {}

    def check_device(where: str, d: Mapping[str, Any]) -> None:
        user_id, device_id = str_field(d, "user_id", where), str_field(d, "device_id", where)
        _expect(device_id not in devices, f"{where}: duplicate device_id {device_id!r}")
        keys = DeviceKeys.from_private_bytes(
            bytes_field(d, "dh_priv", where, length=KEY_LEN),
            bytes_field(d, "sig_priv", where, length=KEY_LEN),
        )
        public = DevicePublicKeys(
            bytes_field(d, "dh_pub", where, length=KEY_LEN),
            bytes_field(d, "sig_pub", where, length=KEY_LEN),
        )
        _expect(keys.public.dh_pub == public.dh_pub, f"{where}: dh_pub is not dh_priv's")
        _expect(keys.public.sig_pub == public.sig_pub, f"{where}: sig_pub is not sig_priv's")
        sig = bytes_field(d, "registration_sig", where, length=SIG_LEN)
        _expect(
            verify_registration(public, user_id, device_id, sig),
            f"{where}: registration_sig does not verify",
        )
        devices[device_id] = (keys, public)

    def device(where: str, item: Mapping[str, Any], field: str) -> tuple[DeviceKeys, bytes]:
        device_id = str_field(item, field, where)
        _expect(device_id in devices, f"{where}.{field}: unknown device {device_id!r}")
        keys, public = devices[device_id]
        return keys, public.sig_pub

    def check_envelope(where: str, e: Mapping[str, Any]) -> None:
        recipient, _ = device(where, e, "recipient_device")
        _, sender_sig_pub = device(where, e, "sender_device")
        envelope = Envelope.from_json(e)
        epoch_key = bytes_field(e, "epoch_key", where, length=32)
        _expect(
            open_envelope(envelope, recipient, sender_sig_pub) == epoch_key,
            f"{where}: envelope holds another epoch key",
        )

    def check_message(where: str, m: Mapping[str, Any]) -> None:
        _, sender_sig_pub = device(where, m, "sender_device")
        version = m.get("v", 1)
        _expect(version in SUPPORTED_VERSIONS, f"{where}.v: unknown format version {version!r}")
        meta: Mapping[str, Any] = {}
        if version >= 2:
            meta = _object(m.get("meta"), f"{where}.meta")
            _expect(
                canonical_meta(meta) == str_field(m, "meta_canonical", where).encode("utf-8"),
                f"{where}: meta_canonical is not the canonical encoding of meta",
            )
        plaintext = decrypt_message(
            bytes_field(m, "epoch_key", where, length=32),
            sender_sig_pub,
            conversation=str_field(m, "conversation", where),
            epoch=epoch_field(m, "epoch", where),
            sender_device=str_field(m, "sender_device", where),
            client_id=str_field(m, "client_id", where),
            msg_type=str_field(m, "msg_type", where),
            nonce=bytes_field(m, "nonce", where, length=12),
            ciphertext=bytes_field(m, "ciphertext", where),
            sig=bytes_field(m, "sig", where, length=SIG_LEN),
            meta=meta,
            version=version,
        )
        expected = str_field(m, "plaintext", where).encode("utf-8")
        _expect(plaintext == expected, f"{where}: plaintext differs")

    def check_commitment(where: str, c: Mapping[str, Any]) -> None:
        _, creator_sig_pub = device(where, c, "creator_device")
        conversation = str_field(c, "conversation", where)
        epoch = epoch_field(c, "epoch", where)
        value = bytes_field(c, "commitment", where, length=32)
        key = bytes_field(c, "epoch_key", where, length=32)
        _expect(
            epoch_commitment(key, conversation, epoch) == value,
            f"{where}: commitment is not the epoch key's",
        )
        _expect(
            verify_commitment_signature(
                creator_sig_pub,
                conversation,
                epoch,
                str_field(c, "creator_device", where),
                value,
                bytes_field(c, "sig", where, length=SIG_LEN),
            ),
            f"{where}: sig does not verify",
        )

    def check_safety(where: str, s: Mapping[str, Any]) -> None:
        members = []
        for side in ("a", "b"):
            m = _object(s.get(side), f"{where}.{side}")
            keys = _list(m.get("sig_pubs"), f"{where}.{side}.sig_pubs")
            members.append(
                (str_field(m, "user_id", f"{where}.{side}"), [_checked_key(k) for k in keys])
            )
        (user_a, keys_a), (user_b, keys_b) = members
        number = safety_number(user_a, keys_a, user_b, keys_b)
        _expect(
            number == str_field(s, "number", where),
            f"{where}: safety number is {number}, file says {s.get('number')!r}",
        )
        _expect(safety_number(user_b, keys_b, user_a, keys_a) == number, f"{where}: not symmetric")

    def check_backup(where: str, b: Mapping[str, Any]) -> None:
        user_id = str_field(b, "user_id", where)
        text = str_field(b, "recovery_key", where)
        recovery_key = parse_recovery_key(text)
        _expect(
            format_recovery_key(recovery_key) == text,
            f"{where}: recovery_key is not in the canonical XXXX-XXXX form",
        )
        backup = Backup.from_json(_object(b.get("backup"), f"{where}.backup"))
        plaintext = open_backup_plaintext(backup, recovery_key, user_id)
        _expect(
            plaintext == str_field(b, "plaintext", where).encode("utf-8"),
            f"{where}: plaintext differs",
        )
        open_backup(backup, recovery_key, user_id)  # parses as a backup of this user

    _each(doc, "devices", check_device)
    _each(doc, "envelopes", check_envelope)
    _each(doc, "messages", check_message)
    _expect(
        any(m.get("v") == 2 and m.get("meta") for m in doc["messages"]),
        "messages: expected at least one version 2 message with a non-empty meta",
    )
    _each(doc, "commitments", check_commitment)
    _each(doc, "safety_numbers", check_safety)
    _each(doc, "backups", check_backup)


def _checked_key(value: object) -> bytes:
    return bytes_field({"k": value}, "k", "sig_pubs", length=KEY_LEN)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `--write PATH` writes the Python vectors, `--check PATH` checks a file."""
    parser = argparse.ArgumentParser(prog="python -m chat_server.crypto.vectors")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="PATH", help="write the Python vectors")
    group.add_argument("--check", type=Path, metavar="PATH", help="check a vector file")
    args = parser.parse_args(argv)
    if args.write is not None:
        doc = build_vectors()
        check_vectors(doc)
        args.write.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", "utf-8")
        print(f"wrote {args.write}")
        return 0
    try:
        check_vectors(json.loads(args.check.read_text("utf-8")))
    except VectorMismatch as exc:
        print(f"{args.check}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.check}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
