"""The event model: validation, normalisation, upcasting (pure, no server)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.errors import SynvoiceError
from engine.events import new_event, parse_event
from engine.schema.common import Line
from engine.schema.documents import DocumentCreated


def raw_created(**over: Any) -> dict[str, Any]:
    ev = {
        "event_id": str(uuid.uuid4()),
        "type": "document.created",
        "schema_version": 2,
        "doc_id": str(uuid.uuid4()),
        "kind": "invoice",
        "device_id": "dev-1",
        "user": "alice",
        "device_seq": 1,
        "device_time": datetime.now(UTC).isoformat(),
        "data": {
            "number": 3,
            "lines": [{"description": "x", "quantity": "2", "unit_price": "9.5"}],
        },
    }
    ev.update(over)
    return ev


def test_valid_event_is_normalised() -> None:
    ev = parse_event(raw_created())
    p = ev.payload(DocumentCreated)
    assert p.number == 3
    assert ev.data["lines"][0]["unit_price"] == "9.5"
    assert ev.data["currency"] == "USD"


def test_schema_v1_is_upcast() -> None:
    ev = parse_event(raw_created(schema_version=1, data={"customer_name": "Acme"}))
    assert ev.schema_version == 2
    assert ev.payload(DocumentCreated).customer is not None
    assert ev.data["customer"]["name"] == "Acme"


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"type": "document.exploded"}, "unknown_type"),
        ({"kind": "receipt"}, "schema"),
        ({"doc_id": None}, "schema"),
        ({"event_id": "not-a-uuid"}, "schema"),
        ({"device_time": "2026-01-01T00:00:00"}, "schema"),  # no time zone
        ({"data": {"number": -1}}, "schema"),
        ({"data": {"lines": [{"description": "", "quantity": 1, "unit_price": 1}]}}, "schema"),
        ({"data": {"surprise": 1}}, "schema"),
        ({"schema_version": 99}, "schema"),
        ({"position": 5}, "forbidden"),
    ],
)
def test_bad_events_are_refused(over: dict[str, Any], code: str) -> None:
    with pytest.raises(SynvoiceError) as err:
        parse_event(raw_created(**over))
    assert err.value.code == code


def test_wire_round_trip() -> None:
    ev = new_event(
        "document.created",
        DocumentCreated(number=1, lines=[Line(description="a", quantity=1, unit_price=2)]),
        device_id="dev-1",
        user="alice",
        device_seq=1,
        doc_id=uuid.uuid4(),
        kind="quote",
    )
    again = parse_event(ev.to_wire())
    assert again.to_wire() == ev.to_wire()
