"""The PDF prints the series' display number when it is given (the hook for
number patterns); the bare number otherwise."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

from pypdf import PdfReader

from devices.billing.pdf import InvoiceData, render
from engine.schema.common import Line


def _text(inv: InvoiceData) -> str:
    return "".join(p.extract_text() for p in PdfReader(io.BytesIO(render(inv))).pages)


def test_pdf_prints_the_display_number() -> None:
    inv = InvoiceData(
        number=42,
        issue_date=date(2026, 3, 4),
        due_date=None,
        company="Synvoice GmbH",
        customer={"name": "Acme"},
        lines=[Line(description="Work", quantity=Decimal(1), unit_price=Decimal(10))],
        currency="EUR",
        display_number="INV-2026-0042",
    )
    assert "Invoice INV-2026-0042" in _text(inv)
    bare = InvoiceData(**{**inv.__dict__, "display_number": None})
    assert "Invoice 42" in _text(bare)
