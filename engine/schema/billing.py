"""Event types of the Invoice Manager (batch billing), registered with the others.

None of them is a document event (``document=False``): the invoices billing makes
are ordinary ``document.*`` events written by the device agent; these events say
which sales exist, which rule sets pick them, and what happened when a sale was
invoiced. All are device-origin, so an enrolled device (the billing tool) may push
them; the engine's broker intake writes sales under the engine's own identity.
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from decimal import Decimal
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from engine.schema.common import MAX_NUMBER, Bool, Customer, Int, Line, Model
from engine.schema.registry import EventSpec, register

Action = Literal["email", "print", "create"]
ACTIONS: tuple[str, ...] = get_args(Action)
Channel = Literal["email", "print", "none"]
FilterOp = Literal["eq", "ne", "contains", "startswith", "in", "gt", "ge", "lt", "le", "exists"]
FILTER_OPS: tuple[str, ...] = get_args(FilterOp)
FailedStep = Literal["validate", "create", "render", "deliver"]

# Sale ids come from CRMs: letters, digits and a few separators.
SALE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
SCENARIO_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._@/-]{0,63}$"
FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
# Relative periods ("last month") or calendar ones ("2011-11"); see devices.billing.rules.
PERIOD = (
    r"^(today|yesterday|(this|last|next) (week|month|quarter|year)"
    r"|(last|next) [1-9][0-9]{0,3} days|[0-9]{4}|[0-9]{4}-(0[1-9]|1[0-2])|[0-9]{4}-Q[1-4])$"
)


class SaleRecorded(Model):
    """A sale (opportunity) as the CRM or an import file describes it now.

    Recording the same sale again with other content is a new version; the
    latest one (by log position) is current.
    """

    sale_id: str = Field(pattern=SALE_ID)
    customer: Customer
    lines: list[Line] = Field(min_length=1, max_length=1000)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    stage: str = Field(min_length=1, max_length=64)
    close_date: date | None = None
    approved: Bool = False
    title: str | None = Field(default=None, max_length=200)
    fields: dict[str, str] = Field(default_factory=dict, max_length=50)  # other CRM columns
    source: str | None = Field(default=None, max_length=200)  # "import:FILE", "broker", ...

    @field_validator("fields")
    @classmethod
    def _field_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not re.match(FIELD_NAME, k):
                raise ValueError(f"field name {k!r} must be letters, digits, '_', '.' or '-'")
            if len(val) > 1000:
                raise ValueError(f"field {k!r} is over 1000 characters")
        return v


class FieldFilter(Model):
    """One extra condition: ``field op value`` over a sale field or a custom column."""

    field: str = Field(pattern=FIELD_NAME)
    op: FilterOp = "eq"
    value: str = Field(default="", max_length=1000)


class ScenarioRules(Model):
    """Which sales a billing scenario picks (every given condition must hold)."""

    stages: list[str] = Field(default_factory=list, max_length=50)  # any of; empty = any
    close_from: date | None = None
    close_to: date | None = None
    period: str | None = Field(default=None, pattern=PERIOD)  # intersected with from/to
    approved: Bool | None = None
    customer: str | None = Field(default=None, max_length=200)  # substring, any case
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    min_total: Decimal | None = None
    max_total: Decimal | None = None
    where: list[FieldFilter] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _ranges(self) -> ScenarioRules:
        if self.close_from and self.close_to and self.close_from > self.close_to:
            raise ValueError("close_from is after close_to")
        if (
            self.min_total is not None
            and self.max_total is not None
            and self.min_total > self.max_total
        ):
            raise ValueError("min_total is above max_total")
        return self


class ScenarioSaved(Model):
    """A named billing scenario, created or edited (the latest save wins)."""

    name: str = Field(pattern=SCENARIO_NAME)
    description: str | None = Field(default=None, max_length=1000)
    rules: ScenarioRules
    default_action: Action = "email"


class ScenarioDeleted(Model):
    name: str = Field(pattern=SCENARIO_NAME)


class InvoiceProcessed(Model):
    """A sale was invoiced and (for email/print) delivered. At most one per sale:
    its event id derives from the sale id, so the engine stores it once."""

    sale_id: str = Field(pattern=SALE_ID)
    doc_id: uuid.UUID
    number: Int = Field(ge=1, le=MAX_NUMBER)
    action: Action
    channel: Channel
    recipient: str | None = Field(default=None, max_length=254)
    pdf: str | None = Field(default=None, max_length=1000)
    total: Decimal
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    scenario: str | None = Field(default=None, pattern=SCENARIO_NAME)


class DeliveryFailed(Model):
    """Processing a sale failed at ``step``; the sale shows Failed until a re-run succeeds."""

    sale_id: str = Field(pattern=SALE_ID)
    doc_id: uuid.UUID | None = None
    number: Int = Field(default=0, ge=0, le=MAX_NUMBER)
    action: Action
    step: FailedStep
    reason: str = Field(min_length=1, max_length=1000)
    pdf: str | None = Field(default=None, max_length=1000)
    scenario: str | None = Field(default=None, pattern=SCENARIO_NAME)


for _spec in (
    EventSpec("sale.recorded", SaleRecorded, document=False),
    EventSpec("billing.scenario_saved", ScenarioSaved, document=False),
    EventSpec("billing.scenario_deleted", ScenarioDeleted, document=False),
    EventSpec("billing.invoice_processed", InvoiceProcessed, document=False),
    EventSpec("billing.delivery_failed", DeliveryFailed, document=False),
):
    register(_spec)

BILLING_TYPES: frozenset[str] = frozenset(
    (
        "sale.recorded",
        "billing.scenario_saved",
        "billing.scenario_deleted",
        "billing.invoice_processed",
        "billing.delivery_failed",
    )
)
