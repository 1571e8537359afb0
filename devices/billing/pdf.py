"""Document PDFs with fpdf2: seller, customer, lines, taxes, totals, payment details.

Pure: returns the PDF bytes (the caller writes the file). One renderer for
every kind (invoice, quote, estimate, credit note) and every caller (batch
billing, ``synvoice device pdf|send|einvoice``). Text prints in embedded
Unicode fonts (``devices.billing.fonts``); a character no font has fails the
document with ``UnprintableText`` before anything is drawn.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from fpdf import FPDF
from fpdf.enums import TextMode

from devices.billing import fonts
from devices.billing.fonts import UnprintableText
from engine.schema.common import Line, totals
from engine.schema.settings import SellerSet

__all__ = ["KIND_TITLES", "InvoiceData", "UnprintableText", "money", "render"]

KIND_TITLES = {
    "invoice": "Invoice",
    "quote": "Quote",
    "estimate": "Estimate",
    "credit_note": "Credit note",
}


@dataclass(frozen=True)
class InvoiceData:
    number: int
    issue_date: date
    due_date: date | None
    seller: SellerSet
    customer: dict[str, Any]
    lines: list[Line]
    currency: str
    reference: str | None = None  # the sale id
    title: str | None = None
    kind: str = "invoice"
    notes: str | None = None
    payment_terms: str | None = None  # the document's own, else the seller's
    # A credit note: the number of the invoice it corrects; an invoice: its credit
    # notes' numbers. As their series show them (display numbers).
    credits_number: str | None = None
    credit_notes: list[str] = field(default_factory=list)
    display_number: str | None = None  # the series' number, e.g. INV-2026-0042 (patterns)

    @property
    def shown(self) -> str:
        """The number as printed and sent: the display number, else the bare one."""
        return self.display_number or str(self.number)

    @property
    def heading(self) -> str:
        return f"{KIND_TITLES.get(self.kind, self.kind)} {self.shown}"

    @property
    def terms(self) -> str | None:
        return self.payment_terms or self.seller.payment_terms


def money(v: Decimal) -> str:
    return f"{v.quantize(Decimal('0.01')):,.2f}"


def _qty(v: Decimal) -> str:
    return format(v.normalize(), "f")


# Layout in mm on A4. Text is placed with ``FPDF.text`` at computed positions:
# ``cell`` costs ~8x more per call, and PDF rendering is the largest cost of a run.
LEFT, RIGHT, BOTTOM = 20.0, 190.0, 275.0
SELLER_X = 120.0
COLS: tuple[tuple[str, float, str], ...] = (
    ("Description", LEFT, "L"),
    ("Qty", 118.0, "R"),
    ("Unit price", 146.0, "R"),
    ("Tax %", 164.0, "R"),
    ("Amount", RIGHT, "R"),
)


def _seller_lines(s: SellerSet) -> list[str]:
    out = [s.legal_name]
    out += [ln for ln in (s.address or "").splitlines() if ln.strip()]
    if s.country:
        out.append(s.country)
    if s.vat_id:
        out.append(f"VAT ID {s.vat_id}")
    if s.tax_id:
        out.append(f"Tax no. {s.tax_id}")
    if s.email:
        out.append(s.email)
    if s.phone:
        out.append(s.phone)
    return out


def _footer_lines(inv: InvoiceData) -> list[str]:
    s = inv.seller
    out: list[str] = []
    if inv.terms:
        out.append(f"Payment terms: {inv.terms}")
    if s.iban:
        out.append(f"Bank: IBAN {s.iban}" + (f", BIC {s.bic}" if s.bic else ""))
    if s.registration:
        out.append(s.registration)
    return out


def _customer_lines(c: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for part in (c.get("name"), c.get("address"), c.get("country"), c.get("email")):
        out += [ln for ln in str(part or "").splitlines() if ln.strip()]
    if c.get("tax_id"):
        out.append(f"VAT ID {c['tax_id']}")
    return out


def _all_text(inv: InvoiceData) -> Iterator[str]:
    yield inv.heading
    yield from _seller_lines(inv.seller)
    yield from _footer_lines(inv)
    yield from _customer_lines(inv.customer)
    for s in (inv.reference, inv.title, inv.notes):
        if s:
            yield s
    for ln in inv.lines:
        yield ln.description


_BLANKS = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


class _Page:
    def __init__(self, pdf: FPDF, mixed: bool) -> None:
        self.pdf = pdf
        self.y = 25.0
        self.style = ""
        self.size = 10.0
        self.mixed = mixed  # some text needs the CJK font

    def font(self, style: str = "", size: float = 10) -> None:
        """Bold is the regular face filled and stroked (see ``fonts``)."""
        self.style, self.size = style, size
        self.pdf.set_font(fonts.MAIN, "", size)

    def width(self, s: str) -> float:
        bold = 1.03 if "B" in self.style else 1.0  # the stroke widens the glyphs a little
        if not self.mixed:
            return float(self.pdf.get_string_width(s)) * bold
        w = 0.0
        for fam, part in fonts.runs(s):
            self.pdf.set_font(fam, "", self.size)
            w += self.pdf.get_string_width(part)
        self.pdf.set_font(fonts.MAIN, "", self.size)
        return w * bold

    def text(self, x: float, s: str, align: str = "L") -> None:
        s = s.translate(_BLANKS)  # one line: line breaks and tabs print as spaces
        if align == "R":
            x -= self.width(s)
        if "B" in self.style:
            # In q/Q: fpdf2 never resets the text render mode itself.
            with self.pdf.local_context(text_mode=TextMode.FILL_STROKE, line_width=0.2):
                self._draw(x, s)
        else:
            self._draw(x, s)

    def _draw(self, x: float, s: str) -> None:
        if not self.mixed:
            self.pdf.text(x, self.y, s)
            return
        for fam, part in fonts.runs(s):
            self.pdf.set_font(fam, "", self.size)
            self.pdf.text(x, self.y, part)
            x += self.pdf.get_string_width(part)
        self.pdf.set_font(fonts.MAIN, "", self.size)

    def down(self, mm: float) -> None:
        self.y += mm
        if self.y > BOTTOM:
            self.pdf.add_page()
            self.y = 25.0

    def fit(self, s: str, width: float) -> str:
        s = s.translate(_BLANKS)
        if self.width(s) <= width:
            return s
        s = s[: int(width)]  # no glyph is narrower than 1 mm at these sizes
        while s and self.width(s + "...") > width:
            s = s[:-1]
        return s + "..."


def new_pdf(inv: InvoiceData, *, pdfa: bool = False) -> FPDF:
    """An FPDF with the document's fonts installed (PDF/A-3B for Factur-X)."""
    texts = list(_all_text(inv))
    fonts.check_printable(texts)
    pdf = FPDF(format="A4", unit="mm", enforce_compliance="PDF/A-3B" if pdfa else None)
    pdf.set_title(inv.heading)
    pdf.set_creator("Synvoice")
    pdf.set_auto_page_break(auto=False)
    fonts.install(pdf, cjk=fonts.needs_cjk(texts))
    pdf.set_line_width(0.2)
    return pdf


