"""ULIDs: the sortable 26-character ids that name blocks, as Prometheus names them.

128 bits: a 48-bit Unix time in milliseconds followed by 80 random bits, written as
Crockford base32 (``0-9A-Z`` without ``I L O U``), most significant bits first. Ids made
in later milliseconds sort after earlier ones, as strings too.
"""

from __future__ import annotations

import secrets
import time

__all__ = ["is_ulid", "new_ulid", "ulid_time"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUES = {c: i for i, c in enumerate(_ALPHABET)}
_LENGTH = 26
_MAX_TIME = (1 << 48) - 1


def new_ulid(ms: int | None = None) -> str:
    """A fresh ULID for time ``ms`` (now when None) with 80 random bits."""
    t = time.time_ns() // 1_000_000 if ms is None else ms
    if not 0 <= t <= _MAX_TIME:
        raise ValueError(f"ulid time {t} does not fit in 48 bits")
    n = (t << 80) | secrets.randbits(80)
    return "".join(_ALPHABET[(n >> (5 * i)) & 31] for i in reversed(range(_LENGTH)))


def is_ulid(text: str) -> bool:
    """Whether ``text`` is a well-formed ULID (26 characters, at most 128 bits)."""
    return (len(text) == _LENGTH and text[0] in "01234567"
            and all(c in _VALUES for c in text))


def ulid_time(text: str) -> int:
    """The millisecond timestamp of a ULID; ``ValueError`` if it is not one."""
    if not is_ulid(text):
        raise ValueError(f"not a ulid: {text!r}")
    n = 0
    for c in text:
        n = (n << 5) | _VALUES[c]
    return n >> 80
