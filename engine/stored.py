"""The one decoder of stored events: a log record's bytes to the current wire map.

The engine validated every event before it stored it, so readers of our own
hash-verified log (projections, replay, devices catching up) need only the
minimal checks here; events of an older schema version are upcast through
``parse_event``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.errors import SynvoiceError
from engine.events import parse_event
from engine.schema.registry import REGISTRY

_decode = msgspec.msgpack.Decoder().decode


class StoredEventError(SynvoiceError):
    """A stored record that cannot be used where it stands (malformed, misplaced,
    missing, out of order)."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__("internal", f"position {position}: {message}")
        self.position = position


def upcast(ev: dict[str, Any]) -> dict[str, Any]:
    """A stored event map of an older schema version in its current form (raises
    ``SynvoiceError`` for a type or version this code cannot read)."""
    return parse_event(ev, stored=True).to_wire()


def decode_stored(position: int, body: bytes) -> dict[str, Any]:
    """Decode the record at ``position``: a map that says it is at that position,
    in the current schema of its type."""
    try:
        ev = _decode(body)
    except (msgspec.DecodeError, ValueError) as exc:
        raise StoredEventError(position, f"record is not valid msgpack ({exc})") from None
    if type(ev) is not dict:
        raise StoredEventError(position, "record is not an event map")
    if ev.get("position") != position:
        raise StoredEventError(position, f"record says it is at position {ev.get('position')}")
    spec = REGISTRY.get(ev.get("type"))  # type: ignore[arg-type]
    if spec is not None and ev.get("schema_version") != spec.schema_version:
        try:
            ev = upcast(ev)
        except SynvoiceError as exc:
            raise StoredEventError(position, exc.message) from None
    out: dict[str, Any] = ev
    return out
