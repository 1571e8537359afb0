"""Document payloads (devices author them) and their registration."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from pydantic import Field

from engine.schema.common import MAX_NUMBER, Bool, Customer, Int, Kind, Line, Model, NumberSource
from engine.schema.registry import EventSpec, register


class DocumentCreated(Model):
    number: Int = Field(default=0, ge=0, le=MAX_NUMBER)  # 0 = not assigned yet
    number_source: NumberSource = "device"
    customer: Customer | None = None
    lines: list[Line] = Field(default_factory=list, max_length=1000)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    issue_date: date | None = None
    due_date: date | None = None
    notes: str | None = Field(default=None, max_length=4000)
    converted_from: uuid.UUID | None = None  # the quote/estimate this invoice came from
    credits: uuid.UUID | None = None  # a credit note: the issued invoice it corrects
    payment_terms: str | None = Field(default=None, max_length=500)  # overrides the seller's
    # A number typed although the device knew it was in use (a duplicate acknowledged);
    # absent (not false) otherwise, so other events keep their canonical form.
    forced: Bool = Field(default=False, exclude_if=lambda v: not v)


class CustomerChanged(Model):
    customer: Customer


class LinesChanged(Model):
    lines: list[Line] = Field(max_length=1000)


class DatesChanged(Model):
    issue_date: date | None = None
    due_date: date | None = None


class NumberAssigned(Model):
    number: Int = Field(ge=0, le=MAX_NUMBER)
    source: NumberSource
    previous: Int | None = Field(default=None, ge=0)
    forced: Bool = Field(default=False, exclude_if=lambda v: not v)  # see DocumentCreated


class Issued(Model):
    pass


class Voided(Model):
    reason: str | None = Field(default=None, max_length=1000)


class Converted(Model):
    """A quote or estimate became an invoice (the invoice's own ``document.created``
    carries ``converted_from``)."""

    invoice_id: uuid.UUID


class DocumentCreatedV1(Model):
    """``document.created`` schema 1: the customer was a name only."""

    number: Int = Field(default=0, ge=0, le=MAX_NUMBER)
    number_source: NumberSource = "device"
    customer_name: str | None = Field(default=None, min_length=1, max_length=200)
    lines: list[Line] = Field(default_factory=list, max_length=1000)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    issue_date: date | None = None
    due_date: date | None = None
    notes: str | None = Field(default=None, max_length=4000)
    converted_from: uuid.UUID | None = None


class GapExplained(Model):
    """Someone looked at missing numbers and wrote down why (e.g. spoiled paper
    forms): the gap report shows it as explained. Not a document's event."""

    kind: Kind
    series: str = Field(default="", max_length=64)
    first: Int = Field(ge=1, le=MAX_NUMBER)
    last: Int = Field(ge=1, le=MAX_NUMBER)
    reason: str = Field(min_length=1, max_length=500)
    # The period of a resetting series ("2026", "2026-03"; "" : never resets).
    period: str = Field(default="", max_length=16)


def _created_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # Schema 1 carried only a customer name; schema 2 has a customer object.
    data = dict(data)
    name = data.pop("customer_name", None)
    if name is not None and "customer" not in data:
        data["customer"] = {"name": name}
    return data


for _spec in (
    EventSpec(
        "document.created",
        DocumentCreated,
        schema_version=2,
        upcasters={1: _created_v1_to_v2},
        old_models={1: DocumentCreatedV1},
    ),
    EventSpec("document.customer_changed", CustomerChanged),
    EventSpec("document.lines_changed", LinesChanged),
    EventSpec("document.dates_changed", DatesChanged),
    EventSpec("document.number_assigned", NumberAssigned),
    EventSpec("document.issued", Issued),
    EventSpec("document.voided", Voided),
    EventSpec("document.converted", Converted),
    EventSpec("numbering.gap_explained", GapExplained, document=False),
):
    register(_spec)
