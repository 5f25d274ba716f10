"""Device key pairs and the signed device registration.

Each device has an X25519 key pair (`dh`, receives HPKE envelopes) and an
Ed25519 key pair (`sig`, signs registrations, envelopes and messages).
Public and private keys travel as their 32 raw bytes (X25519 scalar,
Ed25519 seed). The registration is signed by the device's own Ed25519 key
over `lp("cejchat/device/v1") lp(user_id) lp(device_id) lp(dh_pub) lp(sig_pub)`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from chat_server.crypto import ed25519
from chat_server.crypto.encoding import lp
from chat_server.crypto.errors import MalformedInput

__all__ = [
    "KEY_LEN",
    "SIG_LEN",
    "DeviceKeys",
    "DevicePublicKeys",
    "is_small_order_dh_pub",
    "is_small_order_sig_pub",
    "registration_bytes",
    "sign_registration",
    "verify_registration",
    "verify_signature",
]

KEY_LEN = 32
SIG_LEN = 64
_DEVICE_LABEL = "cejchat/device/v1"


def _check_key(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != KEY_LEN:
        raise MalformedInput(f"{name} must be {KEY_LEN} raw bytes")


@dataclass(frozen=True)
class DevicePublicKeys:
    """The public half of a device: raw X25519 `dh_pub` and raw Ed25519 `sig_pub`.

    Construction checks both are 32 bytes (`MalformedInput` otherwise); it
    does not check that they are valid curve points.
    """

    dh_pub: bytes
    sig_pub: bytes

    def __post_init__(self) -> None:
        _check_key("dh_pub", self.dh_pub)
        _check_key("sig_pub", self.sig_pub)


class DeviceKeys:
    """A device's two private keys. Never leaves the device except in a backup."""

    __slots__ = ("_dh", "_sig")

    def __init__(self, dh: X25519PrivateKey, sig: Ed25519PrivateKey) -> None:
        """Wrap existing `cryptography` key objects."""
        self._dh = dh
        self._sig = sig

    @classmethod
    def generate(cls) -> DeviceKeys:
        """Make fresh random key pairs."""
        return cls(X25519PrivateKey.generate(), Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, dh_priv: bytes, sig_priv: bytes) -> DeviceKeys:
        """Load from the raw 32-byte X25519 scalar and Ed25519 seed (`MalformedInput`)."""
        _check_key("dh_priv", dh_priv)
        _check_key("sig_priv", sig_priv)
        return cls(
            X25519PrivateKey.from_private_bytes(dh_priv),
            Ed25519PrivateKey.from_private_bytes(sig_priv),
        )

    @property
    def dh_private_key(self) -> X25519PrivateKey:
        """The X25519 private key, for opening HPKE envelopes."""
        return self._dh

    @property
    def dh_priv(self) -> bytes:
        """The raw 32-byte X25519 private scalar, as given (for backups)."""
        return self._dh.private_bytes_raw()

    @property
    def sig_priv(self) -> bytes:
        """The raw 32-byte Ed25519 seed (for backups)."""
        return self._sig.private_bytes_raw()

    @property
    def public(self) -> DevicePublicKeys:
        """The raw public keys to register with the server."""
        return DevicePublicKeys(
            dh_pub=self._dh.public_key().public_bytes_raw(),
            sig_pub=self._sig.public_key().public_bytes_raw(),
        )

    def sign(self, data: bytes) -> bytes:
        """Ed25519-sign `data` (RFC 8032, pure): 64 bytes, deterministic."""
        return self._sig.sign(data)

    def __repr__(self) -> str:
        return f"DeviceKeys(sig_pub={self.public.sig_pub.hex()[:16]}...)"


_P = 2**255 - 19
# Any clamped scalar is a multiple of 8, so X25519 with it maps every small-order
# point to zero, which `exchange` refuses: that is the whole small-order test.
_PROBE = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def is_small_order_dh_pub(dh_pub: bytes) -> bool:
    """Whether a raw X25519 public key is a point of small order (useless for DH)."""
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(dh_pub))
    except ValueError:
        return True
    return False


@functools.lru_cache(maxsize=4096)  # the server checks the same registered keys again and again
def is_small_order_sig_pub(sig_pub: bytes) -> bool:
    """Whether a raw Ed25519 public key encodes a point of small order.

    Such a key verifies forged signatures (OpenSSL accepts, for example, an
    all-zero key with an all-zero signature), so it is never accepted. The
    check maps the point's y to the Montgomery u = (1 + y) / (1 - y) and
    reuses the X25519 test; y = 1 is the neutral point itself.
    """
    y = int.from_bytes(sig_pub, "little") & ((1 << 255) - 1)
    y %= _P
    if y == 1:
        return True
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return is_small_order_dh_pub(u.to_bytes(32, "little"))


def verify_signature(sig_pub: bytes, data: bytes, sig: bytes) -> bool:
    """Return whether `sig` is a valid Ed25519 signature of `data` under raw `sig_pub`.

    Valid means: OpenSSL (``cryptography``) accepts it, asked only when
    libsodium refuses it (`chat_server.crypto.ed25519`, same accept set).

    Never raises: a malformed key or signature of any type gives False, and so
    does a small-order key (see `is_small_order_sig_pub`).
    """
    if not (
        isinstance(sig_pub, bytes)
        and len(sig_pub) == KEY_LEN
        and isinstance(sig, bytes)
        and len(sig) == SIG_LEN
        and isinstance(data, bytes)
    ) or is_small_order_sig_pub(sig_pub):
        return False
    # libsodium first, OpenSSL decides its refusals: OpenSSL's accept set (crypto/ed25519.py).
    return ed25519.verify(sig_pub, data, sig)


def registration_bytes(user_id: str, device_id: str, public: DevicePublicKeys) -> bytes:
    """The bytes a device registration signs (see the module docstring)."""
    return lp(_DEVICE_LABEL) + lp(user_id) + lp(device_id) + lp(public.dh_pub) + lp(public.sig_pub)


def sign_registration(keys: DeviceKeys, user_id: str, device_id: str) -> bytes:
    """Sign this device's registration for `user_id` / `device_id` with its own key."""
    return keys.sign(registration_bytes(user_id, device_id, keys.public))


def verify_registration(public: DevicePublicKeys, user_id: str, device_id: str, sig: bytes) -> bool:
    """Return whether `sig` is the registration signature by `public.sig_pub`; never raises.

    Also False if `dh_pub` or `sig_pub` is a small-order point: the server
    refuses to register such a device.
    """
    if is_small_order_dh_pub(public.dh_pub):
        return False
    try:
        data = registration_bytes(user_id, device_id, public)
    except MalformedInput:
        return False
    return verify_signature(public.sig_pub, data, sig)
