"""Billing benchmark: N sales -> N invoices with PDF, e-mailed to an SMTP server.

``run(n_sales, smtp_host, smtp_port, engine_url, token, home)`` sets up the
billing home (if new), records N approved Closed/Won sales of one month,
saves a scenario for them and processes it with the Email action, and returns
the figures. It measures the whole path a user runs: import (sales recorded
through the engine), then one ``process`` (invoice creation + numbering on the
device agent, PDF, SMTP, outcome events, final sync).

PDFs of runs of 100+ invoices are rendered in worker processes (forkserver):
like any multiprocessing code, call ``run`` from under
``if __name__ == "__main__":`` (or pass ``pdf_processes=0``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from devices.billing import service
from devices.billing.config import load_config
from devices.billing.home import BillingHome
from engine.enrollment import parse_token
from engine.schema.billing import SaleRecorded, ScenarioRules, ScenarioSaved

MONTH = date(2011, 11, 1)


def make_sales(n: int, prefix: str = "BENCH") -> list[SaleRecorded]:
    out = []
    for i in range(n):
        out.append(
            SaleRecorded.model_validate(
                {
                    "sale_id": f"{prefix}-{i:06d}",
                    "customer": {
                        "name": f"Customer {i % 97} Ltd",
                        "email": f"billing{i % 97}@customer{i % 97}.example",
                        "address": f"{i} Main Street\nSpringfield",
                    },
                    "lines": [
                        {
                            "description": "Consulting",
                            "quantity": str(1 + i % 5),
                            "unit_price": "150.00",
                            "tax_rate": "20",
                        },
                        {"description": "Licence", "quantity": "1", "unit_price": "990.00"},
                    ],
                    "stage": "Closed/Won",
                    "close_date": MONTH.replace(day=1 + i % 30).isoformat(),
                    "approved": True,
                    "title": f"Deal {i}",
                    "source": "bench",
                }
            )
        )
    return out


async def run_async(
    n_sales: int,
    smtp_host: str,
    smtp_port: int,
    engine_url: str | None,
    token: str,
    home: Path,
    *,
    connections: int = 4,
    prefix: str = "BENCH",
    pdf_processes: int = -1,
) -> dict[str, Any]:
    if engine_url:
        token = replace(parse_token(token), url=engine_url).token()
    bh = BillingHome(Path(home))
    t0 = time.perf_counter()
    await service.init_home(bh, token)
    items = make_sales(n_sales, prefix)
    cfg = load_config(
        bh.root,
        env={},
        overrides={
            "smtp_host": smtp_host,
            "smtp_port": smtp_port,
            "smtp_connections": connections,
            "pdf_processes": pdf_processes,
            "company": "Bench Ltd",
        },
    )
    async with service.session(bh) as s:
        t1 = time.perf_counter()
        rec = await service.record_sales(s, items)
        t2 = time.perf_counter()
        await service.save_scenario(
            s,
            ScenarioSaved(
                name=f"{prefix}-scenario",
                rules=ScenarioRules(
                    stages=["Closed/Won"], period=MONTH.strftime("%Y-%m"), approved=True
                ),
                default_action="email",
            ),
        )
        t3 = time.perf_counter()
        run = await service.process_scenario(s, f"{prefix}-scenario", cfg, today=date.today())
        t4 = time.perf_counter()
    assert run.result is not None
    summary = run.result.summary()
    pdfs = list(bh.pdf_dir.glob("*.pdf"))
    return {
        "sales": n_sales,
        "recorded": rec["recorded"],
        "import_seconds": round(t2 - t1, 3),
        "import_sales_per_s": round(n_sales / (t2 - t1), 1) if t2 > t1 else None,
        "process_seconds": round(t4 - t3, 3),
        "processed": summary["processed"],
        "failed": summary["failed"],
        "invoices_per_s": round(summary["processed"] / (t4 - t3), 1) if t4 > t3 else None,
        "phases": summary["seconds"],
        "setup_seconds": round(t1 - t0, 3),
        "smtp_connections": connections,
        "pdf_processes": pdf_processes,
        "pdf_files": len(pdfs),
        "pdf_bytes_avg": (sum(p.stat().st_size for p in pdfs) // len(pdfs)) if pdfs else 0,
    }


def run(
    n_sales: int,
    smtp_host: str,
    smtp_port: int,
    engine_url: str | None,
    token: str,
    home: Path,
    **kw: Any,
) -> dict[str, Any]:
    """Synchronous entry point (runs its own event loop)."""
    return asyncio.run(run_async(n_sales, smtp_host, smtp_port, engine_url, token, home, **kw))
