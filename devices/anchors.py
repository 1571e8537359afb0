"""What a device holds to check the log it pulls: the engine's key, its checkpoints.

* The engine's public key is pinned on the first sync that brings a checkpoint
  (stored in the device's meta, ``anchors``); a later checkpoint signed by
  another key is refused.
* The latest checkpoints received (``KEEP`` of them) are kept; a pulled page
  whose hash at a checkpointed position disagrees is refused whole.
* Each pulled page's hash chain is checked: from the hash at the position the
  device had reached, over every event (the engine sends each stored hash).
* An engine whose head is below the position the device holds has lost records
  the device saw (a restored backup, a cut tail): refused too.

Pure: the agent passes pages in and stores ``to_meta()`` with each page.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine import checkpoints as cps
from engine.errors import SynvoiceError
from engine.hashchain import GENESIS, ROLLBACK_TYPE, declared_gap, link
from engine.messages import PulledPage

KEEP = 16  # checkpoints kept (the newest), enough to span several syncs
RECENT = 64  # page-end hashes kept, to check a page that starts at one of them


class _Position(msgspec.Struct):
    position: int


_decode_position = msgspec.msgpack.Decoder(_Position).decode


class _Rollback(msgspec.Struct):
    type: str
    data: dict[str, Any]


_decode_rollback = msgspec.msgpack.Decoder(_Rollback).decode


def _rolled_back(body: bytes, pos: int) -> str | None:
    """The message for a device past a log rollback (its records after ``after``
    are no longer in the engine's log), if ``body`` is that rollback's record."""
    try:
        ev = _decode_rollback(body)
    except msgspec.DecodeError:
        return None
    if ev.type != ROLLBACK_TYPE:
        return None
    return (
        f"the engine's log was rolled back to position {ev.data.get('after')} "
        f"(settings.log_rolled_back at {pos}): this device holds records the log no longer "
        "has; set this device up again (a new home) to follow the engine"
    )


def tampered(message: str) -> SynvoiceError:
    return SynvoiceError("tampered", message)


class DeviceAnchors:
    def __init__(self, meta: Any = None) -> None:
        m = meta if isinstance(meta, dict) else {}
        self.engine_key: str | None = m.get("engine_key")
        self.checkpoints: list[cps.Checkpoint] = []
        for d in m.get("checkpoints", []):
            try:
                self.checkpoints.append(cps.Checkpoint.from_dict(d))
            except cps.CheckpointError:
                continue
        self.hashes: dict[int, bytes] = {int(p): bytes(h) for p, h in m.get("hashes", [])}

    def to_meta(self) -> dict[str, Any]:
        return {
            "engine_key": self.engine_key,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "hashes": sorted(self.hashes.items()),
        }

    def receive(self, raw: Any) -> cps.Checkpoint | None:
        """A checkpoint from a pull reply: verified with the pinned key (pinned now if
        this is the first), kept; refused (``tampered``) if signed by another key."""
        if raw is None:
            return None
        try:
            cp = cps.Checkpoint.from_dict(raw)
            cp.verify(self.engine_key or cp.key)
        except cps.CheckpointError as exc:
            raise tampered(f"the engine's checkpoint is refused: {exc}") from None
        if self.engine_key is None:
            self.engine_key = cp.key
        if all(c.position != cp.position for c in self.checkpoints):
            self.checkpoints = sorted([*self.checkpoints, cp], key=lambda c: c.position)[-KEEP:]
        mine = self.hashes.get(cp.position)
        if mine is not None and mine != cp.hash:
            raise tampered(
                f"the engine's checkpoint at position {cp.position} (signed {cp.time}) "
                "disagrees with the log this device pulled before: the engine's log was rewritten"
            )
        return cp

    def check_page(self, page: PulledPage, after: int, held: int) -> None:
        """Check a page pulled after ``after`` (the device holds up to ``held``)."""
        self.receive(page.checkpoint)
        if page.head < held:
            raise tampered(
                f"the engine's log ends at position {page.head}, but this device already "
                f"holds position {held}: the engine's log lost records (a restored backup or "
                "a cut tail)"
            )
        hashes = page.hashes
        if hashes is None or not page.events:
            return
        if len(hashes) != len(page.events):
            raise tampered("the engine's pull reply has a hash per event missing")
        prev = GENESIS if after == 0 else self.hashes.get(after)
        prev_pos = after
        by_pos = {c.position: c for c in self.checkpoints}
        for raw, h in zip(page.events, hashes, strict=True):
            body = bytes(raw)
            try:
                pos = _decode_position(body).position
            except msgspec.DecodeError as exc:
                raise SynvoiceError("internal", f"malformed pull reply: {exc}") from None
            if pos <= after:
                continue  # an overlapping page: already checked
            if pos != prev_pos + 1 and not declared_gap(prev_pos, pos, body):
                raise tampered(
                    _rolled_back(body, pos)
                    or f"the engine's log has no record at position {prev_pos + 1}"
                )
            if prev is not None and link(prev, body) != h:
                raise tampered(
                    _rolled_back(body, pos)
                    or f"the engine's hash chain is broken at position {pos}"
                )
            cp = by_pos.get(pos)
            if cp is not None and cp.hash != h:
                raise tampered(
                    f"the engine's log at position {pos} disagrees with its checkpoint "
                    f"signed {cp.time}: the log was rewritten; this page is refused"
                )
            prev, prev_pos = bytes(h), pos
        if prev is not None:
            self.hashes[prev_pos] = prev
            for p in sorted(self.hashes)[:-RECENT]:
                del self.hashes[p]
