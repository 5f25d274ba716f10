"""What the peers share: the relay logic (no storage, no checks) and process setup."""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import msgspec

_decode = msgspec.json.decode
_encode = msgspec.json.encode

AUTH_OK = b'{"type":"auth.ok"}'


def raise_nofile() -> None:
    """Hold 10,000+ connections: raise the soft open-files limit to the hard one."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin_from_env() -> None:
    """Pin this process to ``BENCH_CPUS`` (``0`` or ``0,1``) if set."""
    cpus = os.environ.get("BENCH_CPUS")
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


class Relay:
    """Pair routing: remember who each user's peer is; count a seq per conversation."""

    def __init__(self) -> None:
        self.seqs: dict[str, int] = {}

    def relay(self, user: str, frame: dict[str, Any]) -> tuple[bytes, bytes]:
        """(``message.created`` for the peer, ``ack`` for the sender) of one ``message.send``."""
        conv = frame["conversation"]
        seq = self.seqs.get(conv, 0) + 1
        self.seqs[conv] = seq
        now = time.time()
        created = _encode(
            {
                "type": "message.created",
                "message": {
                    "conversation": conv,
                    "seq": seq,
                    "client_id": frame["client_id"],
                    "sender": user,
                    "msg_type": frame.get("msg_type"),
                    "body": frame.get("body"),
                    "epoch": frame.get("epoch", 0),
                    "nonce": frame.get("nonce"),
                    "sig": frame.get("sig"),
                    "created_at": now,
                },
            }
        )
        ack = _encode(
            {
                "type": "ack",
                "id": frame.get("id"),
                "conversation": conv,
                "client_id": frame["client_id"],
                "seq": seq,
                "created_at": now,
                "duplicate": False,
            }
        )
        return created, ack


def decode(data: str | bytes) -> dict[str, Any]:
    """A client frame as a dict."""
    out: dict[str, Any] = _decode(data)
    return out
