"""The registry of event types: who may author each, its schema version, upcasters."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

Origin = Literal["device", "engine"]
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class EventSpec:
    type: str
    model: builtins.type[BaseModel]
    schema_version: int = 1
    origin: Origin = "device"  # who may author it: a device push, or the engine itself
    document: bool = True  # needs doc_id and kind
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)  # from_version -> fn
    # The payload model of each older version (the wire spec publishes them; a
    # test checks that each upcasts into a valid current payload).
    old_models: Mapping[int, builtins.type[BaseModel]] = field(default_factory=dict)


REGISTRY: dict[str, EventSpec] = {}


def register(spec: EventSpec) -> EventSpec:
    if spec.type in REGISTRY:
        raise ValueError(f"event type {spec.type!r} registered twice")
    REGISTRY[spec.type] = spec
    return spec
