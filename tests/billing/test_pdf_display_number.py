"""The PDF prints the series' display number when it is given (number
patterns); the bare number otherwise."""

from __future__ import annotations

import dataclasses
import io

from pypdf import PdfReader

from devices.billing.pdf import InvoiceData, render
from tests.billing.test_documents_pdf import doc


def _text(inv: InvoiceData) -> str:
    return "".join(p.extract_text() for p in PdfReader(io.BytesIO(render(inv))).pages)


def test_pdf_prints_the_display_number() -> None:
    inv = dataclasses.replace(doc("Acme", "1 Road", "Work"), display_number="INV-2026-0042")
    text = _text(inv)
    assert "INV-2026-0042" in text
    bare = _text(dataclasses.replace(inv, display_number=None))
    assert "INV-2026-0042" not in bare and "42" in bare
