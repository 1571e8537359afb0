"""One processing run: create invoices, render PDFs, deliver, record outcomes.

Order (why):
1. sales with a problem known up front (no usable e-mail address) fail at
   ``validate`` without creating an invoice, so fixing the address and
   re-running makes the invoice with the right customer data;
2. the other invoices are created on the device agent in one go (doc id
   uuid5(sale id)) and pushed with one sync, so every number is known before
   any PDF is made;
3. PDFs are rendered in worker processes for large runs (threads otherwise)
   and delivered from threads, one SMTP session per thread;
4. outcomes are recorded every ``flush_every`` sales (so a crash re-delivers
   at most that many) and delivered invoices are marked issued on the device.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

from devices.billing import ids
from devices.billing.config import BillingConfig
from devices.billing.delivery import DeliveryError, SmtpSender, check_address, print_pdf
from devices.billing.home import BillingHome
from devices.billing.invoicer import InvoiceBackend
from devices.billing.outcomes import Outcome, failed, outcome_event
from devices.billing.pdf import InvoiceData, money
from devices.billing.plan import Plan, Work
from devices.billing.remote import EngineLink
from devices.billing.render import (
    Mail,
    Prepared,
    RenderJob,
    prepare,
    process_count,
    process_pool,
)
from engine.document import DocumentView
from engine.errors import SynvoiceError
from engine.schema.common import Line, totals
from engine.schema.settings import SellerSet

CREATE_CHUNK = 200  # invoices created concurrently on the agent (one store transaction)


class Reporter(Protocol):
    """Progress sink (the CLI shows rich progress bars; tests pass None)."""

    def phase(self, name: str, total: int) -> None: ...

    def advance(self, name: str, n: int = 1) -> None: ...


class _Quiet:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, n: int = 1) -> None:
        pass


@dataclass
class RunResult:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0
    created: int = 0
    reused: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ok = sum(1 for o in self.outcomes if o.ok)
        return {
            "processed": ok,
            "failed": len(self.outcomes) - ok,
            "already_processed": self.skipped,
            "invoices_created": self.created,
            "invoices_reused": self.reused,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


@dataclass(frozen=True)
class RunContext:
    home: BillingHome
    cfg: BillingConfig
    scenario: str | None
    today: date
    seller: SellerSet | None = None  # the profile in force (else the configured company)
    einvoice: str | None = None  # also write this e-invoice format ("ubl" | "facturx")
    # The invoice's display number (number patterns); None: the bare number.
    display: Callable[[DocumentView], str] | None = None

    @property
    def seller_profile(self) -> SellerSet:
        return self.seller or SellerSet(legal_name=self.cfg.company)


def render_job(work: Work, doc: DocumentView, ctx: RunContext) -> RenderJob:
    sale = work.sale
    lines = [Line.model_validate(x) for x in doc.lines]
    total = totals(lines)[2]
    shown = ctx.display(doc) if ctx.display else str(doc.number)  # as the PDF prints it
    path = ctx.home.pdf_dir / f"invoice-{doc.number}-{ids.safe_name(sale.sale_id)}.pdf"
    mail = None
    if work.action == "email" and sale.customer.email:
        company = ctx.seller_profile.legal_name
        mail = Mail(
            sender=ctx.cfg.smtp_from,
            to=sale.customer.email,
            subject=f"Invoice {shown} from {company}",
            body=(
                f"Dear {sale.customer.name},\n\nplease find attached invoice {shown} "
                f"of {doc.issue_date or ctx.today} for {doc.currency} {money(total)}.\n\n"
                f"Kind regards,\n{company}\n"
            ),
            message_id=f"<{doc.doc_id}@synvoice>",
        )
    return RenderJob(
        InvoiceData(
            number=doc.number,
            issue_date=date.fromisoformat(doc.issue_date) if doc.issue_date else ctx.today,
            due_date=date.fromisoformat(doc.due_date) if doc.due_date else None,
            seller=ctx.seller_profile,
            customer=doc.customer or sale.customer.model_dump(mode="json"),
            lines=lines,
            currency=doc.currency,
            reference=sale.sale_id,
            title=sale.title,
            display_number=shown if ctx.display else None,
        ),
        str(path),
        mail,
        ctx.einvoice,
    )


def deliver(
    work: Work,
    doc: DocumentView,
    job: RenderJob,
    prep: Prepared,
    ctx: RunContext,
    sender: SmtpSender,
) -> Outcome:
    """Deliver one rendered invoice (blocking: runs in a worker thread)."""
    base: dict[str, Any] = {
        "number": doc.number,
        "doc_id": doc.doc_id,
        "total": totals(job.data.lines)[2],
        "pdf": prep.path,
    }
    try:
        if work.action == "email":
            to = work.sale.customer.email
            problem = check_address(to)
            if problem or to is None or prep.message is None:
                return failed(work, "validate", problem or "no e-mail address", **base)
            sender.send(prep.message, to)
            return Outcome(work=work, ok=True, channel="email", recipient=to, **base)
        if work.action == "print":
            where = print_pdf(Path(prep.path), ctx.cfg, ctx.home.spool_dir(ctx.cfg))
            return Outcome(work=work, ok=True, channel="print", recipient=where, **base)
        return Outcome(work=work, ok=True, channel="none", **base)
    except DeliveryError as exc:
        return failed(work, "deliver", str(exc), **base)
    except Exception as exc:  # e.g. smtplib's UnicodeEncodeError, a print command's
        # PermissionError: one sale's failure must not abort the run, or the sales
        # already delivered in it would go unrecorded and be sent again next run.
        return failed(work, "deliver", f"{type(exc).__name__}: {exc}", **base)


async def run(
    plan: Plan,
    *,
    backend: InvoiceBackend,
    link: EngineLink,
    ctx: RunContext,
    reporter: Reporter | None = None,
    flush_every: int = 200,
) -> RunResult:
    rep = reporter or _Quiet()
    res = RunResult(skipped=len(plan.skipped))
    t0 = time.perf_counter()
    pending: list[Outcome] = []
    work_ready: list[Work] = []
    for w in plan.todo:
        if w.problem and not w.existing:
            pending.append(failed(w, "validate", w.problem))
        else:
            work_ready.append(w)

    # 1. create the invoices that do not exist yet, in one offline batch on the agent
    await backend.begin()
    if ctx.seller is None:
        seller = getattr(backend, "seller", None)  # the synced profile (test backends have none)
        if seller is not None:
            ctx = replace(ctx, seller=await seller())
    if ctx.display is None:
        ctx = replace(ctx, display=getattr(backend, "display_number", None))
    due = ctx.today + timedelta(days=ctx.cfg.due_days)
    created: dict[str, DocumentView] = {}
    doc_of: dict[str, str] = {}  # sale id -> the doc id of its invoice
    for w in work_ready:
        if w.existing is not None:
            doc_of[w.sale.sale_id] = w.existing.doc_id
    to_create = [w for w in work_ready if w.existing is None]
    res.reused = len(work_ready) - len(to_create)
    rep.phase("create", len(to_create))
    # Issued together, the agent's commands share its store transactions (group commit).
    for i in range(0, len(to_create), CREATE_CHUNK):
        chunk = to_create[i : i + CREATE_CHUNK]
        got = await asyncio.gather(
            *(backend.create(w, ctx.today, due) for w in chunk), return_exceptions=True
        )
        for w, r in zip(chunk, got, strict=True):
            if isinstance(r, SynvoiceError):
                pending.append(failed(w, "create", f"invoice not created: {r.message}"))
            elif isinstance(r, BaseException):
                raise r
            else:
                created[r.doc_id] = r
                doc_of[w.sale.sale_id] = r.doc_id
                res.created += 1
        rep.advance("create", len(chunk))
    res.seconds["create"] = time.perf_counter() - t0

    # 2. number them (one request per 1000 in centralized mode) and push them: every
    #    number is final before any PDF shows it
    t1 = time.perf_counter()
    await backend.number_and_push(list(doc_of.values()))
    current = await backend.views(list(doc_of.values()))
    res.seconds["number"] = time.perf_counter() - t1
    deliverable: list[tuple[Work, DocumentView]] = []
    issued: set[str] = set()
    for w in work_ready:
        did = doc_of.get(w.sale.sale_id)
        if did is None:
            continue  # creation failed (already recorded)
        found = current.get(did) or created.get(did)
        if found is None:
            pending.append(failed(w, "create", "the invoice document vanished"))
            continue
        view = found
        if not view.number:
            pending.append(
                failed(
                    w,
                    "create",
                    "the invoice has no number yet (engine unreachable?); re-run to retry",
                    doc_id=view.doc_id,
                )
            )
            continue
        if view.status == "void":
            pending.append(
                failed(w, "create", f"invoice {view.number} was voided", doc_id=view.doc_id)
            )
            continue
        if view.status != "draft":
            issued.add(view.doc_id)
        deliverable.append((w, view))

    # 3. render (worker processes for large runs) + deliver (threads, one SMTP
    #    session each), recording outcomes as they come
    t2 = time.perf_counter()
    rep.phase("deliver", len(deliverable) + len(pending))
    rep.advance("deliver", len(pending))
    sender = SmtpSender(ctx.cfg)
    loop = asyncio.get_running_loop()
    io_pool = ThreadPoolExecutor(ctx.cfg.smtp_connections, thread_name_prefix="billing-io")
    procs = process_count(ctx.cfg.pdf_processes, len(deliverable))
    render_pool = process_pool(procs) if procs else io_pool

    async def one(w: Work, view: DocumentView) -> Outcome:
        job = render_job(w, view, ctx)
        try:
            prep = await loop.run_in_executor(render_pool, prepare, job)
        except Exception as exc:  # a PDF library error must not stop the other sales
            return failed(
                w,
                "render",
                f"PDF rendering failed: {exc}",
                number=view.number,
                doc_id=view.doc_id,
                total=totals(job.data.lines)[2],
            )
        return await loop.run_in_executor(io_pool, deliver, w, view, job, prep, ctx, sender)

    try:
        for fut in asyncio.as_completed([one(w, v) for w, v in deliverable]):
            pending.append(await fut)
            rep.advance("deliver")
            if len(pending) >= flush_every:
                res.outcomes += await _flush(pending, backend, link, ctx, issued)
                pending = []
    finally:
        await asyncio.to_thread(sender.close)
        io_pool.shutdown(wait=False)
        if render_pool is not io_pool:
            render_pool.shutdown(wait=False, cancel_futures=True)
    res.seconds["deliver"] = time.perf_counter() - t2

    # 4. record the rest; finish issuing (incl. processed invoices a crash left draft)
    t3 = time.perf_counter()
    res.outcomes += await _flush(pending, backend, link, ctx, issued)
    for doc_id in plan.repair_issue:
        if doc_id not in issued:
            try:
                await backend.issue(doc_id)
            except SynvoiceError:
                pass  # issued meanwhile, or voided by someone: nothing to repair
    await backend.sync()
    res.seconds["record"] = time.perf_counter() - t3
    res.seconds["total"] = time.perf_counter() - t0
    return res


async def _flush(
    outcomes: Sequence[Outcome],
    backend: InvoiceBackend,
    link: EngineLink,
    ctx: RunContext,
    issued: set[str],
) -> list[Outcome]:
    # Delivered: the invoice is final. (Concurrent calls share agent transactions.)
    todo = [
        o.doc_id
        for o in outcomes
        if o.ok and o.work.action != "create" and o.doc_id and o.doc_id not in issued
    ]
    got = await asyncio.gather(*(backend.issue(d) for d in todo), return_exceptions=True)
    for d, r in zip(todo, got, strict=True):
        if isinstance(r, BaseException) and not isinstance(r, SynvoiceError):
            raise r
        issued.add(d)  # a refusal (voided meanwhile) leaves nothing to do
    events = [
        outcome_event(o, device_id=link.device_id, user=link.user, scenario=ctx.scenario)
        for o in outcomes
    ]
    if events:
        await link.push(events)
    return list(outcomes)
