"""Documents out of any device: PDF, e-mail, e-invoice, and credit notes.

The same renderer (``devices.billing.pdf``), e-invoice writer
(``devices.billing.einvoice``) and SMTP delivery (``devices.billing.delivery``
with ``devices.billing.config``) as batch billing: a document looks the same
whichever tool made it. Works on the device's local view (offline too); the
seller profile is the last one the device synced.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from devices.billing.config import BillingConfig
from devices.billing.delivery import DeliveryError, SmtpSender, build_message, check_address
from devices.billing.einvoice import EInvoiceError, export
from devices.billing.pdf import InvoiceData, UnprintableText, money, render
from devices.billing.render import write_atomic
from devices.seller import read_seller
from engine.crediting import credited_lines, plan_credit
from engine.document import DocumentView
from engine.errors import SynvoiceError
from engine.schema.common import Line, totals
from engine.schema.settings import SellerSet


def credit_notes_of(docs: Sequence[DocumentView], invoice_id: str) -> list[DocumentView]:
    """The credit notes that correct ``invoice_id``, oldest first."""
    found = [d for d in docs if d.kind == "credit_note" and d.credits == invoice_id]
    return sorted(found, key=lambda d: (d.created_at or "", d.doc_id))


def invoice_data(
    view: DocumentView,
    seller: SellerSet,
    docs: Sequence[DocumentView],
    today: date,
    display: Callable[[DocumentView], str] = lambda v: str(v.number),
) -> InvoiceData:
    """What the renderer needs for one document (``docs``: the device's others,
    for the credit-note links both ways; ``display``: a document's number as its
    series shows it, e.g. INV-2026-0042, which the PDF and e-invoice carry)."""
    if not view.number:
        raise SynvoiceError(
            "conflict", f"{view.kind} {view.doc_id[:8]} has no number yet (synvoice device assign)"
        )
    credited: str | None = None
    if view.credits:
        inv = next((d for d in docs if d.doc_id == view.credits), None)
        credited = display(inv) if inv is not None and inv.number else None
    # A void credit note credits nothing: the invoice does not name it.
    notes = [display(d) for d in live_credit_notes(docs, view.doc_id) if d.number]
    return InvoiceData(
        number=view.number,
        issue_date=date.fromisoformat(view.issue_date) if view.issue_date else today,
        due_date=date.fromisoformat(view.due_date) if view.due_date else None,
        seller=seller,
        customer=view.customer or {"name": "-"},
        lines=[Line.model_validate(x) for x in view.lines],
        currency=view.currency,
        kind=view.kind,
        notes=view.notes,
        payment_terms=view.payment_terms,
        credits_number=credited,
        credit_notes=notes,
        display_number=display(view),
    )


async def seller_of(agent: Any) -> SellerSet:
    seller = await read_seller(agent.store)
    if seller is None:
        raise SynvoiceError(
            "not_found",
            "no seller profile yet: set it with synvoice seller set --legal-name NAME ...",
        )
    return seller


async def data_of(agent: Any, doc_id: str, today: date | None = None) -> InvoiceData:
    view: DocumentView = agent.document(doc_id)
    if view.status == "void":
        raise SynvoiceError("conflict", f"{view.kind} {view.number} is void")
    return invoice_data(
        view,
        await seller_of(agent),
        agent.documents(),
        today or date.today(),
        agent.display_number,  # the series' pattern, e.g. INV-2026-0042
    )


def file_name(data: InvoiceData, suffix: str = ".pdf") -> str:
    """e.g. invoice-INV-2026-0042.pdf (a pattern's "/" and the like become "-")."""
    shown = re.sub(r"[^A-Za-z0-9._-]+", "-", data.shown).strip("-.") or str(data.number)
    return f"{data.kind.replace('_', '-')}-{shown}{suffix}"


def render_pdf(data: InvoiceData) -> bytes:
    """The document's PDF; text no embedded font can print is a clear refusal."""
    try:
        return render(data)
    except UnprintableText as exc:
        raise SynvoiceError("bad_request", f"cannot print {data.heading}: {exc}") from None


async def write_pdf(agent: Any, doc_id: str, out: Path | None = None) -> Path:
    data = await data_of(agent, doc_id)
    path = out or Path(file_name(data))
    write_atomic(path, render_pdf(data))
    return path


async def write_einvoice(agent: Any, doc_id: str, fmt: str, out: Path | None = None) -> Path:
    view: DocumentView = agent.document(doc_id)
    if view.status == "draft" and view.kind in ("invoice", "credit_note"):
        # An e-invoice goes to a tax system as issued: a draft may still change.
        raise SynvoiceError(
            "conflict",
            f"{view.kind.replace('_', ' ')} {_name(agent, view)} is a draft: issue it first "
            "(synvoice device issue DOC); its PDF can be made before",
        )
    data = await data_of(agent, doc_id)
    try:
        body, suffix = export(data, fmt)
    except (EInvoiceError, UnprintableText) as exc:
        raise SynvoiceError("bad_request", f"{data.heading}: {exc}") from None
    path = out or Path(file_name(data, suffix if fmt == "ubl" else ".facturx.pdf"))
    write_atomic(path, body)
    return path


@dataclass(frozen=True)
class Sent:
    to: str
    pdf_name: str


def send_blocking(data: InvoiceData, doc_id: str, to: str, cfg: BillingConfig) -> Sent:
    """Render and e-mail one document (blocking: SMTP I/O)."""
    problem = check_address(to)
    if problem:
        raise SynvoiceError("bad_request", problem)
    pdf = render_pdf(data)
    name = file_name(data)
    seller = data.seller.legal_name
    total = money(totals(data.lines)[2])
    body = (
        f"Dear {data.customer.get('name', 'customer')},\n\nplease find attached "
        f"{data.heading.lower()} of {data.issue_date.isoformat()} for {data.currency} {total}.\n\n"
        f"Kind regards,\n{seller}\n"
    )
    msg = build_message(
        cfg.smtp_from,
        to,
        f"{data.heading} from {seller}",
        body,
        pdf,
        name,
        f"<{doc_id}.{uuid.uuid4().hex[:8]}@synvoice>",  # each sending is a new message
    )
    sender = SmtpSender(cfg)
    try:
        sender.send(msg, to)
    except DeliveryError as exc:
        raise SynvoiceError("unavailable", str(exc)) from None
    finally:
        sender.close()
    return Sent(to, name)


def live_credit_notes(docs: Sequence[DocumentView], invoice_id: str) -> list[DocumentView]:
    """The credit notes of ``invoice_id`` that count: a void one credits nothing."""
    return [d for d in credit_notes_of(docs, invoice_id) if d.status != "void"]


def credited_of(docs: Sequence[DocumentView], invoice: DocumentView) -> list[int]:
    """The invoice's lines (1-based) that its live credit notes credit."""
    notes = live_credit_notes(docs, invoice.doc_id)
    return credited_lines(invoice.lines, [cn.lines for cn in notes])


def _name(agent: Any, view: DocumentView) -> str:
    """As the user sees it: the display number, else a short id (not numbered yet)."""
    return str(agent.display_number(view)) if view.number else view.doc_id[:8]


def _numbered(word: str, items: Sequence[str]) -> str:
    """ "line 2" or "lines 2, 3" (repeats once)."""
    unique = list(dict.fromkeys(items))
    return f"{word}{'s' if len(unique) > 1 else ''} {', '.join(unique)}"


async def credit(
    agent: Any, invoice_id: str, line_numbers: Sequence[int] = (), *, force: bool = False
) -> DocumentView:
    """A credit note for an issued invoice: the lines not credited yet, or the chosen
    ones (1-based). A line already credited is refused unless ``force``, and a forced
    credit says so in its notes, in words the customer can read on the PDF (the
    event has no field for it)."""
    inv: DocumentView = agent.document(invoice_id)
    if inv.kind != "invoice":
        raise SynvoiceError("bad_request", f"only invoices are credited, not a {inv.kind}")
    number = _name(agent, inv)
    if inv.status != "issued":
        raise SynvoiceError("conflict", f"invoice {number} is {inv.status}, not issued")
    lines = list(inv.lines)
    if not lines:
        raise SynvoiceError("bad_request", f"invoice {number} has no lines to credit")
    wanted: list[int] | None = None
    if line_numbers:
        bad = [n for n in line_numbers if not 1 <= n <= len(lines)]
        if bad:
            raise SynvoiceError(
                "bad_request", f"invoice {number} has lines 1..{len(lines)}, not {bad[0]}"
            )
        wanted = [n - 1 for n in dict.fromkeys(line_numbers)]
    earlier = live_credit_notes(agent.documents(), inv.doc_id)
    plan = plan_credit(lines, [cn.lines for cn in earlier], wanted)
    chosen = plan.lines
    forced = ""
    if wanted is None and not chosen:
        names = _numbered("credit note", [_name(agent, cn) for cn in earlier])
        if not force:
            raise SynvoiceError(
                "conflict",
                f"invoice {number} is fully credited by {names} (--force credits it again)",
            )
        chosen = list(range(len(lines)))
        forced = f" (credited before by {names})"
    elif plan.over:
        over = sorted(plan.over)
        nums = _numbered("line", [str(pos + 1) for pos in over])
        names = _numbered("credit note", [_name(agent, earlier[plan.over[pos]]) for pos in over])
        if not force:
            verb = "is" if len(plan.over) == 1 else "are"
            raise SynvoiceError(
                "conflict",
                f"{nums} of invoice {number} {verb} already credited by {names} "
                "(--force credits again)",
            )
        forced = f" ({nums} credited before by {names})"
    view: DocumentView = await agent.create(
        "credit_note",
        inv.customer,
        [lines[pos] for pos in chosen],
        currency=inv.currency,
        issue_date=date.today(),
        notes=f"Credit note for invoice {number}{forced}",
        credits=inv.doc_id,
    )
    return view
