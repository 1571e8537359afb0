"""Tamper evidence: each record's hash covers its bytes and the previous hash.

``hash_n = sha256(hash_{n-1} || body_n)`` with ``hash_0`` = 32 zero bytes. The
body is the exact msgpack stored in the log, so verifying never re-encodes.
Pure functions: the log, the replay tool and the tests all use these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

GENESIS = bytes(32)


def link(prev_hash: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev_hash + body).digest()


@dataclass(frozen=True)
class ChainBreak:
    position: int
    reason: str

    def __str__(self) -> str:
        return f"position {self.position}: {self.reason}"


class ChainVerifier:
    """Feed records in position order; the first break is kept and reported."""

    def __init__(self, prev_hash: bytes = GENESIS, next_position: int = 1) -> None:
        self.prev_hash = prev_hash
        self.next_position = next_position
        self.checked = 0
        self.broken: ChainBreak | None = None

    def feed(self, position: int, body: bytes, stored_hash: bytes) -> ChainBreak | None:
        if self.broken is not None:
            return self.broken
        if position != self.next_position:
            self.broken = ChainBreak(
                self.next_position,
                f"record missing (next stored position is {position})",
            )
            return self.broken
        expected = link(self.prev_hash, body)
        if expected != stored_hash:
            self.broken = ChainBreak(position, "hash does not match the record's content")
            return self.broken
        self.prev_hash = stored_hash
        self.next_position += 1
        self.checked += 1
        return None
