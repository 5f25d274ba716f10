"""The canonical encoding of a message's server-visible `meta` (format version 2).

`meta` is bound into a version 2 message's associated data and signature,
so both implementations must turn the same value into the same bytes. The
encoding is JSON text in UTF-8 with one spelling per value
(docs/crypto-format.md, "Canonical meta"):

- an object's members sorted by key; keys are 1 to 64 characters of
  `[A-Za-z0-9_]` (ASCII, so code-unit and byte order agree);
- no whitespace between tokens;
- integers in [-(2^53 - 1), 2^53 - 1] in shortest decimal form; any other
  number (a fraction, 1.0, NaN) has no canonical form and is refused;
- strings escape `"` and `\\` with a backslash, U+0008, U+0009, U+000A,
  U+000C, U+000D as `\\b \\t \\n \\f \\r`, every other code point below
  U+0020 as `\\u00xx` (lowercase hex), and nothing else; a lone surrogate
  is refused;
- `true`, `false`, `null`, arrays; at most 8 levels of nesting.

This is what Python's `json.dumps(meta, ensure_ascii=False,
separators=(",", ":"), sort_keys=True)` and the browser's `JSON.stringify`
of a key-sorted copy both write for a value that passes the checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from chat_server.crypto.errors import MalformedInput

__all__ = ["MAX_META_DEPTH", "META_KEY", "SAFE_INTEGER", "canonical_meta"]

#: Largest magnitude of an integer in meta: exact in JavaScript.
SAFE_INTEGER = 2**53 - 1
MAX_META_DEPTH = 8
META_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")


def _check(value: object, where: str, depth: int) -> None:
    if depth > MAX_META_DEPTH:
        raise MalformedInput(f"{where}: nested more than {MAX_META_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -SAFE_INTEGER <= value <= SAFE_INTEGER:
            raise MalformedInput(f"{where}: integer outside [-(2**53-1), 2**53-1]")
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedInput(f"{where}: string is not valid Unicode") from exc
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or META_KEY.fullmatch(key) is None:
                raise MalformedInput(f"{where}: key {str(key)[:40]!r} is not [A-Za-z0-9_]{{1,64}}")
            _check(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, float):
        raise MalformedInput(f"{where}: only integers have a canonical form, not {value!r}")
    raise MalformedInput(f"{where}: a {type(value).__name__} has no canonical form")


def canonical_meta(meta: Mapping[str, object]) -> bytes:
    """The canonical bytes of `meta`; raise `MalformedInput` if it has none."""
    if not isinstance(meta, Mapping):
        raise MalformedInput("meta must be an object")
    if not meta:
        return b"{}"  # most messages: no meta (json.dumps would say the same, slower)
    _check(meta, "meta", 1)
    text = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text.encode("utf-8")
