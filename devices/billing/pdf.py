"""Invoice PDFs with fpdf2: number, dates, seller, customer, lines, taxes, total.

Pure: returns the PDF bytes (the caller writes the file). The built-in PDF fonts
cover Latin-1 only, so other characters print as '?'.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from fpdf import FPDF

from engine.schema.common import Line, totals


@dataclass(frozen=True)
class InvoiceData:
    number: int
    issue_date: date
    due_date: date | None
    company: str
    customer: dict[str, Any]
    lines: list[Line]
    currency: str
    reference: str | None = None  # the sale id
    title: str | None = None
    display_number: str | None = None  # the series' number, e.g. INV-2026-0042 (patterns)


def _t(s: object) -> str:
    return str(s).encode("latin-1", "replace").decode("latin-1")


def money(v: Decimal) -> str:
    return f"{v.quantize(Decimal('0.01')):,.2f}"


def _qty(v: Decimal) -> str:
    return format(v.normalize(), "f")


# Layout in mm on A4. Text is placed with ``FPDF.text`` at computed positions:
# ``cell`` costs ~8x more per call, and PDF rendering is the largest cost of a run.
LEFT, RIGHT, BOTTOM = 20.0, 190.0, 275.0
COLS: tuple[tuple[str, float, str], ...] = (
    ("Description", LEFT, "L"),
    ("Qty", 118.0, "R"),
    ("Unit price", 146.0, "R"),
    ("Tax %", 164.0, "R"),
    ("Amount", RIGHT, "R"),
)


class _Page:
    def __init__(self, pdf: FPDF) -> None:
        self.pdf = pdf
        self.y = 25.0

    def font(self, style: str = "", size: float = 10) -> None:
        self.pdf.set_font("Helvetica", style, size)

    def text(self, x: float, s: str, align: str = "L") -> None:
        s = _t(s)
        if align == "R":
            x -= self.pdf.get_string_width(s)
        self.pdf.text(x, self.y, s)

    def down(self, mm: float) -> None:
        self.y += mm
        if self.y > BOTTOM:
            self.pdf.add_page()
            self.y = 25.0


def _fit(pdf: FPDF, s: str, width: float) -> str:
    s = _t(s)
    if pdf.get_string_width(s) <= width:
        return s
    while s and pdf.get_string_width(s + "...") > width:
        s = s[:-1]
    return s + "..."


def render(inv: InvoiceData) -> bytes:
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_title(f"Invoice {inv.display_number or inv.number}")
    pdf.set_creator("Synvoice")
    pdf.set_auto_page_break(auto=False)
    pdf.add_page()
    pg = _Page(pdf)

    pg.font("B", 20)
    pg.text(LEFT, f"Invoice {inv.display_number or inv.number}")
    pg.down(8)
    pg.font()
    pg.text(LEFT, inv.company)
    pg.down(10)
    info = [
        ("Invoice no.", str(inv.display_number or inv.number)),
        ("Date", inv.issue_date.isoformat()),
    ]
    if inv.due_date:
        info.append(("Due", inv.due_date.isoformat()))
    if inv.reference:
        info.append(("Reference", inv.reference))
    for label, value in info:
        pg.text(LEFT, label)
        pg.text(LEFT + 30, value)
        pg.down(6)
    pg.down(4)

    pg.font("B")
    pg.text(LEFT, "Bill to")
    pg.down(6)
    pg.font()
    c = inv.customer
    for part in (c.get("name"), c.get("address"), c.get("email"), c.get("tax_id")):
        for ln in str(part or "").splitlines():
            if ln.strip():
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
            _fit(pdf, line.description, 80),
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
    return bytes(pdf.output())
