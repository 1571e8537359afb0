"""What every request handler of the core shares: who asks, and the engine's own events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.events import Event, new_event
from engine.schema.common import ENGINE_DEVICE


@dataclass(frozen=True)
class Caller:
    device_id: str
    user: str
    admin: bool = False


def engine_event(type_: str, payload: Any) -> Event:
    """An event the engine writes itself (settings, numbering)."""
    return new_event(type_, payload, device_id=ENGINE_DEVICE, user=ENGINE_DEVICE, device_seq=0)
