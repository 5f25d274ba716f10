"""The structure key's format (docs/crypto-format.md, "Structure key").

`structure-key-v1.json` is the fixed vector, made here (`build_vector`) and
checked by the browser in tests/web/test_crypto_browser.py, which also makes
a grant and a structure envelope that the Python side opens there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chat_server.crypto import hpke
from chat_server.crypto.encoding import b64decode, b64encode
from chat_server.crypto.envelope import Envelope, wrap_epoch_key
from chat_server.crypto.errors import BadSignature, DecryptError, MalformedInput
from chat_server.crypto.keys import DeviceKeys
from chat_server.crypto.safety import safety_number
from chat_server.crypto.structure_key import (
    StructureGrant,
    endorsement_statement,
    open_grant,
    open_structure_envelope,
    sign_endorsement,
    sign_structure_key,
    structure_key_id,
    structure_recipient,
    verify_endorsement,
    verify_structure_key,
    wrap_grant,
)

VECTOR = Path(__file__).with_name("structure-key-v1.json")
DESCRIPTION = (
    "Structure key (docs/crypto-format.md, 'Structure key'): key_id = b64url(SHA-256("
    "lp('cejchat/structure-key-id/v1') lp(public_key))[0:16]); key sig = Ed25519(creator) over "
    "lp('cejchat/structure-key/v1') lp(structure) lp(public_key) lp(creator_device); grant = "
    "HPKE base seal of the private scalar, info = lp('cejchat/structure-grant/v1') lp(structure) "
    "lp(key_id) lp(recipient_device), aad = lp(sender_device), sig over "
    "lp('cejchat/structure-grant-sig/v1') lp(info) lp(aad) lp(enc) lp(ct); the epoch envelope "
    "is an ordinary envelope to recipient_device 'structure:' + key_id. Device keys are "
    "{dh_priv, sig_priv}; ikm_e is the HPKE ephemeral's DeriveKeyPair input. Binary fields "
    "are unpadded base64url. safety: the safety number of two members with the structure "
    "key's public half appended (lp('cejchat/safety-structure/v1') lp(public_key)), and "
    "without it. endorsement: Ed25519(endorser, the recipient's keys) over "
    "lp('cejchat/structure-endorsement/v1') lp(structure) lp(key_id) lp(public_key) "
    "lp(endorser_device); statement is those bytes."
)


def _dev(dh: int, sig: int) -> DeviceKeys:
    return DeviceKeys.from_private_bytes(bytes([dh]) * 32, bytes([sig]) * 32)


def _keys_json(k: DeviceKeys) -> dict[str, str]:
    return {"dh_priv": b64encode(k.dh_priv), "sig_priv": b64encode(k.sig_priv)}


def build_vector() -> dict[str, Any]:
    """The fixed vector: the same bytes every time (fixed keys and HPKE ephemerals)."""
    structure, creator_device = "st-1", "dev-sup"
    creator = _dev(1, 2)
    private = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
    pub = private.public_key().public_bytes_raw()
    recipient, recipient_device = _dev(3, 4), "dev-c2"
    grant_ikm = bytes([5]) * 32
    grant = wrap_grant(
        private,
        structure=structure,
        sender=creator,
        sender_device=creator_device,
        recipient_device=recipient_device,
        recipient_dh_pub=recipient.public.dh_pub,
        ephemeral=hpke.derive_key_pair(grant_ikm),
    )
    writer, epoch_key, env_ikm = _dev(7, 8), bytes([6]) * 32, bytes([9]) * 32
    envelope = wrap_epoch_key(
        epoch_key,
        sender=writer,
        sender_device="dev-c1",
        recipient_device=structure_recipient(structure_key_id(pub)),
        recipient_dh_pub=pub,
        conversation="conv-ü",
        epoch=3,
        ephemeral=hpke.derive_key_pair(env_ikm),
    )
    return {
        "description": DESCRIPTION,
        "structure": structure,
        "private_key": b64encode(private.private_bytes_raw()),
        "public_key": b64encode(pub),
        "key_id": structure_key_id(pub),
        "creator_device": creator_device,
        "creator": _keys_json(creator),
        "key_sig": b64encode(sign_structure_key(creator, structure, pub, creator_device)),
        "recipient": _keys_json(recipient),
        "grant_ikm_e": b64encode(grant_ikm),
        "grant": grant.to_json(),
        "writer": _keys_json(writer),
        "epoch_key": b64encode(epoch_key),
        "envelope_ikm_e": b64encode(env_ikm),
        "envelope": envelope.to_json(),
        "safety": {
            "a": {"user_id": "user-é", "sig_pubs": [b64encode(creator.public.sig_pub)]},
            "b": {
                "user_id": "user-b",
                "sig_pubs": [b64encode(recipient.public.sig_pub), b64encode(writer.public.sig_pub)],
            },
            "number": safety_number(
                "user-é",
                [creator.public.sig_pub],
                "user-b",
                [recipient.public.sig_pub, writer.public.sig_pub],
                pub,
            ),
            "number_without_structure": safety_number(
                "user-é",
                [creator.public.sig_pub],
                "user-b",
                [recipient.public.sig_pub, writer.public.sig_pub],
            ),
        },
        "endorsement": {
            "device_id": recipient_device,
            "statement": b64encode(
                endorsement_statement(
                    structure, structure_key_id(pub), pub, recipient_device
                )
            ),
            "sig": b64encode(sign_endorsement(recipient, structure, pub, recipient_device)),
        },
    }


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(VECTOR.read_text("utf-8"))
    return doc


def test_vector_file_is_reproduced() -> None:
    assert _doc() == build_vector()


def test_vector_opens() -> None:
    doc = _doc()
    creator = DeviceKeys.from_private_bytes(
        *(b64decode(doc["creator"][k]) for k in ("dh_priv", "sig_priv"))
    )
    recipient = DeviceKeys.from_private_bytes(
        *(b64decode(doc["recipient"][k]) for k in ("dh_priv", "sig_priv"))
    )
    writer = DeviceKeys.from_private_bytes(
        *(b64decode(doc["writer"][k]) for k in ("dh_priv", "sig_priv"))
    )
    pub = b64decode(doc["public_key"])
    assert verify_structure_key(
        creator.public.sig_pub,
        doc["structure"],
        pub,
        doc["creator_device"],
        b64decode(doc["key_sig"]),
    )
    private = open_grant(
        StructureGrant.from_json(doc["grant"]), recipient, creator.public.sig_pub, pub
    )
    assert private.private_bytes_raw() == b64decode(doc["private_key"])
    env = Envelope.from_json(doc["envelope"])
    assert open_structure_envelope(env, private, writer.public.sig_pub) == b64decode(
        doc["epoch_key"]
    )
    e = doc["endorsement"]
    assert verify_endorsement(
        recipient.public.sig_pub,
        doc["structure"],
        doc["key_id"],
        pub,
        e["device_id"],
        b64decode(e["sig"]),
    )


def test_an_endorsement_binds_structure_key_and_device() -> None:
    doc = _doc()
    recipient = DeviceKeys.from_private_bytes(
        *(b64decode(doc["recipient"][k]) for k in ("dh_priv", "sig_priv"))
    )
    pub, e = b64decode(doc["public_key"]), doc["endorsement"]
    sig_pub, sig = recipient.public.sig_pub, b64decode(e["sig"])
    st, kid, dev = doc["structure"], doc["key_id"], e["device_id"]
    assert verify_endorsement(sig_pub, st, kid, pub, dev, sig)
    assert not verify_endorsement(sig_pub, "st-2", kid, pub, dev, sig)
    assert not verify_endorsement(sig_pub, st, kid, pub, "dev-x", sig)
    other = X25519PrivateKey.generate().public_key().public_bytes_raw()
    assert not verify_endorsement(sig_pub, st, kid, other, dev, sig)
    assert not verify_endorsement(sig_pub, st, structure_key_id(other), other, dev, sig)
    assert not verify_endorsement(DeviceKeys.generate().public.sig_pub, st, kid, pub, dev, sig)
    assert not verify_endorsement(sig_pub, st, kid, b"short", dev, sig)


def test_what_is_refused() -> None:
    doc = _doc()
    creator = DeviceKeys.from_private_bytes(
        *(b64decode(doc["creator"][k]) for k in ("dh_priv", "sig_priv"))
    )
    recipient = DeviceKeys.from_private_bytes(
        *(b64decode(doc["recipient"][k]) for k in ("dh_priv", "sig_priv"))
    )
    pub = b64decode(doc["public_key"])
    sig = b64decode(doc["key_sig"])
    # The key statement binds structure, key and creator device.
    assert not verify_structure_key(creator.public.sig_pub, "st-2", pub, doc["creator_device"], sig)
    assert not verify_structure_key(
        creator.public.sig_pub, doc["structure"], bytes(32), "dev-sup", sig
    )
    assert not verify_structure_key(creator.public.sig_pub, doc["structure"], pub, "dev-x", sig)
    assert not verify_structure_key(recipient.public.sig_pub, doc["structure"], pub, "dev-sup", sig)
    grant = StructureGrant.from_json(doc["grant"])
    with pytest.raises(BadSignature):
        open_grant(grant, recipient, recipient.public.sig_pub, pub)
    with pytest.raises(DecryptError):
        open_grant(grant, DeviceKeys.generate(), creator.public.sig_pub, pub)
    # A grant that holds another key than the announced one is refused.
    other = X25519PrivateKey.generate()
    forged = wrap_grant(
        other,
        structure=doc["structure"],
        sender=creator,
        sender_device="dev-sup",
        recipient_device="dev-c2",
        recipient_dh_pub=recipient.public.dh_pub,
    )
    with pytest.raises(DecryptError):
        open_grant(forged, recipient, creator.public.sig_pub, pub)
    moved = StructureGrant(**{**grant.__dict__, "recipient_device": "dev-c3"})
    with pytest.raises(BadSignature):
        open_grant(moved, recipient, creator.public.sig_pub, pub)
    with pytest.raises(MalformedInput):
        StructureGrant.from_json({**doc["grant"], "enc": "AAAA"})
    with pytest.raises(MalformedInput):
        structure_key_id(b"short")
    env = Envelope.from_json({**doc["envelope"], "recipient_device": "dev-c2"})
    with pytest.raises(MalformedInput):
        open_structure_envelope(env, other, creator.public.sig_pub)


def main() -> None:  # pragma: no cover - run by hand to rewrite the vector
    VECTOR.write_text(json.dumps(build_vector(), ensure_ascii=False, indent=1) + "\n", "utf-8")


if __name__ == "__main__":  # pragma: no cover
    main()
