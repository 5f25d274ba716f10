"""Encrypted key backup opened by a recovery key the user keeps.

The recovery key is 32 random bytes, shown once as Crockford base32
(uppercase, no padding, 52 symbols) in groups of four joined by `-`.

    k = HKDF-SHA256(ikm=recovery_key, salt=empty, info="cejchat/backup/v1", L=32)
    blob = AES-256-GCM(k, nonce (12 random bytes), plaintext,
                       aad=lp("cejchat/backup/v1") lp(user_id))

The plaintext is UTF-8 JSON `{"v":1,"user_id","devices":[{"device_id","dh_priv",
"sig_priv"}],"epoch_keys":[{"conversation","epoch","key"}]}`; the backup JSON
is `{"v":1,"nonce","blob"}`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chat_server.crypto.encoding import b64encode, bytes_field, epoch_field, lp, str_field
from chat_server.crypto.errors import DecryptError, MalformedInput
from chat_server.crypto.keys import KEY_LEN

__all__ = [
    "RECOVERY_KEY_LEN",
    "Backup",
    "BackupContents",
    "DeviceSecret",
    "EpochKeyEntry",
    "backup_key",
    "format_recovery_key",
    "generate_recovery_key",
    "open_backup",
    "open_backup_plaintext",
    "parse_recovery_key",
    "seal_backup",
]

RECOVERY_KEY_LEN = 32
BACKUP_VERSION = 1
_LABEL = "cejchat/backup/v1"
_NONCE_LEN = 12
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_CROCKFORD)} | {"O": 0, "I": 1, "L": 1}
_SYMBOLS = -(-RECOVERY_KEY_LEN * 8 // 5)  # 52
_PAD_BITS = _SYMBOLS * 5 - RECOVERY_KEY_LEN * 8  # 4
_SEPARATORS = re.compile(r"[\s-]+")


def generate_recovery_key() -> bytes:
    """Return a fresh random 32-byte recovery key."""
    return secrets.token_bytes(RECOVERY_KEY_LEN)


def format_recovery_key(key: bytes) -> str:
    """Crockford base32 of the 32-byte key (big-endian bits, zero-padded), groups of 4."""
    if not isinstance(key, bytes) or len(key) != RECOVERY_KEY_LEN:
        raise MalformedInput(f"recovery key must be {RECOVERY_KEY_LEN} bytes")
    value = int.from_bytes(key, "big") << _PAD_BITS
    symbols = "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(_SYMBOLS)))
    return "-".join(symbols[i : i + 4] for i in range(0, _SYMBOLS, 4))


def parse_recovery_key(text: str) -> bytes:
    """Parse a recovery key as typed by a person; return its 32 bytes.

    Ignores case, whitespace and dashes; reads O as 0 and I, L as 1.
    Raises `MalformedInput` on a wrong length, another symbol, or non-zero
    padding bits.
    """
    if not isinstance(text, str):
        raise MalformedInput("recovery key must be a string")
    cleaned = _SEPARATORS.sub("", text).upper()
    if len(cleaned) != _SYMBOLS:
        raise MalformedInput(f"recovery key must have {_SYMBOLS} symbols, got {len(cleaned)}")
    value = 0
    for symbol in cleaned:
        digit = _DECODE.get(symbol)
        if digit is None:
            raise MalformedInput(f"recovery key: {symbol!r} is not a Crockford base32 symbol")
        value = (value << 5) | digit
    if value & ((1 << _PAD_BITS) - 1):
        raise MalformedInput("recovery key: last symbol is not valid")
    return (value >> _PAD_BITS).to_bytes(RECOVERY_KEY_LEN, "big")


def backup_key(recovery_key: bytes) -> bytes:
    """The AES-256-GCM key derived from the recovery key (HKDF-SHA256, empty salt)."""
    if not isinstance(recovery_key, bytes) or len(recovery_key) != RECOVERY_KEY_LEN:
        raise MalformedInput(f"recovery key must be {RECOVERY_KEY_LEN} bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=_LABEL.encode("ascii"))
    return hkdf.derive(recovery_key)


@dataclass(frozen=True)
class DeviceSecret:
    """One device's raw private keys (X25519 scalar, Ed25519 seed) in a backup."""

    device_id: str
    dh_priv: bytes
    sig_priv: bytes


@dataclass(frozen=True)
class EpochKeyEntry:
    """One epoch key of one conversation in a backup."""

    conversation: str
    epoch: int
    key: bytes


def _object_list(doc: Mapping[str, object], name: str) -> list[Mapping[str, object]]:
    items = doc.get(name)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise MalformedInput(f"backup.{name}: expected a list of objects")
    return items