def render(inv: InvoiceData, *, pdfa: bool = False) -> bytes:
    pdf = new_pdf(inv, pdfa=pdfa)
    pdf.add_page()
    pg = _Page(pdf, mixed=fonts.CJK in pdf.fonts)

    if inv.seller.logo:
        try:
            pdf.image(io.BytesIO(base64.b64decode(inv.seller.logo)), x=LEFT, y=10, h=12)
        except Exception as exc:  # a logo fpdf2 cannot read: the document says why
            raise UnprintableText(f"the seller logo cannot be printed: {exc}") from None
        pg.y = 30.0
    pg.font("B", 20)
    pg.text(LEFT, inv.heading)
    pg.font("", 9)
    sy = pg.y
    for ln in _seller_lines(inv.seller):
        pg.text(SELLER_X, ln)
        pg.y += 4.5
    seller_end = pg.y
    pg.y = sy + 10
    pg.font()
    info = [("Number", inv.shown), ("Date", inv.issue_date.isoformat())]
    if inv.due_date and inv.kind != "credit_note":
        info.append(("Due", inv.due_date.isoformat()))
    if inv.reference:
        info.append(("Reference", inv.reference))
    for label, value in info:
        pg.text(LEFT, label)
        pg.text(LEFT + 30, value)
        pg.down(6)
    if inv.credits_number is not None:
        pg.font("B")
        pg.text(LEFT, f"Credit note for invoice {inv.credits_number}")
        pg.font()
        pg.down(6)
    if inv.credit_notes:
        nums = ", ".join(inv.credit_notes)
        pg.text(LEFT, f"Credited by credit note {nums}")
        pg.down(6)
    pg.y = max(pg.y, seller_end) + 4

    pg.font("B")
    pg.text(LEFT, "Bill to")
    pg.down(6)
    pg.font()
    for ln in _customer_lines(inv.customer):
        pg.text(LEFT, ln)
        pg.down(5)
    if inv.title:
        pg.down(2)
        pg.text(LEFT, inv.title)
        pg.down(5)
    pg.down(6)

    def header() -> None:
        pg.font("B")
        for name, x, align in COLS:
            pg.text(x, name, align)
        pdf.line(LEFT, pg.y + 2, RIGHT, pg.y + 2)
        pg.font()
        pg.down(7)

    header()
    for line in inv.lines:
        cells = (
            pg.fit(line.description, 80),
            _qty(line.quantity),
            money(line.unit_price),
            _qty(line.tax_rate),
            money(line.net),
        )
        for (_, x, align), text in zip(COLS, cells, strict=True):
            pg.text(x, text, align)
        pg.down(6)
        if pg.y == 25.0:  # a new page: repeat the column titles
            header()

    net, tax, gross = totals(inv.lines)
    pg.down(3)
    for label, amount, style in (
        ("Subtotal", net, ""),
        ("Tax", tax, ""),
        (f"Total {inv.currency}", gross, "B"),
    ):
        pg.font(style)
        pg.text(COLS[3][1], label, "R")
        pg.text(RIGHT, money(amount), "R")
        pg.down(6)

    pg.down(6)
    pg.font("", 9)
    for ln in _footer_lines(inv) + [ln for ln in (inv.notes or "").splitlines() if ln.strip()]:
        pg.text(LEFT, pg.fit(ln, RIGHT - LEFT))
        pg.down(5)
    return bytes(pdf.output())
