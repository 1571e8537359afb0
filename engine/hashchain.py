"""Tamper evidence: each record's hash covers its bytes and the previous hash.

``hash_n = sha256(hash_{n-1} || body_n)`` with ``hash_0`` = 32 zero bytes. The
body is the exact msgpack stored in the log, so verifying never re-encodes.
Pure functions: the log, the replay tool and the tests all use these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack

GENESIS = bytes(32)
ROLLBACK_TYPE = "settings.log_rolled_back"


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
        if position != self.next_position and not declared_gap(
            self.next_position - 1, position, body
        ):
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
        self.next_position = position + 1
        self.checked += 1
        return None


def declared_gap(prev_position: int, position: int, body: bytes) -> bool:
    """Whether the record at ``position`` is the rollback event declaring the gap
    after ``prev_position`` (positions published before a log rollback are skipped,
    never reused: see ``settings.log_rolled_back``)."""
    if position <= prev_position + 1:
        return False
    try:
        ev: Any = msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return False
    return declares_gap(prev_position, position, ev)


def declares_gap(prev_position: int, position: int, ev: Any) -> bool:
    """``declared_gap`` for a record already decoded (a stored event map)."""
    if not isinstance(ev, dict):
        return False
    data = ev.get("data")
    return bool(
        ev.get("type") == ROLLBACK_TYPE
        and isinstance(data, dict)
        and data.get("after") == prev_position
        and data.get("skipped_to") == position - 1
    )
