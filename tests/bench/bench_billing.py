"""6. Batch billing: invoices/s with a PDF each, e-mailed to a loopback SMTP server.

Runs ``tests.bench.billing_run.run`` (in its own process) against an engine
process and an SMTP sink process; the ceiling is fpdf2 + smtplib alone.
"""

from __future__ import annotations

from tests.bench.context import Context
from tests.bench.report import BenchResult, Figure, Goal
from tests.bench.stack import SmtpSink, Stack, run_worker

NAME = "billing"
TITLE = "6. batch billing (PDF + loopback SMTP)"


async def run(ctx: Context) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    work = ctx.dir(NAME)
    count = ctx.n(1000, 10)
    async with Stack(work) as st, SmtpSink() as smtp:
        device = await st.enroll("billing", "billing bench", connect=False)
        ctx.note(f"billing: tests.bench.billing_run.run with {count} sales")
        r = await run_worker(
            work,
            "billing",
            str(count),
            str(work / "home"),
            smtp.host,
            str(smtp.port),
            st.url,
            device.token,
        )
        ctx.note("billing: ceilings (fpdf2, smtplib to the same sink)")
        raw = await run_worker(work, "pdf-smtp", str(ctx.n(300, 5)), smtp.host, str(smtp.port))
    fig = Figure(
        "billing.invoices_per_s",
        "invoices/s (PDF + e-mail)",
        None,
        "inv/s",
        Goal("ge", 100),
        ceiling="billing.ceil.pdf_mail",
    )
    if r["status"] == "ok":
        fig.value = r["per_s"]
        fig.note = r["rate_source"]
        res.info.update(
            invoices=r["invoices"], seconds=round(r["seconds"], 3), result=r.get("result")
        )
    else:
        res.status = "not available" if r["status"] == "not available" else "error"
        res.message = fig.note = r.get("message", "")
    res.add(fig)
    res.info["mails_received"] = smtp.received
    if raw["status"] == "ok":
        pdf, mail = raw["pdf_per_s"], raw["smtp_per_s"]
        res.add(
            Figure(
                "billing.ceil.pdf_mail",
                "raw one-page fpdf2 PDF + smtplib send, one after the other",
                1 / (1 / pdf + 1 / mail),
                "inv/s",
                raw=True,
            ),
            Figure("billing.ceil.pdf", "raw fpdf2 one-page PDF", pdf, "pdf/s", raw=True),
            Figure(
                "billing.ceil.smtp",
                "raw smtplib to the loopback sink, PDF attached",
                mail,
                "mail/s",
                raw=True,
            ),
        )
    else:
        res.info["ceiling_error"] = raw.get("message")
        ctx.note(f"billing: ceilings failed: {raw.get('message')}")
    return res
