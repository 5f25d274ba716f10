"""The end-to-end encryption scheme (docs/crypto-format.md), version 1.

A complete Python client implementation and the checks the server runs:
device keys and registrations (`keys`), HPKE epoch-key envelopes
(`envelope`, on top of `hpke`), signed AES-256-GCM messages (`message`),
safety numbers (`safety`), recovery-key backups (`backup`) and the
cross-implementation vectors (`vectors`). `passwords` and `tokens` are the
server's account helpers and are not part of the scheme.
"""

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
from chat_server.crypto.encoding import b64decode, b64encode, lp
from chat_server.crypto.envelope import (
    Envelope,
    generate_epoch_key,
    open_envelope,
    verify_envelope_signature,
    wrap_epoch_key,
)
from chat_server.crypto.errors import (
    BadSignature,
    CryptoError,
    DecryptError,
    MalformedInput,
    VectorMismatch,
)
from chat_server.crypto.keys import (
    DeviceKeys,
    DevicePublicKeys,
    sign_registration,
    verify_registration,
)
from chat_server.crypto.message import (
    EncryptedMessage,
    decrypt_message,
    encrypt_message,
    message_aad,
    read_text,
    text_plaintext,
    verify_message_signature,
)
from chat_server.crypto.safety import format_safety_number, safety_number

__all__ = [
    "Backup",
    "BackupContents",
    "BadSignature",
    "CryptoError",
    "DecryptError",
    "DeviceKeys",
    "DevicePublicKeys",
    "DeviceSecret",
    "EncryptedMessage",
    "Envelope",
    "EpochKeyEntry",
    "MalformedInput",
    "VectorMismatch",
    "b64decode",
    "b64encode",
    "decrypt_message",
    "encrypt_message",
    "format_recovery_key",
    "format_safety_number",
    "generate_epoch_key",
    "generate_recovery_key",
    "lp",
    "message_aad",
    "open_backup",
    "open_envelope",
    "parse_recovery_key",
    "read_text",
    "safety_number",
    "seal_backup",
    "sign_registration",
    "text_plaintext",
    "verify_envelope_signature",
    "verify_message_signature",
    "verify_registration",
    "wrap_epoch_key",
]