@dataclass(frozen=True)
class BackupContents:
    """What a backup protects: a user's device private keys and epoch keys."""

    user_id: str
    devices: tuple[DeviceSecret, ...]
    epoch_keys: tuple[EpochKeyEntry, ...]

    def to_plaintext(self) -> bytes:
        """The UTF-8 JSON plaintext (compact, non-ASCII kept as UTF-8)."""
        doc = {
            "v": BACKUP_VERSION,
            "user_id": self.user_id,
            "devices": [
                {
                    "device_id": d.device_id,
                    "dh_priv": b64encode(d.dh_priv),
                    "sig_priv": b64encode(d.sig_priv),
                }
                for d in self.devices
            ],
            "epoch_keys": [
                {"conversation": e.conversation, "epoch": e.epoch, "key": b64encode(e.key)}
                for e in self.epoch_keys
            ],
        }
        try:
            return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedInput("backup holds a string that is not valid Unicode") from exc

    @classmethod
    def from_plaintext(cls, plaintext: bytes) -> BackupContents:
        """Parse the plaintext JSON; raise `MalformedInput` naming the bad field."""
        try:
            doc = json.loads(plaintext.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedInput("backup plaintext is not UTF-8 JSON") from exc
        if not isinstance(doc, dict) or doc.get("v") != BACKUP_VERSION:
            raise MalformedInput("backup plaintext: expected an object with v = 1")
        devices = tuple(
            DeviceSecret(
                device_id=str_field(d, "device_id", "backup.devices"),
                dh_priv=bytes_field(d, "dh_priv", "backup.devices", length=KEY_LEN),
                sig_priv=bytes_field(d, "sig_priv", "backup.devices", length=KEY_LEN),
            )
            for d in _object_list(doc, "devices")
        )
        epoch_keys = tuple(
            EpochKeyEntry(
                conversation=str_field(e, "conversation", "backup.epoch_keys"),
                epoch=epoch_field(e, "epoch", "backup.epoch_keys"),
                key=bytes_field(e, "key", "backup.epoch_keys", length=32),
            )
            for e in _object_list(doc, "epoch_keys")
        )
        return cls(str_field(doc, "user_id", "backup"), devices, epoch_keys)


@dataclass(frozen=True)
class Backup:
    """The stored backup: a nonce and the AES-GCM blob (ciphertext, tag appended)."""

    nonce: bytes
    blob: bytes

    def to_json(self) -> dict[str, str | int]:
        """The backup JSON `{"v":1,"nonce","blob"}`."""
        return {"v": BACKUP_VERSION, "nonce": b64encode(self.nonce), "blob": b64encode(self.blob)}

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> Backup:
        """Parse the backup JSON; raise `MalformedInput` on a bad field or version."""
        if not isinstance(doc, Mapping) or doc.get("v") != BACKUP_VERSION:
            raise MalformedInput("backup: expected an object with v = 1")
        return cls(
            nonce=bytes_field(doc, "nonce", "backup", length=_NONCE_LEN),
            blob=bytes_field(doc, "blob", "backup"),
        )


def _aad(user_id: str) -> bytes:
    return lp(_LABEL) + lp(user_id)


def seal_backup(
    contents: BackupContents, recovery_key: bytes, *, nonce: bytes | None = None
) -> Backup:
    """Encrypt `contents` under the recovery key, bound to `contents.user_id`.

    `nonce` is for test vectors only; normally 12 fresh random bytes.
    """
    if nonce is None:
        nonce = secrets.token_bytes(_NONCE_LEN)
    elif len(nonce) != _NONCE_LEN:
        raise MalformedInput(f"nonce must be {_NONCE_LEN} bytes")
    aesgcm = AESGCM(backup_key(recovery_key))
    return Backup(nonce, aesgcm.encrypt(nonce, contents.to_plaintext(), _aad(contents.user_id)))


def open_backup_plaintext(backup: Backup, recovery_key: bytes, user_id: str) -> bytes:
    """Decrypt the backup of `user_id`; return the raw plaintext; `DecryptError` if refused."""
    try:
        return AESGCM(backup_key(recovery_key)).decrypt(backup.nonce, backup.blob, _aad(user_id))
    except InvalidTag as exc:
        raise DecryptError("backup does not open with this recovery key and user") from exc


def open_backup(backup: Backup, recovery_key: bytes, user_id: str) -> BackupContents:
    """Decrypt and parse the backup of `user_id`.

    Raises `DecryptError` for a wrong recovery key, wrong user or tampered
    blob, and `MalformedInput` if the plaintext is not a valid backup of
    that user.
    """
    contents = BackupContents.from_plaintext(open_backup_plaintext(backup, recovery_key, user_id))
    if contents.user_id != user_id:
        raise MalformedInput("backup plaintext names another user")
    return contents
