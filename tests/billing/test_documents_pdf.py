"""The PDF renderer: Unicode text as written (pypdf reads it back), seller details,
credit-note links, a clear failure for what no font can print, a PNG artefact."""

# Non-Latin letters that look like Latin ones are the point of these tests.
# ruff: noqa: RUF001

from __future__ import annotations

import dataclasses
import os
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.billing import fonts
from devices.billing.pdf import InvoiceData, UnprintableText, render
from devices.seller import merged
from engine.errors import SynvoiceError
from engine.schema.common import Line
from engine.schema.settings import SellerSet
from tests.support.pdftext import pdf_text, png_of_first_page

ARTIFACTS = Path(os.environ.get("SYNVOICE_TEST_ARTIFACTS", "test-artifacts"))

SELLER = SellerSet(
    legal_name="Beispiel Beratung GmbH",
    address="Hauptstraße 1\n10115 Berlin",
    country="DE",
    vat_id="DE123456788",
    registration="HRB 12345, Amtsgericht Berlin",
    email="rechnung@beispiel.test",
    phone="+49 30 1234567",
    iban="DE89370400440532013000",
    bic="COBADEFFXXX",
    payment_terms="14 Tage netto",
)

# (customer, address, line description) per script
CUSTOMERS = {
    "german": (
        "Müller & Söhne KG",
        "Königsallee 9\n40212 Düsseldorf",
        "Beratung – Phase 2 (€ pauschal)",
    ),
    "greek": ("Ελληνική Εταιρεία Α.Ε.", "Οδός Ερμού 10\n105 63 Αθήνα", "Συμβουλευτικές υπηρεσίες"),
    "russian": ("ООО «Ромашка»", "ул. Тверская, 7\nМосква", "Консультационные услуги"),
    "japanese": ("株式会社テスト", "東京都千代田区1-2-3", "コンサルティング業務"),
}


def doc(customer: str, address: str, desc: str, **kw: object) -> InvoiceData:
    base = InvoiceData(
        number=42,
        issue_date=date(2026, 3, 1),
        due_date=date(2026, 3, 15),
        seller=SELLER,
        customer={"name": customer, "address": address},
        lines=[
            Line(
                description=desc,
                quantity=Decimal(2),
                unit_price=Decimal("150"),
                tax_rate=Decimal(19),
            ),
            Line(description="Reisekosten", quantity=Decimal(1), unit_price=Decimal("80.50")),
        ],
        currency="EUR",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("script", sorted(CUSTOMERS))
def test_customer_and_lines_print_as_written(script: str) -> None:
    name, address, desc = CUSTOMERS[script]
    text = pdf_text(render(doc(name, address, desc)))
    for part in (name, *address.splitlines(), desc, "Invoice 42", "Total EUR 437.50"):
        assert part in text, (part, text)
    assert "?" not in text


def test_seller_profile_and_payment_details_on_every_pdf() -> None:
    text = pdf_text(render(doc(*CUSTOMERS["german"])))
    for part in (
        "Beispiel Beratung GmbH",
        "Hauptstraße 1",
        "VAT ID DE123456788",
        "HRB 12345, Amtsgericht Berlin",
        "rechnung@beispiel.test",
        "Payment terms: 14 Tage netto",
        "IBAN DE89370400440532013000, BIC COBADEFFXXX",
    ):
        assert part in text, part
    # a document's own terms win over the seller's
    own = pdf_text(render(doc(*CUSTOMERS["german"], payment_terms="Vorkasse")))
    assert "Payment terms: Vorkasse" in own and "14 Tage" not in own


def test_kinds_and_credit_note_links() -> None:
    cn = pdf_text(
        render(
            doc(*CUSTOMERS["greek"], kind="credit_note", number=3, credits_number="INV-2026-0042")
        )
    )
    assert "Credit note 3" in cn and "Credit note for invoice INV-2026-0042" in cn
    inv = pdf_text(render(doc(*CUSTOMERS["greek"], credit_notes=["3", "4"])))
    assert "Credited by credit note 3, 4" in inv
    assert "Quote 42" in pdf_text(render(doc(*CUSTOMERS["russian"], kind="quote")))


@pytest.mark.parametrize(
    "text, shown",
    [("Emoji 😀", "U+1F600"), ("ไทย", "U+0E44"), ("Hebrew שלום", "U+05E9")],
)
def test_what_no_font_prints_fails_with_the_characters_named(text: str, shown: str) -> None:
    with pytest.raises(UnprintableText, match=re.escape(shown)):
        render(doc(text, "x", "y"))
    with pytest.raises(UnprintableText):
        render(doc("ok", "x", text))


def test_fonts_come_from_packages_and_are_embedded() -> None:
    files = fonts.font_files()
    assert files.regular.is_file() and files.cjk.is_file()
    pdf = render(doc(*CUSTOMERS["japanese"]))
    assert b"/FontFile2" in pdf and b"/FontFile3" in pdf  # TrueType and CFF, embedded
    assert b"/Helvetica" not in pdf


def test_a_page_as_png_for_the_readme() -> None:
    name, address, desc = CUSTOMERS["german"]
    rows = [
        (desc, "2", "150", "19"),
        ("Übersetzung ins Japanische: 株式会社テスト", "1", "95", "19"),
        ("Ελληνικά / Русский", "3", "12.40", "7"),
    ]
    lines = [
        Line(description=d, quantity=Decimal(q), unit_price=Decimal(p), tax_rate=Decimal(t))
        for d, q, p, t in rows
    ]
    inv = doc(name, address, desc, lines=lines)
    png = png_of_first_page(render(inv), ARTIFACTS / "invoice-example.png", scale=1.0)
    assert png.stat().st_size > 10_000
    assert png.read_bytes().startswith(b"\x89PNG")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(min_size=1, max_size=60), desc=st.text(min_size=1, max_size=300))
def test_any_text_prints_or_fails_with_a_reason(name: str, desc: str) -> None:
    """Whatever a customer or line says: a PDF, or UnprintableText; nothing else."""
    try:
        pdf = render(doc(name, "x", desc))
    except UnprintableText as exc:
        assert "U+" in str(exc)
    else:
        assert pdf.startswith(b"%PDF")


@settings(max_examples=60, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(["legal_name", "vat_id", "iban", "bic", "country", "email", "logo"]),
        st.text(max_size=40),
    )
)
def test_seller_changes_are_a_profile_or_a_clear_refusal(changes: dict[str, str]) -> None:
    try:
        profile = merged(SELLER, changes)
    except SynvoiceError as exc:
        assert exc.code == "bad_request" and exc.message
    else:
        assert profile.legal_name
